package gateway

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// TestInFlightRequestsShareOneInbox holds a thousand requests in flight
// against a worker that waits, and checks through the server's monitoring
// that natsgate's connection still has a handful of subscriptions: replies
// come back on nats.go's one muxed inbox, not a subscription per request.
func TestInFlightRequestsShareOneInbox(t *testing.T) {
	const inFlight = 1000
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
nats: {name: inbox-test-gateway}
http: {max_inflight: 2000}
routes:
  - name: hold
    method: GET
    path: /hold/{id}
    nats: {subject: "hold.{id}", timeout: 30s}
`)

	var (
		mu   sync.Mutex
		held []*nats.Msg
	)
	worker := natstest.Connect(t, ns)
	sub, err := worker.QueueSubscribe("hold.*", "workers", func(m *nats.Msg) {
		mu.Lock()
		held = append(held, m)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}
	release := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range held {
			_ = m.Respond([]byte("done"))
		}
		held = nil
	}
	t.Cleanup(release)

	gatewayConn := func() *server.ConnInfo {
		t.Helper()
		cz, err := ns.Connz(&server.ConnzOptions{Subscriptions: true, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var found *server.ConnInfo
		for _, c := range cz.Conns {
			if c.Name == "inbox-test-gateway" {
				if found != nil {
					t.Fatalf("natsgate has more than one NATS connection")
				}
				found = c
			}
		}
		if found == nil {
			t.Fatal("natsgate's connection is not in connz")
		}
		return found
	}
	before := gatewayConn().NumSubs

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: inFlight}, Timeout: time.Minute}
	t.Cleanup(client.CloseIdleConnections)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("%s/hold/%d", gw.URL, i))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			if b, _ := io.ReadAll(resp.Body); resp.StatusCode == http.StatusOK && string(b) == "done" {
				ok.Add(1)
			}
		}()
	}
	natstest.Eventually(t, 30*time.Second, fmt.Sprintf("%d requests held by the worker", inFlight), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) == inFlight
	})

	during := gatewayConn()
	// One more than before at most: the muxed inbox's wildcard
	// subscription, made at the first request.
	if during.NumSubs > before+1 {
		t.Errorf("with %d requests in flight natsgate's connection has %d subscriptions (%d before): %v; want at most %d",
			inFlight, during.NumSubs, before, during.Subs, before+1)
	}
	t.Logf("%d requests in flight: %d subscriptions on natsgate's connection (%d before): %v", inFlight, during.NumSubs, before, during.Subs)

	release()
	wg.Wait()
	if n := ok.Load(); n != inFlight {
		t.Errorf("%d of %d requests answered 200 after the release", n, inFlight)
	}
}
