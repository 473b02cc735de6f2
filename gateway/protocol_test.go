package gateway

// Tests of the wire protocol as a worker in any language sees it: the
// headers on the NATS message, and how reply headers come back over HTTP.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// hostileHeaders are client headers that must never reach NATS: the
// gateway's own Http-* and NATS or JetStream control headers.
var hostileHeaders = http.Header{
	"Nats-Msg-Id":                 {"client-chosen"},
	"Nats-Rollup":                 {"all"},
	"Nats-Expected-Last-Sequence": {"999"},
	"Nats-Expected-Stream":        {"OTHER"},
	"Nats-Ttl":                    {"1s"},
	"Http-Status":                 {"500"},
	"Http-Method":                 {"DELETE"},
	"Http-Route":                  {"admin"},
	"Http-Param-Id":               {"spoofed"},
	"Http-Param-id":               {"spoofed"},
}

func headerDiff(got nats.Header, want map[string]string) string {
	var diff []string
	for k, v := range got {
		if w, ok := want[k]; !ok {
			diff = append(diff, fmt.Sprintf("unexpected %s: %q", k, v))
		} else if len(v) != 1 || v[0] != w {
			diff = append(diff, fmt.Sprintf("%s: %q, want %q", k, v, w))
		}
	}
	for k, w := range want {
		if _, ok := got[k]; !ok {
			diff = append(diff, fmt.Sprintf("missing %s: %q", k, w))
		}
	}
	sort.Strings(diff)
	return strings.Join(diff, "\n")
}

func TestRequestHeadersOnTheWire(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: update-user
    method: POST
    path: /orgs/{org}/users/{userId}
    forward_headers: [X-Tenant, Host]
    nats: {subject: "orgs.{org}.users.{userId}", timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	got := make(chan *nats.Msg, 1)
	respond(t, worker, "orgs.>", func(m *nats.Msg) *nats.Msg {
		got <- m
		return &nats.Msg{Data: []byte("ok")}
	})

	body := []byte("binary \x00\x01\xff body")
	h := http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Accept":        {"application/json"},
		"Traceparent":   {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		"Tracestate":    {"vendor=opaque"},
		"X-Tenant":      {"acme"},
		"X-Request-Id":  {"rid-1"},
		"X-Other":       {"not forwarded"},
		"Authorization": {"Bearer not-forwarded"},
		"Cookie":        {"session=not-forwarded"},
	}
	for k, v := range hostileHeaders {
		h[k] = v
	}
	resp, _ := do(t, "POST", gw.URL+"/orgs/acme%2Dco/users/7?a=1&b=%20x", bytes.NewReader(body), h)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var m *nats.Msg
	select {
	case m = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("the worker got nothing")
	}
	if m.Subject != "orgs.acme-co.users.7" {
		t.Errorf("subject %q", m.Subject)
	}
	if !bytes.Equal(m.Data, body) {
		t.Errorf("data %q, want the body unchanged %q", m.Data, body)
	}
	want := map[string]string{
		"Http-Method":       "POST",
		"Http-Path":         "/orgs/acme%2Dco/users/7", // raw, as the client sent it
		"Http-Query":        "a=1&b=%20x",
		"Http-Route":        "update-user",
		"Http-Param-org":    "acme-co", // unescaped, the name as in the pattern
		"Http-Param-userId": "7",
		"X-Request-Id":      "rid-1",
		"Content-Type":      "application/octet-stream",
		"Accept":            "application/json",
		"traceparent":       "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"tracestate":        "vendor=opaque",
		"X-Tenant":          "acme",
		"Host":              strings.TrimPrefix(gw.URL, "http://"), // Go keeps it out of the header map
	}
	if d := headerDiff(m.Header, want); d != "" {
		t.Errorf("NATS header:\n%s", d)
	}
}

// Without a query string, a body or optional headers, only the protocol's
// headers are set, and the gateway makes up a request id.
func TestRequestHeadersMinimal(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: ping
    method: GET
    path: /ping
    nats: {subject: ping, timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	got := make(chan *nats.Msg, 1)
	respond(t, worker, "ping", func(m *nats.Msg) *nats.Msg {
		got <- m
		return &nats.Msg{}
	})
	req, err := http.NewRequest("GET", gw.URL+"/ping", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "identity") // the client adds gzip otherwise; not forwarded either way
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	m := <-got
	id := resp.Header.Get("X-Request-Id")
	if id == "" {
		t.Fatal("no X-Request-Id in the response")
	}
	want := map[string]string{"Http-Method": "GET", "Http-Path": "/ping", "Http-Route": "ping", "X-Request-Id": id}
	if d := headerDiff(m.Header, want); d != "" {
		t.Errorf("NATS header:\n%s", d)
	}
	if len(m.Data) != 0 {
		t.Errorf("data %q, want none", m.Data)
	}
}

// Client-sent control headers do not reach a publish subscriber nor a
// JetStream stream: a stream would obey Nats-Expected-*, Nats-Rollup,
// Nats-TTL and deduplicate on Nats-Msg-Id.
func TestControlHeadersNeverReachNATS(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
nats:
  streams:
    - name: ORDERS
      subjects: [orders.>]
routes:
  - name: post-event
    method: POST
    path: /events
    nats: {subject: events.created, pattern: publish}
  - name: create-order
    method: POST
    path: /orders
    nats: {subject: orders.created, pattern: jetstream}
`)
	nc := natstest.Connect(t, ns)
	sub, err := nc.SubscribeSync("events.created")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	resp, body := do(t, "POST", gw.URL+"/events", strings.NewReader("e"), hostileHeaders)
	if resp.StatusCode != 202 {
		t.Fatalf("publish: %d %s", resp.StatusCode, body)
	}
	m, err := sub.NextMsg(15 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	checkNoClientControl(t, "publish", m.Header)

	// Both POSTs carry the same Nats-Msg-Id and a wrong expected sequence:
	// leaked, the first would be refused and the second deduplicated.
	for i := 1; i <= 2; i++ {
		resp, body := do(t, "POST", gw.URL+"/orders", strings.NewReader(fmt.Sprint(i)), hostileHeaders)
		if resp.StatusCode != 202 || !strings.Contains(body, fmt.Sprintf(`"seq":%d`, i)) || !strings.Contains(body, `"duplicate":false`) {
			t.Fatalf("jetstream POST %d: %d %s", i, resp.StatusCode, body)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		sm, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v (a rollup would have removed it)", seq, err)
		}
		checkNoClientControl(t, fmt.Sprintf("stored message %d", seq), sm.Header)
	}
}

func checkNoClientControl(t *testing.T, what string, h nats.Header) {
	t.Helper()
	for k, v := range h {
		lower := strings.ToLower(k)
		if strings.HasPrefix(lower, "nats-") {
			t.Errorf("%s: client header %s: %q reached NATS", what, k, v)
		}
		if strings.HasPrefix(lower, "http-") && len(v) == 1 && (v[0] == "spoofed" || v[0] == "DELETE" || v[0] == "admin" || v[0] == "500") {
			t.Errorf("%s: client header %s: %q reached NATS", what, k, v)
		}
	}
	if h.Get("Http-Method") != "POST" {
		t.Errorf("%s: Http-Method %q, want the gateway's POST", what, h.Get("Http-Method"))
	}
}

// Reply headers become response headers, except the protocol's own and
// hop-by-hop ones; the worker's Server-Timing joins the gateway's.
func TestReplyHeaders(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: create-user
    method: POST
    path: /users
    nats: {subject: users.create, timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, "users.create", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte(`{"id":1}`), Header: nats.Header{
			"Http-Status":        {"201"},
			"Content-Type":       {"application/json"},
			"Location":           {"/users/1"},
			"X-Custom":           {"a", "b"},
			"Nats-Msg-Id":        {"leak"},
			"Http-Route":         {"leak"},
			"Connection":         {"X-Hop"},
			"X-Hop":              {"leak"},
			"Keep-Alive":         {"timeout=1"},
			"Content-Length":     {"9999"},
			"X-Request-Id":       {"worker-id"},
			"X-Natsgate-Backend": {"leak"},
			"Server-Timing":      {"worker;dur=3"},
		}}
	})
	resp, body := do(t, "POST", gw.URL+"/users", strings.NewReader("{}"), http.Header{"X-Request-Id": {"client-id"}})
	if resp.StatusCode != 201 || body != `{"id":1}` {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	for k, want := range map[string]string{"Content-Type": "application/json", "Location": "/users/1", "X-Request-Id": "client-id", "Content-Length": "8"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if got := resp.Header.Values("X-Custom"); strings.Join(got, ",") != "a,b" {
		t.Errorf("X-Custom %q, want both values", got)
	}
	for k, v := range resp.Header {
		lower := strings.ToLower(k)
		if strings.HasPrefix(lower, "nats-") || strings.HasPrefix(lower, "http-") || k == "X-Hop" || k == "Keep-Alive" {
			t.Errorf("reply header %s: %q leaked to the client", k, v)
		}
	}
	if b := resp.Header.Get("X-Natsgate-Backend"); b != "nats" {
		t.Errorf("X-Natsgate-Backend %q, want the gateway's nats", b)
	}
	st := resp.Header.Get("Server-Timing")
	for _, part := range []string{"edge;dur=", "nats;dur=", "worker;dur=3"} {
		if !strings.Contains(st, part) {
			t.Errorf("Server-Timing %q lacks %q", st, part)
		}
	}
}

// The body reaches the worker byte for byte, declared or chunked.
func TestBodyUnchanged(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: echo
    method: PUT
    path: /echo
    nats: {subject: echo, timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, "echo", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: m.Data} })
	payload := bytes.Repeat([]byte("0123456789abcdef\x00\xff"), 4000)
	for name, r := range map[string]io.Reader{"declared": bytes.NewReader(payload), "chunked": io.MultiReader(bytes.NewReader(payload))} {
		resp, body := do(t, "PUT", gw.URL+"/echo", r, nil)
		if resp.StatusCode != 200 || body != string(payload) {
			t.Errorf("%s: %d, %d bytes back of %d", name, resp.StatusCode, len(body), len(payload))
		}
	}
}

// Request routes build their messages' headers in reused maps: a header one
// request set (a forwarded header, a query, a parameter, the Nats-Msg-Id
// of an Idempotency-Key) must never reach the next message, whichever
// route sends it. Requests to three routes alternate, and each message is
// checked against exactly the headers of its own request.
func TestReusedHeadersCarryNothingOver(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
nats:
  streams:
    - name: ORDERS
      subjects: [orders.>]
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    forward_headers: [X-Tenant]
    nats: {subject: "users.{id}.get", timeout: 5s}
  - name: ping
    method: GET
    path: /ping
    nats: {subject: ping, timeout: 5s}
  - name: create-order
    method: POST
    path: /orders
    nats: {subject: orders.created, pattern: jetstream}
`)
	worker := natstest.Connect(t, ns)
	got := make(chan *nats.Msg, 1)
	answer := func(m *nats.Msg) *nats.Msg {
		got <- m
		return &nats.Msg{Data: []byte("ok")}
	}
	respond(t, worker, "users.*.get", answer)
	respond(t, worker, "ping", answer)
	js, err := jetstream.New(worker)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	seq := uint64(0)
	for i := range 20 {
		id := fmt.Sprintf("rid-%d", i)
		switch i % 3 {
		case 0:
			resp, body := do(t, "GET", fmt.Sprintf("%s/users/%d?page=%d", gw.URL, i, i), nil, http.Header{
				"X-Tenant": {"acme"}, "Accept": {"text/plain"}, "X-Request-Id": {id},
			})
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
			want := map[string]string{"Http-Method": "GET", "Http-Path": fmt.Sprintf("/users/%d", i), "Http-Query": fmt.Sprintf("page=%d", i),
				"Http-Route": "get-user", "Http-Param-id": fmt.Sprint(i), "X-Tenant": "acme", "Accept": "text/plain", "X-Request-Id": id}
			if d := headerDiff((<-got).Header, want); d != "" {
				t.Errorf("request %d, NATS header:\n%s", i, d)
			}
		case 1:
			resp, body := do(t, "GET", gw.URL+"/ping", nil, http.Header{"X-Tenant": {"not forwarded here"}, "X-Request-Id": {id}, "Accept-Encoding": {"identity"}})
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
			want := map[string]string{"Http-Method": "GET", "Http-Path": "/ping", "Http-Route": "ping", "X-Request-Id": id}
			if d := headerDiff((<-got).Header, want); d != "" {
				t.Errorf("request %d, NATS header:\n%s", i, d)
			}
		case 2:
			resp, body := do(t, "POST", gw.URL+"/orders", strings.NewReader(id), http.Header{
				"Idempotency-Key": {"key-" + id}, "X-Request-Id": {id}, "Content-Type": {"text/plain"},
			})
			if resp.StatusCode != 202 || !strings.Contains(body, `"duplicate":false`) {
				t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
			}
			seq++
			stream, err := js.Stream(ctx, "ORDERS")
			if err != nil {
				t.Fatal(err)
			}
			sm, err := stream.GetMsg(ctx, seq)
			if err != nil {
				t.Fatalf("stored message %d: %v", seq, err)
			}
			want := map[string]string{"Http-Method": "POST", "Http-Path": "/orders", "Http-Route": "create-order",
				"X-Request-Id": id, "Content-Type": "text/plain", "Nats-Msg-Id": "key-" + id}
			if d := headerDiff(sm.Header, want); d != "" {
				t.Errorf("request %d, stored header:\n%s", i, d)
			}
		}
	}
}

// canonicalName, mapReply's one pass over a reply header's name, gives
// what net/http's CanonicalHeaderKey and the token check give together,
// for names in canonical form, in other spellings and with every byte.
func TestCanonicalNameAgreesWithNetHTTP(t *testing.T) {
	names := []string{"", "Content-Type", "content-type", "CONTENT-TYPE", "x-a-b", "X-A-B", "-x", "x-", "--",
		"X_Custom", "x_custom", "X1-2b", "Www-Authenticate", "www-authenticate", "nats-x y", "Bad:Name", "é-x", "Set-cookie", "a"}
	for c := 0; c < 256; c++ {
		names = append(names, string(rune(c))[:1], "X-"+string([]byte{byte(c)}), string([]byte{byte(c)})+"-y")
	}
	for _, name := range names {
		want := http.CanonicalHeaderKey(name)
		wantOK := validHeaderName(want)
		got, ok := canonicalName(name)
		if ok != wantOK || ok && got != want {
			t.Errorf("canonicalName(%q) = %q, %v; want %q, %v", name, got, ok, want, wantOK)
		}
	}
}

// A shadow copy carries the headers a request route would send for the
// same request, and Http-Shadow: true; it is built after the client is
// answered, in a reused map, so copies and requests of another route
// alternate here and each message is checked against its own request.
func TestShadowCopyHeadersOnTheWire(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "same")
	}))
	t.Cleanup(legacy.Close)
	gw := startGateway(t, ns, `
upstreams:
  legacy: {url: "`+legacy.URL+`", timeout: 2s}
routes:
  - name: shadow-user
    method: GET
    path: /users/{id}
    forward_headers: [X-Tenant]
    nats: {subject: "users.{id}.get", timeout: 5s}
    upstream: legacy
    cutover: shadow
  - name: ping
    method: GET
    path: /ping
    nats: {subject: ping, timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	got := make(chan *nats.Msg, 1)
	answer := func(m *nats.Msg) *nats.Msg {
		got <- m
		return &nats.Msg{Data: []byte("same"), Header: nats.Header{"Content-Type": {"text/plain"}}}
	}
	respond(t, worker, "users.*.get", answer)
	respond(t, worker, "ping", answer)
	next := func(i int) *nats.Msg {
		t.Helper()
		select {
		case m := <-got:
			return m
		case <-time.After(15 * time.Second):
			t.Fatalf("request %d: no message reached the worker", i)
			return nil
		}
	}
	match := gw.metrics.ShadowComparisons.WithLabelValues("shadow-user", "match")
	for i := range 20 {
		id := fmt.Sprintf("rid-%d", i)
		if i%2 == 0 {
			resp, body := do(t, "GET", fmt.Sprintf("%s/users/%d?page=%d", gw.URL, i, i), nil, http.Header{
				"X-Tenant": {"acme"}, "Accept": {"text/plain"}, "X-Request-Id": {id},
			})
			if resp.StatusCode != 200 || body != "same" || resp.Header.Get(HeaderBackend) != "legacy" {
				t.Fatalf("request %d: %d %s %q", i, resp.StatusCode, resp.Header.Get(HeaderBackend), body)
			}
			want := map[string]string{"Http-Method": "GET", "Http-Path": fmt.Sprintf("/users/%d", i), "Http-Query": fmt.Sprintf("page=%d", i),
				"Http-Route": "shadow-user", "Http-Param-id": fmt.Sprint(i), "X-Tenant": "acme", "Accept": "text/plain",
				"X-Request-Id": id, "Http-Shadow": "true"}
			if d := headerDiff(next(i).Header, want); d != "" {
				t.Errorf("copy %d, NATS header:\n%s", i, d)
			}
			// The copy is compared, and its map free again, before the
			// next request takes one.
			natstest.Eventually(t, 15*time.Second, "the copy's outcome", func() bool { return testutil.ToFloat64(match) == float64(i/2+1) })
			continue
		}
		resp, body := do(t, "GET", gw.URL+"/ping", nil, http.Header{"X-Request-Id": {id}, "Accept-Encoding": {"identity"}})
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		want := map[string]string{"Http-Method": "GET", "Http-Path": "/ping", "Http-Route": "ping", "X-Request-Id": id}
		if d := headerDiff(next(i).Header, want); d != "" {
			t.Errorf("request %d, NATS header:\n%s", i, d)
		}
	}
}
