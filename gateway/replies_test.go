package gateway

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// Every request gets its own reply, never another's: with a worker that
// answers out of order, answers some requests twice and some only after
// they gave up, each answer that arrives in time is the one its request
// asked for, and a reply that came too late never reaches a later request
// that reuses the pooled channel.
func TestReplyMuxNeverMixesReplies(t *testing.T) {
	ns := natstest.RunServer(t)
	gwConn := natstest.Connect(t, ns)
	mux, err := newReplyMux(gwConn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mux.close)
	worker := natstest.Connect(t, ns)
	_, err = worker.Subscribe("echo", func(m *nats.Msg) {
		id := m.Header.Get("Id")
		go func() {
			n := rand.IntN(10)
			time.Sleep(time.Duration(n) * time.Millisecond)
			out := nats.NewMsg(m.Reply)
			out.Data = []byte(id)
			_ = worker.PublishMsg(out)
			if n%3 == 0 { // a second answer to the same request
				_ = worker.PublishMsg(out)
			}
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}

	const clients, each = 16, 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	timeouts := 0
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := fmt.Sprintf("%d-%d", c, i)
				msg := nats.NewMsg("echo")
				msg.Header.Set("Id", id)
				// Some requests give up before the worker answers.
				timeout := time.Second
				if i%7 == 0 {
					timeout = time.Millisecond
				}
				rep, err := mux.request(msg, nil, timeout)
				mu.Lock()
				switch {
				case err == errReplyTimeout:
					timeouts++
				case err != nil:
					wrong = append(wrong, id+": "+err.Error())
				case string(rep.Data) != id:
					wrong = append(wrong, fmt.Sprintf("request %s got the reply to %s", id, rep.Data))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(wrong) > 0 {
		t.Fatalf("%d of %d requests got a wrong answer, for example %s", len(wrong), clients*each, wrong[0])
	}
	if timeouts == 0 {
		t.Fatal("no request timed out: the late-reply case was not exercised")
	}
	mux.mu.Lock()
	left := len(mux.waiting)
	mux.mu.Unlock()
	if left != 0 {
		t.Errorf("%d requests still registered after every request returned", left)
	}
}

// A request to a subject nobody serves gets nats.ErrNoResponders at once,
// and one whose client or connection ends stops waiting.
func TestReplyMuxEnds(t *testing.T) {
	ns := natstest.RunServer(t)
	mux, err := newReplyMux(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mux.close)
	start := time.Now()
	if _, err := mux.request(nats.NewMsg("nobody.here"), nil, 30*time.Second); err != nats.ErrNoResponders {
		t.Fatalf("no subscriber: %v, want nats.ErrNoResponders", err)
	}
	if took := time.Since(start); took > notAHang {
		t.Errorf("no responders took %v: want at once", took)
	}
	worker := natstest.Connect(t, ns)
	if _, err := worker.Subscribe("silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	_ = worker.Flush()
	for _, tc := range []struct {
		name string
		want error
		end  func(client chan struct{})
	}{
		{"client leaves", ErrClientGone, func(client chan struct{}) { close(client) }},
		{"connection drops", errEpochEnded, func(chan struct{}) { mux.abandon() }},
	} {
		client := make(chan struct{})
		time.AfterFunc(20*time.Millisecond, func() { tc.end(client) })
		start := time.Now()
		if _, err := mux.request(nats.NewMsg("silent"), client, 30*time.Second); err != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if took := time.Since(start); took > notAHang {
			t.Errorf("%s: returned after %v, want at once", tc.name, took)
		}
	}
}
