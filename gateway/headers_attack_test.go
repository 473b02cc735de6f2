package gateway

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// The header maps of request routes' messages are pooled. A message that
// fails to go out (over max_payload with its headers: 413) or one that
// carries a header only its own route sets (JetStream's Nats-Msg-Id from
// an Idempotency-Key) must give its map back empty: the next request,
// on any route, carries only its own headers.
func TestPooledHeaderMapsCarryNothingToTheNextRequest(t *testing.T) {
	opts := natstest.Options(t)
	opts.MaxPayload = 8 << 10
	ns := natstest.RunServerWith(t, opts)
	gw := startGateway(t, ns, `
nats:
  streams:
    - name: ORDERS
      subjects: [orders.>]
routes:
  - {name: big, method: POST, path: /big, forward_headers: [X-Big], nats: {subject: big, pattern: publish, timeout: 5s}}
  - {name: big-request, method: GET, path: /big-request, forward_headers: [X-Big], nats: {subject: bigreq, timeout: 5s}}
  - {name: order, method: POST, path: /orders, forward_headers: [X-Secret], nats: {subject: orders.created, pattern: jetstream, timeout: 5s}}
  - {name: plain, method: GET, path: /plain, nats: {subject: plain, timeout: 5s}}
`)
	worker := natstest.Connect(t, ns)
	var mu sync.Mutex
	var leaked []string
	respond(t, worker, "plain", func(m *nats.Msg) *nats.Msg {
		for k := range m.Header {
			switch k {
			case "X-Big", "X-Secret", HeaderMsgID, HeaderQuery:
				mu.Lock()
				leaked = append(leaked, k)
				mu.Unlock()
			}
		}
		return &nats.Msg{Data: []byte("ok")}
	})
	respond(t, worker, "bigreq", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("big")} })

	huge := strings.Repeat("h", 9<<10) // the message is over max_payload with it
	for i := 0; i < 50; i++ {
		if resp, body := do(t, "POST", gw.URL+"/big", strings.NewReader("x"), http.Header{"X-Big": {huge}}); resp.StatusCode != 413 {
			t.Fatalf("publish over max_payload: %d %s, want 413", resp.StatusCode, body)
		}
		if resp, body := do(t, "GET", gw.URL+"/big-request?q=1", nil, http.Header{"X-Big": {huge}}); resp.StatusCode != 413 {
			t.Fatalf("request over max_payload: %d %s, want 413", resp.StatusCode, body)
		}
		h := http.Header{"Idempotency-Key": {"k" + strings.Repeat("i", i)}, "X-Secret": {"s"}}
		if resp, body := do(t, "POST", gw.URL+"/orders", strings.NewReader("{}"), h); resp.StatusCode != 202 {
			t.Fatalf("jetstream publish: %d %s, want 202", resp.StatusCode, body)
		}
		if resp, body := do(t, "GET", gw.URL+"/plain", nil, nil); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("plain: %d %q", resp.StatusCode, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaked) > 0 {
		t.Errorf("requests on /plain carried headers of other requests: %v", leaked)
	}
}
