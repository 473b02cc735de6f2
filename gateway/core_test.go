package gateway

// Integration tests of the status table in docs/operations.md: every row is shown
// over the real HTTP listener against a real nats-server.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/natsgate/natsgate/internal/natstest"
)

// notAHang bounds answers that must come "at once": far below the 30s
// timeout of the routes it is checked against, far above the scheduling
// noise of a loaded 2-core machine running tests with -race.
const notAHang = 10 * time.Second

// checkProblem asserts an RFC 9457 problem answer with the status, naming
// the route (nil for "route": null) and the request id the response
// carries in X-Request-Id. It returns the decoded body.
func checkProblem(t *testing.T, resp *http.Response, body string, status int, route any) map[string]any {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("problem body %q: %v", body, err)
	}
	if p["status"] != float64(status) {
		t.Errorf("problem status %v, want %d", p["status"], status)
	}
	if r, ok := p["route"]; !ok || r != route {
		t.Errorf("problem route %v (present %v), want %v", r, ok, route)
	}
	id := resp.Header.Get("X-Request-Id")
	if id == "" || p["request_id"] != id {
		t.Errorf("problem request_id %v, X-Request-Id %q: want both, equal", p["request_id"], id)
	}
	return p
}

// elapsed runs fn and returns how long it took.
func elapsed(fn func()) time.Duration {
	t0 := time.Now()
	fn()
	return time.Since(t0)
}

// recorder subscribes to every subject and keeps what applications
// publish (not the JetStream API, not replies to inboxes), so a test can
// assert that nothing it did not expect was published.
type recorder struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func record(t *testing.T, nc *nats.Conn) *recorder {
	t.Helper()
	rec := &recorder{}
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		// Inboxes, JetStream's API and the fleet's stats are not a route's.
		if strings.HasPrefix(m.Subject, "_INBOX.") || strings.HasPrefix(m.Subject, "$") || strings.HasPrefix(m.Subject, "natsgate.fleet.") {
			return
		}
		rec.mu.Lock()
		rec.msgs = append(rec.msgs, m)
		rec.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return rec
}

func (r *recorder) subjects() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.msgs))
	for i, m := range r.msgs {
		out[i] = m.Subject
	}
	return out
}

func (r *recorder) has(subject string) bool {
	for _, s := range r.subjects() {
		if s == subject {
			return true
		}
	}
	return false
}

func TestReplyStatus(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: echo
    method: POST
    path: /echo/{status}
    nats: {subject: "echo.{status}", timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, "echo.*", func(m *nats.Msg) *nats.Msg {
		out := &nats.Msg{Data: append([]byte("got "), m.Data...), Header: nats.Header{"Content-Type": {"text/plain"}}}
		if s := m.Header.Get("Http-Param-status"); s != "default" {
			out.Header.Set("Http-Status", s)
		}
		return out
	})
	for _, tt := range []struct {
		status string
		want   int
	}{{"default", 200}, {"200", 200}, {"201", 201}, {"404", 404}, {"503", 503}} {
		t.Run(tt.status, func(t *testing.T) {
			resp, body := do(t, "POST", gw.URL+"/echo/"+tt.status, strings.NewReader("ping"), nil)
			if resp.StatusCode != tt.want || body != "got ping" {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.want, "got ping")
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain" {
				t.Errorf("Content-Type %q, want the worker's text/plain", ct)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
		})
	}
	// A status a worker may not set is the gateway's 502, with a problem.
	t.Run("invalid Http-Status", func(t *testing.T) {
		resp, body := do(t, "POST", gw.URL+"/echo/99", nil, nil)
		checkProblem(t, resp, body, 502, "echo")
	})
}

// A worker written with nats.go micro reports errors with req.Error: the
// code becomes the status, the description the problem's detail.
func TestMicroErrorCode(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 5s}
`)
	nc := natstest.Connect(t, ns)
	svc, err := micro.AddService(nc, micro.Config{
		Name:    "users",
		Version: "1.0.0",
		Endpoint: &micro.EndpointConfig{
			Subject: "users.*.get",
			Handler: micro.HandlerFunc(func(req micro.Request) {
				switch id := req.Headers().Get("Http-Param-id"); id {
				case "missing":
					_ = req.Error("404", "no user missing", nil)
				case "conflict":
					_ = req.Error("409", "user is locked", nil)
				case "broken":
					_ = req.Error("500", "database is down", nil)
				case "redirect":
					_ = req.Error("302", "moved", nil)
				case "text":
					_ = req.Error("E_USER", "odd code", nil)
				default:
					_ = req.Respond([]byte(`{"id":"` + id + `"}`))
				}
			}),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	// The service subscribed on its own connection: make sure the server
	// has the subscription before the gateway's connection sends to it.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	resp, body := do(t, "GET", gw.URL+"/users/7", nil, nil)
	if resp.StatusCode != 200 || body != `{"id":"7"}` {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	for _, tt := range []struct {
		id     string
		status int
		detail string
	}{
		{"missing", 404, "no user missing"},
		{"conflict", 409, "user is locked"},
		{"broken", 500, "database is down"},
		{"redirect", 502, "moved"},
		{"text", 502, "odd code"},
	} {
		t.Run(tt.id, func(t *testing.T) {
			resp, body := do(t, "GET", gw.URL+"/users/"+tt.id, nil, http.Header{"X-Request-Id": {"client-" + tt.id}})
			p := checkProblem(t, resp, body, tt.status, "get-user")
			if d, _ := p["detail"].(string); !strings.Contains(d, tt.detail) {
				t.Errorf("detail %q, want it to hold %q", d, tt.detail)
			}
			if got := resp.Header.Get("X-Request-Id"); got != "client-"+tt.id {
				t.Errorf("X-Request-Id %q, want the client's", got)
			}
		})
	}
}

func TestNoResponders(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-report
    method: GET
    path: /reports
    nats: {subject: reports.get, timeout: 30s}
`)
	var resp *http.Response
	var body string
	took := elapsed(func() { resp, body = do(t, "GET", gw.URL+"/reports", nil, nil) })
	p := checkProblem(t, resp, body, 503, "get-report")
	if p["kind"] != "no_responders" {
		t.Errorf("kind %v, want no_responders", p["kind"])
	}
	if took > notAHang {
		t.Errorf("answered after %v: no responders must be answered at once, not near the 30s timeout", took)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After on a 503")
	}
}

func TestTimeout(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: slow
    method: GET
    path: /slow
    nats: {subject: demo.slow, timeout: 300ms}
`)
	worker := natstest.Connect(t, ns)
	got := make(chan struct{}, 1)
	respond(t, worker, "demo.slow", func(*nats.Msg) *nats.Msg {
		got <- struct{}{}
		return nil // never answers
	})
	var resp *http.Response
	var body string
	took := elapsed(func() { resp, body = do(t, "GET", gw.URL+"/slow", nil, nil) })
	p := checkProblem(t, resp, body, 504, "slow")
	if p["kind"] != "timeout" {
		t.Errorf("kind %v, want timeout", p["kind"])
	}
	select {
	case <-got:
	default:
		t.Error("the worker never saw the request")
	}
	if took > 5*time.Second {
		t.Errorf("a 300ms route timeout answered after %v", took)
	}
}

// With the NATS server gone the gateway answers 503 at once on every
// pattern: never a hang until the timeout, never 202 for a publish.
func TestNATSDown(t *testing.T) {
	opts := natstest.Options(t)
	ns := natstest.RunServerWith(t, opts)
	gw := startGateway(t, ns, `
nats:
  streams:
    - name: ORDERS
      subjects: [orders.>]
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 30s}
  - name: post-event
    method: POST
    path: /events
    nats: {subject: events.created, pattern: publish, timeout: 30s}
  - name: create-order
    method: POST
    path: /orders
    nats: {subject: orders.created, pattern: jetstream, timeout: 30s}
`)
	worker := natstest.Connect(t, ns, nats.MaxReconnects(0))
	holding := make(chan struct{}, 1)
	respond(t, worker, "users.*.get", func(m *nats.Msg) *nats.Msg {
		if m.Header.Get("Http-Param-id") == "hold" {
			holding <- struct{}{}
			return nil // the outage comes first
		}
		return &nats.Msg{Data: []byte("ok")}
	})
	if resp, _ := do(t, "GET", gw.URL+"/users/1", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("before the outage: %d", resp.StatusCode)
	}

	// A request in flight when the connection drops is answered at once:
	// its reply can no longer arrive.
	type answer struct {
		resp *http.Response
		body string
		took time.Duration
	}
	inFlight := make(chan answer, 1)
	go func() {
		t0 := time.Now()
		resp, err := http.Get(gw.URL + "/users/hold")
		if err != nil {
			inFlight <- answer{took: time.Since(t0)}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inFlight <- answer{resp, string(b), time.Since(t0)}
	}()
	select {
	case <-holding:
	case <-time.After(15 * time.Second):
		t.Fatal("the held request never reached the worker")
	}
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	t.Run("in flight", func(t *testing.T) {
		a := <-inFlight
		if a.resp == nil {
			t.Fatal("the in-flight request failed at the HTTP level")
		}
		p := checkProblem(t, a.resp, a.body, 503, "get-user")
		if p["kind"] != "nats_disconnected" {
			t.Errorf("kind %v, want nats_disconnected", p["kind"])
		}
		if a.took > notAHang {
			t.Errorf("answered after %v: want at once, not at the 30s timeout", a.took)
		}
	})
	natstest.Eventually(t, 15*time.Second, "the gateway to see the connection drop", func() bool {
		resp, _ := do(t, "GET", gw.AdminURL+"/readyz", nil, nil)
		return resp.StatusCode == 503
	})

	for _, tt := range []struct{ name, method, path, body string }{
		{"request", "GET", "/users/1", ""},
		{"publish", "POST", "/events", `{"n":1}`},
		{"jetstream", "POST", "/orders", `{"n":1}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var resp *http.Response
			var body string
			took := elapsed(func() { resp, body = do(t, tt.method, gw.URL+tt.path, strings.NewReader(tt.body), nil) })
			p := checkProblem(t, resp, body, 503, map[string]string{"request": "get-user", "publish": "post-event", "jetstream": "create-order"}[tt.name])
			if p["kind"] != "nats_disconnected" {
				t.Errorf("kind %v, want nats_disconnected", p["kind"])
			}
			if took > notAHang {
				t.Errorf("answered after %v with NATS down: want at once", took)
			}
		})
	}

	// The server comes back on the same address and store: the gateway
	// reconnects by itself and serves every pattern again.
	again := natstest.Options(t)
	again.Port = port
	again.StoreDir = opts.StoreDir
	ns2 := natstest.RunServerWith(t, again)
	natstest.Eventually(t, 10*time.Second, "the gateway to reconnect", func() bool {
		resp, _ := do(t, "GET", gw.AdminURL+"/readyz", nil, nil)
		return resp.StatusCode == 200
	})
	respond(t, natstest.Connect(t, ns2), "users.*.get", func(*nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("ok")} })
	for _, tt := range []struct {
		method, path string
		want         int
	}{{"GET", "/users/1", 200}, {"POST", "/events", 202}, {"POST", "/orders", 202}} {
		if resp, body := do(t, tt.method, gw.URL+tt.path, strings.NewReader("{}"), nil); resp.StatusCode != tt.want {
			t.Errorf("after reconnecting, %s %s: %d %s, want %d", tt.method, tt.path, resp.StatusCode, body, tt.want)
		}
	}
	// Shut down while the server is up, so the drain is quick; the
	// cleanup would otherwise race the server's own shutdown.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestPublish(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: post-event
    method: POST
    path: /events/{kind}
    nats: {subject: "events.{kind}", pattern: publish}
`)
	nc := natstest.Connect(t, ns)
	sub, err := nc.SubscribeSync("events.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	resp, body := do(t, "POST", gw.URL+"/events/signup", strings.NewReader(`{"user":7}`), http.Header{"Content-Type": {"application/json"}})
	if resp.StatusCode != 202 {
		t.Fatalf("got %d %s, want 202", resp.StatusCode, body)
	}
	var ack map[string]any
	if err := json.Unmarshal([]byte(body), &ack); err != nil || ack["subject"] != "events.signup" {
		t.Errorf("body %s, want {\"subject\":\"events.signup\"}", body)
	}
	m, err := sub.NextMsg(15 * time.Second)
	if err != nil {
		t.Fatalf("the subscriber got nothing: %v", err)
	}
	if m.Subject != "events.signup" || string(m.Data) != `{"user":7}` || m.Header.Get("Http-Route") != "post-event" {
		t.Errorf("got %s %q %v", m.Subject, m.Data, m.Header)
	}
}

func TestJetStream(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
nats:
  streams:
    - name: ORDERS
      subjects: [orders.>]
routes:
  - name: create-order
    method: POST
    path: /orders
    nats: {subject: orders.created, pattern: jetstream}
  - name: create-invoice
    method: POST
    path: /invoices
    nats: {subject: invoices.created, pattern: jetstream, timeout: 30s}
`)
	type pubAck struct {
		Stream    string `json:"stream"`
		Seq       uint64 `json:"seq"`
		Duplicate *bool  `json:"duplicate"`
	}
	post := func(key string) pubAck {
		t.Helper()
		h := http.Header{}
		if key != "" {
			h.Set("Idempotency-Key", key)
		}
		resp, body := do(t, "POST", gw.URL+"/orders", strings.NewReader(`{"item":"book"}`), h)
		if resp.StatusCode != 202 {
			t.Fatalf("got %d %s, want 202", resp.StatusCode, body)
		}
		var a pubAck
		if err := json.Unmarshal([]byte(body), &a); err != nil || a.Duplicate == nil {
			t.Fatalf("body %s: want {stream, seq, duplicate} (%v)", body, err)
		}
		return a
	}
	first := post("order-1")
	if first.Stream != "ORDERS" || first.Seq != 1 || *first.Duplicate {
		t.Errorf("first POST: %+v, want ORDERS seq 1 not duplicate", first)
	}
	again := post("order-1")
	if again.Stream != "ORDERS" || again.Seq != 1 || !*again.Duplicate {
		t.Errorf("retried POST: %+v, want ORDERS seq 1 duplicate", again)
	}
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages after a retried POST, want 1", info.State.Msgs)
	}
	stored, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(stored.Data) != `{"item":"book"}` || stored.Header.Get("Nats-Msg-Id") != "order-1" {
		t.Errorf("stored %q with %v", stored.Data, stored.Header)
	}
	if other := post(""); other.Seq != 2 || *other.Duplicate {
		t.Errorf("POST without a key: %+v, want seq 2", other)
	}

	t.Run("no stream", func(t *testing.T) {
		var resp *http.Response
		var body string
		took := elapsed(func() { resp, body = do(t, "POST", gw.URL+"/invoices", strings.NewReader("{}"), nil) })
		p := checkProblem(t, resp, body, 503, "create-invoice")
		if p["kind"] != "no_stream" {
			t.Errorf("kind %v, want no_stream", p["kind"])
		}
		if took > notAHang {
			t.Errorf("answered after %v, want at once", took)
		}
	})

	t.Run("Idempotency-Key too long", func(t *testing.T) {
		resp, body := do(t, "POST", gw.URL+"/orders", strings.NewReader("{}"), http.Header{"Idempotency-Key": {strings.Repeat("k", 300)}})
		checkProblem(t, resp, body, 400, "create-order")
	})
}

// blockingBody is a request body that sends a few bytes and then nothing
// until the test ends: a gateway that waits for the whole body hangs.
func blockingBody(t *testing.T) io.Reader {
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write([]byte("0123456789")) }()
	t.Cleanup(func() { _ = pw.Close() })
	return pr
}

func TestBodyTooLarge(t *testing.T) {
	opts := natstest.Options(t)
	opts.MaxPayload = 16 << 10
	ns := natstest.RunServerWith(t, opts)
	gw := startGateway(t, ns, `
defaults:
  max_body: 64KiB
routes:
  - name: upload
    method: POST
    path: /upload
    max_body: 1KiB
    nats: {subject: uploads.new, pattern: publish}
  - name: big-upload
    method: POST
    path: /big
    nats: {subject: uploads.big, pattern: publish}
`)
	rec := record(t, natstest.Connect(t, ns))
	big := bytes.Repeat([]byte("x"), 2<<10)

	t.Run("Content-Length over max_body", func(t *testing.T) {
		resp, body := do(t, "POST", gw.URL+"/upload", bytes.NewReader(big), nil)
		checkProblem(t, resp, body, 413, "upload")
	})
	t.Run("chunked over max_body", func(t *testing.T) {
		req, err := http.NewRequest("POST", gw.URL+"/upload", io.MultiReader(bytes.NewReader(big)))
		if err != nil {
			t.Fatal(err)
		}
		if req.ContentLength != 0 && req.ContentLength != -1 {
			t.Fatalf("the request would not be chunked (length %d)", req.ContentLength)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		checkProblem(t, resp, string(body), 413, "upload")
	})
	t.Run("declared length refused before the body is read", func(t *testing.T) {
		req, err := http.NewRequest("POST", gw.URL+"/upload", blockingBody(t))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 10 << 20
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatalf("no answer while the body is still coming: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		checkProblem(t, resp, string(body), 413, "upload")
	})
	t.Run("over the server's max_payload", func(t *testing.T) {
		resp, body := do(t, "POST", gw.URL+"/big", bytes.NewReader(bytes.Repeat([]byte("y"), 32<<10)), nil)
		checkProblem(t, resp, body, 413, "big-upload")
	})
	t.Run("within the limits", func(t *testing.T) {
		resp, body := do(t, "POST", gw.URL+"/upload", bytes.NewReader(big[:1<<10]), nil)
		if resp.StatusCode != 202 {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})
	// A body that fits in max_payload with the protocol's headers is sent.
	t.Run("just under the server's max_payload", func(t *testing.T) {
		resp, body := do(t, "POST", gw.URL+"/big", bytes.NewReader(bytes.Repeat([]byte("z"), 16<<10-512)), nil)
		if resp.StatusCode != 202 {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})
	natstest.Eventually(t, 15*time.Second, "the accepted uploads to arrive", func() bool { return rec.has("uploads.new") && rec.has("uploads.big") })
	if got := rec.subjects(); len(got) != 2 {
		t.Errorf("published %v, want only the two accepted uploads", got)
	}
}

// rawRequest sends a request whose target is written as it is, so that a
// test can send bytes (">", "*") a client library would escape.
func rawRequest(t *testing.T, method, base, target string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = target
	return send(t, req)
}

// A path parameter can never add a token or a wildcard to a subject:
// whatever a client sends, raw or percent-encoded, it is refused with 400
// and nothing is published.
func TestBadPathParams(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 5s}
  - name: get-profile
    method: GET
    path: /users/{id}/profile
    nats: {subject: "users.{id}.profile", timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, "users.>", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte(m.Subject + " " + m.Header.Get("Http-Param-id"))}
	})
	rec := record(t, natstest.Connect(t, ns))

	for _, tt := range []struct {
		name, target string
		route        any
		status       int
	}{
		{"dot", "/users/a.b", "get-user", 400},
		{"encoded dot", "/users/a%2Eb", "get-user", 400},
		{"encoded dot lower case", "/users/a%2eb", "get-user", 400},
		{"star", "/users/*", "get-user", 400},
		{"encoded star", "/users/%2A", "get-user", 400},
		{"greater-than", "/users/>", "get-user", 400},
		{"encoded greater-than", "/users/%3E", "get-user", 400},
		{"encoded space", "/users/a%20b", "get-user", 400},
		{"encoded tab", "/users/a%09b", "get-user", 400},
		{"encoded CR LF", "/users/a%0D%0APUB%20x%201", "get-user", 400},
		{"encoded NUL", "/users/%00", "get-user", 400},
		{"invalid UTF-8", "/users/%FF", "get-user", 400},
		{"empty", "/users//profile", "get-profile", 400},
		{"dot in a later segment's param", "/users/x.y/profile", "get-profile", 400},
		{"subject too long", "/users/" + strings.Repeat("a", 5<<10), "get-user", 414},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawRequest(t, "GET", gw.URL, tt.target)
			p := checkProblem(t, resp, body, tt.status, tt.route)
			if tt.status == 400 && p["kind"] != "bad_param" {
				t.Errorf("kind %v, want bad_param", p["kind"])
			}
		})
	}

	// An empty last segment matches no route (chi's {id} needs at least one
	// byte): 404, and nothing published either.
	resp, body := rawRequest(t, "GET", gw.URL, "/users/")
	checkProblem(t, resp, body, 404, nil)

	// A literal percent sign is decoded once: %25 is "%", %2525 is "%25".
	for _, tt := range []struct{ target, want string }{
		{"/users/%25", "users.%.get %"},
		{"/users/%2525", "users.%25.get %25"},
		{"/users/zo%C3%AB", "users.zoë.get zoë"},
		{"/users/a%2Fb", "users.a/b.get a/b"},
	} {
		t.Run(tt.target, func(t *testing.T) {
			resp, body := rawRequest(t, "GET", gw.URL, tt.target)
			if resp.StatusCode != 200 || body != tt.want {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, tt.want)
			}
		})
	}

	// The good requests above are the only messages published.
	want := []string{"users.%.get", "users.%25.get", "users.zoë.get", "users.a/b.get"}
	natstest.Eventually(t, 15*time.Second, "the good requests to be recorded", func() bool { return len(rec.subjects()) >= len(want) })
	if got := rec.subjects(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("published %q, want only %q", got, want)
	}
}

func TestUnrouted(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get"}
  - name: put-user
    method: PUT
    path: /users/{id}
    nats: {subject: "users.{id}.put"}
`)
	t.Run("unknown path", func(t *testing.T) {
		resp, body := do(t, "GET", gw.URL+"/nowhere", nil, nil)
		checkProblem(t, resp, body, 404, nil)
		if !strings.Contains(body, `"route":null`) {
			t.Errorf("body %s lacks \"route\":null", body)
		}
	})
	t.Run("wrong method", func(t *testing.T) {
		resp, body := do(t, "DELETE", gw.URL+"/users/7", nil, http.Header{"X-Request-Id": {"abc-123"}})
		checkProblem(t, resp, body, 405, nil)
		allow := strings.Split(resp.Header.Get("Allow"), ", ")
		if strings.Join(allow, ",") != "GET,PUT" {
			t.Errorf("Allow %q, want GET, PUT", resp.Header.Get("Allow"))
		}
		if resp.Header.Get("X-Request-Id") != "abc-123" {
			t.Errorf("X-Request-Id %q, want the client's abc-123", resp.Header.Get("X-Request-Id"))
		}
	})
}

// X-Request-Id: the client's is echoed when it is usable, otherwise the
// gateway makes one; either way the problem body names the same id.
func TestRequestIDEcho(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get"}
`)
	for _, tt := range []struct {
		name, id string
		echoed   bool
	}{
		{"usable", "req-42", true},
		{"with a space", "a b", false},
		{"too long", strings.Repeat("r", 200), false},
		{"none", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.id != "" {
				h.Set("X-Request-Id", tt.id)
			}
			for _, target := range []struct {
				path  string
				code  int
				route any
			}{{"/users/a.b", 400, "get-user"}, {"/nowhere", 404, nil}} {
				resp, body := do(t, "GET", gw.URL+target.path, nil, h)
				checkProblem(t, resp, body, target.code, target.route)
				got := resp.Header.Get("X-Request-Id")
				if (got == tt.id) != tt.echoed || got == "" {
					t.Errorf("%s: X-Request-Id %q for a client id %q (echo wanted: %v)", target.path, got, tt.id, tt.echoed)
				}
			}
		})
	}
}

// Over http.max_inflight a request is refused at once with 503, and the
// problem still names the request id the client sent.
func TestOverloaded(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
http:
  max_inflight: 1
routes:
  - name: slow
    method: GET
    path: /slow
    nats: {subject: slow, timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	holding := make(chan struct{}, 1)
	release := make(chan struct{})
	respond(t, worker, "slow", func(*nats.Msg) *nats.Msg {
		holding <- struct{}{}
		<-release
		return &nats.Msg{Data: []byte("done")}
	})
	first := make(chan int, 1)
	go func() {
		resp, err := http.Get(gw.URL + "/slow")
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	select {
	case <-holding:
	case <-time.After(15 * time.Second):
		close(release)
		t.Fatal("the first request never reached the worker")
	}
	var resp *http.Response
	var body string
	took := elapsed(func() { resp, body = do(t, "GET", gw.URL+"/slow", nil, http.Header{"X-Request-Id": {"second"}}) })
	close(release)
	p := checkProblem(t, resp, body, 503, nil)
	if p["kind"] != "overloaded" || resp.Header.Get("X-Request-Id") != "second" {
		t.Errorf("kind %v, X-Request-Id %q", p["kind"], resp.Header.Get("X-Request-Id"))
	}
	if took > notAHang {
		t.Errorf("refused after %v, want at once", took)
	}
	if code := <-first; code != 200 {
		t.Errorf("the first request got %d, want 200", code)
	}
}

// Catch-all and regexp parameters obey the same one-token rule.
func TestPathPatterns(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-file
    method: GET
    path: /files/*
    nats: {subject: "files.{*}", timeout: 5s}
  - name: get-item
    method: GET
    path: "/items/{id:[0-9]+}"
    nats: {subject: "items.{id}", timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	echoSubject := func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte(m.Subject)} }
	respond(t, worker, "files.>", echoSubject)
	respond(t, worker, "items.*", echoSubject)
	for _, tt := range []struct {
		target string
		status int
		want   any // the subject for 200, the route for a problem
	}{
		{"/files/a/b.txt", 400, "get-file"},
		{"/files/a/b", 200, "files.a/b"},
		{"/files/a%2Fb", 200, "files.a/b"},
		{"/files/a%2Eb", 400, "get-file"},
		{"/files/%3E", 400, "get-file"},
		{"/items/12", 200, "items.12"},
		{"/items/ab", 404, nil},
	} {
		t.Run(tt.target, func(t *testing.T) {
			resp, body := rawRequest(t, "GET", gw.URL, tt.target)
			if tt.status == 200 {
				if resp.StatusCode != 200 || body != tt.want {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, tt.want)
				}
				return
			}
			checkProblem(t, resp, body, tt.status, tt.want)
		})
	}
}

// A client's own mistakes are its answer alone: they never count against
// the route's breaker, or a few bad requests would shut everyone out.
func TestClientErrorsDoNotOpenTheBreaker(t *testing.T) {
	opts := natstest.Options(t)
	opts.MaxPayload = 8 << 10
	ns := natstest.RunServerWith(t, opts)
	gw := startGateway(t, ns, `
nats:
  streams:
    - name: ORDERS
      subjects: [orders.>]
routes:
  - name: create-order
    method: POST
    path: /orders/{kind}
    breaker: {min_requests: 2, failure_ratio: 1, open_for: 1m}
    forward_headers: [X-Big]
    nats: {subject: "orders.{kind}", pattern: jetstream, timeout: 5s}
`)
	bad := []struct {
		name   string
		target string
		header http.Header
		status int
	}{
		{"long Idempotency-Key", "/orders/new", http.Header{"Idempotency-Key": {strings.Repeat("k", 300)}}, 400},
		{"headers over max_payload", "/orders/new", http.Header{"X-Big": {strings.Repeat("h", 9<<10)}}, 413},
		{"bad param", "/orders/a.b", nil, 400},
	}
	for round := 0; round < 3; round++ {
		for _, b := range bad {
			resp, body := do(t, "POST", gw.URL+b.target, strings.NewReader("{}"), b.header)
			checkProblem(t, resp, body, b.status, "create-order")
		}
	}
	resp, body := do(t, "POST", gw.URL+"/orders/new", strings.NewReader("{}"), nil)
	if resp.StatusCode != 202 {
		t.Fatalf("a good request after client errors: %d %s, want 202", resp.StatusCode, body)
	}
}

// A request a worker already holds when the connection drops may have been
// acted on: like a timeout, it falls back to the upstream only when its
// method is idempotent, so a POST is never run twice.
func TestFallbackAfterDropInFlight(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	gw := startGateway(t, ns, `
upstreams:
  legacy:
    url: `+legacy.URL+`
routes:
  - name: user
    method: "*"
    path: /users/{id}
    upstream: legacy
    cutover: nats
    fallback: true
    nats: {subject: "users.{id}", timeout: 5s}
`)
	worker := natstest.Connect(t, ns, nats.MaxReconnects(0))
	holding := make(chan string, 2)
	respond(t, worker, "users.*", func(m *nats.Msg) *nats.Msg {
		holding <- m.Header.Get("Http-Method")
		return nil
	})
	type answer struct {
		status  int
		backend string
	}
	send := func(method string) <-chan answer {
		out := make(chan answer, 1)
		go func() {
			req, _ := http.NewRequest(method, gw.URL+"/users/1", strings.NewReader("{}"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				out <- answer{}
				return
			}
			resp.Body.Close()
			out <- answer{resp.StatusCode, resp.Header.Get(HeaderBackend)}
		}()
		return out
	}
	post, get := send("POST"), send("GET")
	for i := 0; i < 2; i++ {
		select {
		case <-holding:
		case <-time.After(15 * time.Second):
			t.Fatal("the worker did not get both requests")
		}
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	if a := <-post; a.status != 503 || legacy.hits.Load() > 1 {
		t.Errorf("POST in flight: %d from %q, legacy hit %d times: want 503 and the POST never replayed", a.status, a.backend, legacy.hits.Load())
	}
	if a := <-get; a.status != 200 || a.backend != "legacy" {
		t.Errorf("GET in flight: %d from %q, want the legacy answer", a.status, a.backend)
	}
	if n := legacy.hits.Load(); n != 1 {
		t.Errorf("legacy served %d requests, want only the GET", n)
	}
}

// A client that leaves frees the NATS wait at once and is not held against
// the route: its breaker stays closed.
func TestClientGone(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    breaker: {min_requests: 1, failure_ratio: 1, open_for: 1m}
    nats: {subject: "users.{id}.get", timeout: 30s}
`)
	worker := natstest.Connect(t, ns)
	holding := make(chan struct{}, 1)
	respond(t, worker, "users.*.get", func(m *nats.Msg) *nats.Msg {
		if m.Header.Get("Http-Param-id") == "hold" {
			holding <- struct{}{}
			return nil
		}
		return &nats.Msg{Data: []byte("ok")}
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", gw.URL+"/users/hold", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-holding:
	case <-time.After(15 * time.Second):
		t.Fatal("the request never reached the worker")
	}
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("the canceled request got an answer")
	}
	natstest.Eventually(t, notAHang, "the gateway to give up the abandoned request before its 30s timeout", func() bool {
		return gw.inflight.Load() == 0
	})
	if resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("after a client left: %d %s, want 200 (breaker closed)", resp.StatusCode, body)
	}
}
