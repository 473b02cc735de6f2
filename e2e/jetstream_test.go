package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ordersConfig declares the ORDERS stream and a jetstream route onto it.
func ordersConfig(replicas int) (nats, body string) {
	return fmt.Sprintf(`  streams:
    - name: ORDERS
      subjects: ["orders.>"]
      replicas: %d
      duplicate_window: 2m`, replicas), `
routes:
  - name: create-order
    method: POST
    path: /orders
    nats: {subject: orders.created, pattern: jetstream, timeout: 2s}
  - name: slow
    method: GET
    path: /slow
    nats: {subject: demo.slow, pattern: request, timeout: 5s}
`
}

// postOrder POSTs one order with an Idempotency-Key.
func postOrder(client *http.Client, base, key string) exchange {
	e := do(client, "POST", base+"/orders", `{"order":"`+key+`"}`, http.Header{"Idempotency-Key": {key}, "Content-Type": {"application/json"}})
	e.key = key
	return e
}

// streamMsgIDs reads every message of stream over a connection to urls and
// counts each Nats-Msg-Id. It waits for the stream to be readable: after a
// kill a replicated stream first elects a leader.
func streamMsgIDs(t *testing.T, urls, stream string) map[string]int {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect to read %s: %v", stream, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.StreamInfo
	var s jetstream.Stream
	eventually(t, 20*time.Second, "the stream "+stream+" to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if s, err = js.Stream(ctx, stream); err != nil {
			return false
		}
		info, err = s.Info(ctx)
		return err == nil
	})
	// Message by message with retries: after a kill a replicated stream
	// may still be settling, and one failed read must not end the check.
	ids := make(map[string]int, info.State.Msgs)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		var msg *jetstream.RawStreamMsg
		eventually(t, 10*time.Second, fmt.Sprintf("%s message %d of %d", stream, seq, info.State.LastSeq), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			msg, err = s.GetMsg(ctx, seq)
			return err == nil
		})
		ids[msg.Header.Get(nats.MsgIdHdr)]++
	}
	return ids
}

// assertStoredOnce checks that every key acknowledged with 202 is in the
// stream exactly once, and that no key is there twice.
func assertStoredOnce(t *testing.T, acked map[string]bool, ids map[string]int) {
	t.Helper()
	for key := range acked {
		if ids[key] != 1 {
			t.Errorf("key %s got a 202 but is in the stream %d times", key, ids[key])
		}
	}
	for key, n := range ids {
		if n > 1 {
			t.Errorf("key %s is in the stream %d times", key, n)
		}
	}
}

// Fault 3: POSTs with distinct Idempotency-Keys while the nats-server is
// killed and restarted; clients retry on 5xx with the same key.
func TestJetStreamNoLossAcrossRestart(t *testing.T) {
	ns := startNATS(t, natsOptions{jetstream: true})
	natsExtra, body := ordersConfig(1)
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: natsExtra, Body: body})
	client := newClient(t)

	const clients, perClient = 4, 60
	var (
		mu        sync.Mutex
		acked     = map[string]bool{}
		attempts  int
		failures  = map[int]int{}
		retryGave []string
	)
	l := startLoad(clients, perClient, 60*time.Second, func(c, i int) exchange {
		key := fmt.Sprintf("order-%d-%d", c, i)
		// Retry the same key on 5xx or no answer, like a careful client.
		var e exchange
		for try := 0; try < 400; try++ {
			e = postOrder(client, g.URL, key)
			mu.Lock()
			attempts++
			if e.status != 202 {
				failures[e.status]++
			}
			mu.Unlock()
			if e.status == 202 {
				mu.Lock()
				acked[key] = true
				mu.Unlock()
				return e
			}
			if e.err == nil && e.status < 500 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		retryGave = append(retryGave, e.String())
		mu.Unlock()
		return e
	})
	defer l.Stop()
	eventually(t, 10*time.Second, "a third of the orders", func() bool { return l.Count(202) >= clients*perClient/3 })
	ns.Kill()
	time.Sleep(2500 * time.Millisecond) // the outage: clients keep retrying
	ns.Start()
	results, finished := l.Wait(40 * time.Second)
	if !finished {
		t.Errorf("the clients did not finish within 40s")
	}
	g.Kill() // nothing more is published; read what is stored

	mu.Lock()
	defer mu.Unlock()
	if len(retryGave) > 0 {
		t.Errorf("%d keys never got a 202; first: %s", len(retryGave), retryGave[0])
	}
	if len(results) != clients*perClient || len(acked) != clients*perClient {
		t.Errorf("%d keys sent, %d acknowledged; want %d each", len(results), len(acked), clients*perClient)
	}
	if len(failures) == 0 {
		t.Error("no POST failed: the restart did not happen mid-run")
	}
	for status := range failures {
		if status != 0 && status != 503 && status != 504 {
			t.Errorf("a failed POST got %d; an outage should give 503 or 504", status)
		}
	}
	ids := streamMsgIDs(t, ns.URL(), "ORDERS")
	assertStoredOnce(t, acked, ids)
	t.Logf("%d keys, %d attempts, failures by status %v, %d messages stored", len(acked), attempts, failures, len(ids))
}
