package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// manyRequests is well past any breaker's default min_requests (20) and
// past the old five-in-a-row rule, so that a breaker that counts what it
// must not is sure to open.
const manyRequests = 40

// Fault 4: what a client causes never opens a NATS breaker. A path
// parameter value nobody serves gets no responders, and a message over the
// stream's max_msg_size is refused for itself; after many of each, the
// served values and ordinary messages still go through.
func TestClientCausedFailuresKeepBreakersClosed(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: shard
    method: GET
    path: /shard/{region}
    nats: {subject: "shard.{region}"}
  - name: put-event
    method: POST
    path: /events
    nats: {subject: events.in, pattern: jetstream}
`)
	nc := natstest.Connect(t, ns)
	respond(t, nc, "shard.eu", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("eu")} })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, MaxMsgSize: 1024}); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < manyRequests; i++ {
		resp, body := do(t, "GET", gw.URL+"/shard/zz", nil, nil)
		checkProblem(t, resp, body, 503, "shard")
		resp, body = do(t, "POST", gw.URL+"/events", strings.NewReader(strings.Repeat("x", 2048)), nil)
		p := checkProblem(t, resp, body, 413, "put-event")
		if strings.Contains(fmt.Sprint(p["detail"]), "exceeds") {
			t.Fatalf("the 413's detail passes the server's text on: %v", p["detail"])
		}
	}
	if resp, body := do(t, "GET", gw.URL+"/shard/eu", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("a served region after %d unserved ones: %d %s, want 200", manyRequests, resp.StatusCode, body)
	}
	if resp, body := do(t, "POST", gw.URL+"/events", strings.NewReader("small"), nil); resp.StatusCode != 202 {
		t.Fatalf("a small event after %d oversized ones: %d %s, want 202", manyRequests, resp.StatusCode, body)
	}
	for _, route := range []string{"shard", "put-event"} {
		if got := testutil.ToFloat64(gw.metrics.BreakerState.WithLabelValues(route, metrics.BackendNATS)); got != breakerClosed {
			t.Errorf("natsgate_breaker_state{route=%q} = %v, want 0 (closed)", route, got)
		}
	}
}

// Fault 5: a full stream is a 503 with Retry-After that a client can act
// on, with a short reason of natsgate's own; it never opens the breaker,
// so the route stores again as soon as the stream has room.
func TestFullStreamIsRetryable(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: put-order
    method: POST
    path: /orders
    nats: {subject: orders.new, pattern: jetstream}
`)
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"},
		MaxMsgs: 3, Discard: jetstream.DiscardNew})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if resp, body := do(t, "POST", gw.URL+"/orders", strings.NewReader("{}"), nil); resp.StatusCode != 202 {
			t.Fatalf("order %d into an empty stream: %d %s", i, resp.StatusCode, body)
		}
	}
	for i := 0; i < manyRequests; i++ {
		resp, body := do(t, "POST", gw.URL+"/orders", strings.NewReader("{}"), nil)
		p := checkProblem(t, resp, body, 503, "put-order")
		if p["kind"] != string(KindStreamFull) || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("full stream: kind %v, Retry-After %q; want stream_full with Retry-After", p["kind"], resp.Header.Get("Retry-After"))
		}
		if d := fmt.Sprint(p["detail"]); strings.Contains(d, "maximum messages") {
			t.Fatalf("the detail passes the server's text on: %q", d)
		}
	}
	if n := testutil.ToFloat64(gw.metrics.NATSErrors.WithLabelValues("put-order", metrics.KindRefused)); n != manyRequests {
		t.Errorf("natsgate_nats_errors_total{kind=refused} = %v, want %d", n, manyRequests)
	}
	if err := stream.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if resp, body := do(t, "POST", gw.URL+"/orders", strings.NewReader("{}"), nil); resp.StatusCode != 202 {
		t.Fatalf("after the purge: %d %s, want 202 at once", resp.StatusCode, body)
	}
}

// The breaker opens on evidence, a share of failures over enough requests,
// not on a few in a row: a worker failing one request in five never opens
// it, one failing them all does.
func TestBreakerOpensOnFailureRatio(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: flaky
    method: GET
    path: /flaky/{n}
    nats: {subject: "flaky.{n}"}
    breaker: {min_requests: 10, failure_ratio: 0.5, window: 1m, open_for: 1m}
`)
	nc := natstest.Connect(t, ns)
	respond(t, nc, "flaky.*", func(m *nats.Msg) *nats.Msg {
		out := nats.NewMsg("")
		if m.Subject == "flaky.bad" {
			out.Header.Set(HeaderStatus, "500")
		}
		return out
	})
	// 1 in 5 failing, with five failures in a row at the start: never open.
	for i := 0; i < 5; i++ {
		do(t, "GET", gw.URL+"/flaky/bad", nil, nil)
	}
	for i := 0; i < 30; i++ {
		if resp, body := do(t, "GET", gw.URL+"/flaky/ok", nil, nil); resp.StatusCode != 200 {
			t.Fatalf("request %d with 1 in 7 failing: %d %s, want 200", i, resp.StatusCode, body)
		}
	}
	// Now every request fails: the share passes one half and it opens.
	opened := false
	for i := 0; i < 60 && !opened; i++ {
		resp, _ := do(t, "GET", gw.URL+"/flaky/bad", nil, nil)
		opened = resp.StatusCode == 503
	}
	if !opened {
		t.Fatal("the breaker never opened with every request failing")
	}
	if resp, body := do(t, "GET", gw.URL+"/flaky/ok", nil, nil); resp.StatusCode != 503 || !strings.Contains(body, "breaker_open") {
		t.Fatalf("open breaker: %d %s", resp.StatusCode, body)
	}
}

// Fault 7, first half: a NATS failure that fell back to the upstream is
// still a NATS failure, counted where the NATS call failed.
func TestFallbackCountsTheNATSError(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "nats", "    fallback: true\n"))
	nc := natstest.Connect(t, ns)
	respond(t, nc, "users.*.get", func(m *nats.Msg) *nats.Msg {
		time.Sleep(600 * time.Millisecond) // past the route's 300ms timeout
		return &nats.Msg{Data: []byte("late")}
	})
	for i := 0; i < 2; i++ {
		if resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil); resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "legacy" {
			t.Fatalf("GET after a timeout: %d %s %s, want the legacy answer", resp.StatusCode, resp.Header.Get(HeaderBackend), body)
		}
	}
	if n := testutil.ToFloat64(gw.metrics.NATSErrors.WithLabelValues("get-user", metrics.KindTimeout)); n != 2 {
		t.Errorf("natsgate_nats_errors_total{kind=timeout} = %v after two fallbacks, want 2", n)
	}
}

// Fault 7, second half: a route that a reload adds on an unchanged
// upstream has its natsgate_breaker_state series from the start, and it
// follows the shared breaker.
func TestReloadedRouteOnSharedUpstreamHasBreakerState(t *testing.T) {
	ns := natstest.RunServer(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer upstream.Close()
	one := fmt.Sprintf(`
upstreams:
  legacy: {url: %q}
routes:
  - name: a
    method: GET
    path: /a
    upstream: legacy
`, upstream.URL)
	two := one + `
  - name: b
    method: GET
    path: /b
    upstream: legacy
`
	gw := startGateway(t, ns, one)
	cfg, err := routes.Parse("test.yaml", []byte(two), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.NATS.URL = ns.ClientURL()
	table, err := routes.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Reload(table); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(gw.metrics.BreakerState, "natsgate_breaker_state"); n != 2 {
		t.Fatalf("natsgate_breaker_state has %d series after the reload, want 2 (a and b on legacy)", n)
	}
	// Open the shared breaker by its transport failing: both series say so.
	upstream.Close()
	for i := 0; i < manyRequests; i++ {
		do(t, "GET", gw.URL+"/b", nil, nil)
	}
	for _, route := range []string{"a", "b"} {
		if got := testutil.ToFloat64(gw.metrics.BreakerState.WithLabelValues(route, "legacy")); got != breakerOpen {
			t.Errorf("natsgate_breaker_state{route=%q,target=legacy} = %v, want 2 (open)", route, got)
		}
	}
}

// Fault 1, in process: a NATS breaker that timeouts opened before the
// connection dropped starts closed again once natsgate reconnects, so the
// route serves as soon as a worker is back, not after open_for.
func TestNATSBreakerClosesOnReconnect(t *testing.T) {
	opts := natstest.Options(t)
	ns := natstest.RunServerWith(t, opts)
	gw := startGateway(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 200ms}
    breaker: {min_requests: 2, failure_ratio: 1, open_for: 1m}
`)
	slow := natstest.Connect(t, ns, nats.MaxReconnects(0))
	respond(t, slow, "users.*.get", func(m *nats.Msg) *nats.Msg {
		time.Sleep(400 * time.Millisecond)
		return &nats.Msg{Data: []byte("late")}
	})
	for i := 0; i < 2; i++ {
		resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil)
		checkProblem(t, resp, body, 504, "get-user")
	}
	resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil)
	if p := checkProblem(t, resp, body, 503, "get-user"); p["kind"] != "breaker_open" {
		t.Fatalf("after two timeouts: kind %v, want breaker_open", p["kind"])
	}

	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	natstest.Eventually(t, 15*time.Second, "the gateway to see the connection drop", func() bool { return !gw.Conn().IsConnected() })
	again := natstest.Options(t)
	again.Port = port
	ns2 := natstest.RunServerWith(t, again)
	// natsgate_nats_connected turns 1 once the gateway has taken the new
	// connection into use; the connection itself says so a little before.
	natstest.Eventually(t, 10*time.Second, "the gateway to reconnect", func() bool { return testutil.ToFloat64(gw.metrics.NATSConnected) == 1 })
	respond(t, natstest.Connect(t, ns2), "users.*.get", func(*nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("ok")} })
	if resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("with NATS and a worker back: %d %s, want 200 (the breaker starts closed again)", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(gw.metrics.BreakerState.WithLabelValues("get-user", metrics.BackendNATS)); got != breakerClosed {
		t.Errorf("natsgate_breaker_state = %v, want 0 (closed)", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = gw.Shutdown(ctx)
}
