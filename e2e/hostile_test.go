package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// hostileConfig has a request route, a publish route with a small body
// limit and tight header limits.
const hostileConfig = `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", pattern: request, timeout: 2s}
  - name: post-event
    method: POST
    path: /events/{kind}
    max_body: 1KiB
    nats: {subject: "events.{kind}", pattern: publish}
`

const hostileHTTP = `  max_header_bytes: 4KiB
  read_header_timeout: 1s`

// spy is a plain NATS subscriber on ">": it sees every message published
// in the account, in the order the server delivers them.
type spy struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func startSpy(t *testing.T, url, subject string) *spy {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s := &spy{}
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *spy) Msgs() []*nats.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*nats.Msg(nil), s.msgs...)
}

// waitFor waits until a message on subject has arrived and returns it.
func (s *spy) waitFor(t *testing.T, subject string) *nats.Msg {
	t.Helper()
	var found *nats.Msg
	eventually(t, 15*time.Second, "a message on "+subject, func() bool {
		for _, m := range s.Msgs() {
			if m.Subject == subject {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func rawGet(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: natsgate\r\nConnection: close\r\n\r\n"
}

func rawPost(path string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: natsgate\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
}

// Hostile input: path parameters that would add a token or a wildcard to a
// subject, inject a protocol line, or are empty, bad or too long. Each is
// sent raw on the wire, exactly as written.
func TestHostilePathParams(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: hostileHTTP, Body: hostileConfig})
	client := newClient(t)
	eventually(t, 15*time.Second, "a 200 from get-user", func() bool { return do(client, "GET", g.URL+"/users/1", "", nil).status == 200 })
	sp := startSpy(t, ns.URL(), ">")

	// Requests in flight all along must keep succeeding.
	l := startLoad(2, 100000, 30*time.Second, getUser(client, g.URL))
	defer l.Stop()

	long := strings.Repeat("a", 5000)
	hostile := []string{
		"a.b", "a%2Eb", "a%2eb", "*", "%2A", ">", "%3E", "a%20b", "a%09b", "a%0D%0APUB%20x%200",
		"%00", "%zz", "", long,
		"a.%3E", "%2E", "..", "a%0Ab", "a%7Fb",
	}
	for _, v := range hostile {
		for _, req := range []string{rawGet("/users/" + v), rawPost("/events/" + v)} {
			status, resp := rawExchange(t, g.Addr, req, 5*time.Second)
			name := v
			if len(name) > 20 {
				name = name[:20] + "…"
			}
			switch {
			case status == 400 || status == 414:
			case v == "" && status == 404:
				// An empty segment matches no route: nothing to publish.
			default:
				t.Errorf("param %q (%s): got %d, want 400 or 414:\n%s", name, strings.Fields(req)[0], status, resp)
			}
		}
	}

	// Publish a sentinel through the gateway: once the spy has it, it has
	// seen everything the gateway published before.
	if e := do(client, "POST", g.URL+"/events/sentinel", "{}", nil); e.status != 202 {
		t.Fatalf("sentinel: %v", e)
	}
	sp.waitFor(t, "events.sentinel")
	results := l.Stop()

	// The only messages are the sentinel, the load's requests and their
	// replies, and the gateway's own JetStream API calls: this server runs
	// no JetStream, so the leader election and the cutover bucket try
	// again now and then ($JS.API.INFO, $JS.API.STREAM.INFO...). No route's
	// subject can start with "$": each starts with "users." or "events.".
	loadSubject := regexp.MustCompile(`^users\.[0-9]+\.get$`)
	for _, m := range sp.Msgs() {
		switch {
		case m.Subject == "events.sentinel", strings.HasPrefix(m.Subject, "_INBOX."), strings.HasPrefix(m.Subject, "$JS.API."):
		case loadSubject.MatchString(m.Subject):
		default:
			t.Errorf("a hostile request published on %q (headers %v)", m.Subject, m.Header)
		}
	}
	for _, e := range results {
		if e.status != 200 {
			t.Errorf("a well-formed request failed while hostile ones were sent: %v", e)
		}
	}
	if strings.Contains(g.Output(), "NATS disconnected") {
		t.Errorf("the NATS connection dropped:\n%s", tail(g.Output(), 3000))
	}
	t.Logf("%d hostile params, each to two routes; %d well-formed requests alongside, all 200", len(hostile), len(results))
}

// Hostile input: NATS and JetStream control headers and the gateway's own
// protocol headers, sent by a client, never reach NATS.
func TestControlHeadersNeverReachNATS(t *testing.T) {
	ns := startNATS(t, natsOptions{jetstream: true})
	natsExtra, body := ordersConfig(1)
	body += `  - name: post-event
    method: POST
    path: /events/{kind}
    nats: {subject: "events.{kind}", pattern: publish}
    forward_headers: [X-Tenant]
  - name: get-thing
    method: GET
    path: /things/{id}
    nats: {subject: "things.{id}.get", pattern: request, timeout: 2s}
`
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: natsExtra, Body: body})
	client := newClient(t)
	sp := startSpy(t, ns.URL(), ">")
	// A responder for get-thing that echoes what it received.
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe("things.*.get", func(m *nats.Msg) { _ = m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()

	evil := http.Header{
		"Nats-Msg-Id":                 {"evil-id"},
		"Nats-Rollup":                 {"all"},
		"Nats-Expected-Last-Sequence": {"999"},
		"Nats-Expected-Stream":        {"NOT-ORDERS"},
		"Nats-Expected-Last-Msg-Id":   {"nope"},
		"Nats-Ttl":                    {"1s"},
		"Nats-Service-Error-Code":     {"500"},
		"Http-Status":                 {"299"},
		"Http-Method":                 {"DELETE"},
		"Http-Route":                  {"evil"},
		"Http-Path":                   {"/evil"},
		"Http-Param-Id":               {"666"},
		"Http-Param-id":               {"666"},
		"X-Tenant":                    {"acme"},
		"Content-Type":                {"application/json"},
	}
	send := func(method, path, key string) exchange {
		h := evil.Clone()
		if key != "" {
			h["Idempotency-Key"] = []string{key}
		}
		return do(client, method, g.URL+path, `{"n":1}`, h)
	}
	checkHeaders := func(m *nats.Msg, method, route, path string) {
		t.Helper()
		for k, v := range m.Header {
			if strings.HasPrefix(strings.ToLower(k), "nats-") && !(k == nats.MsgIdHdr && !strings.Contains(v[0], "evil")) {
				t.Errorf("%s: the client's %s: %v reached NATS", route, k, v)
			}
		}
		want := map[string]string{"Http-Method": method, "Http-Route": route, "Http-Path": path}
		for k, v := range want {
			if got := m.Header.Values(k); len(got) != 1 || got[0] != v {
				t.Errorf("%s: %s on NATS is %q, want %q", route, k, got, v)
			}
		}
		for k := range m.Header {
			if strings.EqualFold(k, "Http-Status") || strings.EqualFold(k, "Http-Param-Id") && route != "get-thing" {
				t.Errorf("%s: the client's %s reached NATS", route, k)
			}
		}
	}

	// publish
	if e := send("POST", "/events/created", ""); e.status != 202 {
		t.Fatalf("publish: %v", e)
	}
	m := sp.waitFor(t, "events.created")
	checkHeaders(m, "POST", "post-event", "/events/created")
	if m.Header.Get("X-Tenant") != "acme" {
		t.Errorf("the allowlisted X-Tenant header did not reach NATS: %v", m.Header)
	}

	// request
	if e := send("GET", "/things/42", ""); e.status != 200 {
		t.Fatalf("request: %v", e)
	}
	m = sp.waitFor(t, "things.42.get")
	checkHeaders(m, "GET", "get-thing", "/things/42")
	if got := m.Header.Values("Http-Param-id"); len(got) != 1 || got[0] != "42" {
		t.Errorf("Http-Param-id on NATS is %q, want [42]", got)
	}

	// jetstream: a passed-through Nats-Expected-* would make the store
	// refuse the message, Nats-Rollup would purge the stream, and
	// Nats-Msg-Id would dedupe different keys as one.
	for i, key := range []string{"key-1", "key-2", "key-3"} {
		e := send("POST", "/orders", key)
		if e.status != 202 {
			t.Fatalf("jetstream POST %d: %v", i, e)
		}
		var ack struct {
			Seq       uint64 `json:"seq"`
			Duplicate bool   `json:"duplicate"`
		}
		if err := json.Unmarshal([]byte(e.body), &ack); err != nil || ack.Seq != uint64(i+1) || ack.Duplicate {
			t.Errorf("jetstream POST %d: body %s, want seq %d, not a duplicate", i, e.body, i+1)
		}
	}
	ids := streamMsgIDs(t, ns.URL(), "ORDERS")
	if len(ids) != 3 || ids["key-1"] != 1 || ids["key-2"] != 1 || ids["key-3"] != 1 {
		t.Errorf("the stream holds %v, want key-1, key-2 and key-3 once each", ids)
	}
	for _, m := range sp.Msgs() {
		if m.Subject == "orders.created" {
			checkHeaders(m, "POST", "create-order", "/orders")
		}
	}
}

// Hostile input: bodies over max_body get 413 without being read whole,
// whether their length is declared or not.
func TestBodyOverMaxBody(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: hostileHTTP, Body: hostileConfig})

	t.Run("declared length", func(t *testing.T) {
		// 100 MiB declared, 2 KiB sent, then nothing: the answer must come
		// without the rest.
		req := "POST /events/big HTTP/1.1\r\nHost: natsgate\r\nContent-Length: 104857600\r\n\r\n" + strings.Repeat("x", 2048)
		status, resp := rawExchange(t, g.Addr, req, 5*time.Second)
		if status != 413 {
			t.Errorf("got %d, want 413:\n%s", status, resp)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("POST /events/big HTTP/1.1\r\nHost: natsgate\r\nTransfer-Encoding: chunked\r\n\r\n")
		for i := 0; i < 8; i++ { // 4 KiB in 512-byte chunks, and no last chunk
			fmt.Fprintf(&b, "200\r\n%s\r\n", strings.Repeat("y", 512))
		}
		status, resp := rawExchange(t, g.Addr, b.String(), 5*time.Second)
		if status != 413 {
			t.Errorf("got %d, want 413:\n%s", status, resp)
		}
	})
}

// Hostile input: request headers over max_header_bytes get 431.
func TestHeadersOverLimit(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: hostileHTTP, Body: hostileConfig})
	req := "GET /users/1 HTTP/1.1\r\nHost: natsgate\r\nX-Big: " + strings.Repeat("z", 64<<10) + "\r\n\r\n"
	status, resp := rawExchange(t, g.Addr, req, 5*time.Second)
	if status != 431 {
		t.Errorf("got %d, want 431:\n%s", status, tail(resp, 500))
	}
}

// Hostile input: a client sending its headers a byte a second is cut off
// at read_header_timeout (1s here).
func TestSlowHeadersCutOff(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: hostileHTTP, Body: hostileConfig})
	conn, err := net.Dial("tcp", g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, conn) // returns when the server closes
		closed <- time.Since(start)
	}()
	trickle := "GET /users/1 HTTP/1.1\r\nHost: natsgate\r\nX-Slow: abcdefghij"
	var took time.Duration
loop:
	for i := 0; i < len(trickle); i++ {
		select {
		case took = <-closed:
			break loop
		default:
		}
		if _, err := conn.Write([]byte{trickle[i]}); err != nil {
			took = time.Since(start)
			break
		}
		if i > 20 { // the request line went at once; then one byte a second
			time.Sleep(time.Second)
		}
		if time.Since(start) > 6*time.Second {
			break
		}
	}
	if took == 0 {
		select {
		case took = <-closed:
		case <-time.After(4 * time.Second):
			t.Fatalf("the connection is still open %v after the first byte", time.Since(start))
		}
	}
	if took > time.Second+2*time.Second {
		t.Errorf("closed after %v; read_header_timeout is 1s", took)
	}
	t.Logf("a slow client was closed after %v", took)
}

// Hostile input: framing that could desync a proxy: both Content-Length and
// Transfer-Encoding, or two different Content-Lengths, with a second
// request smuggled behind. natsgate answers 400, or frames the request by
// Transfer-Encoding alone and closes the connection; the smuggled
// request is never read: it reaches neither NATS nor the legacy upstream.
func TestRequestSmuggling(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	var mu sync.Mutex
	var seen []string
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(200)
	}))
	defer legacy.Close()
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: hostileHTTP, Body: fmt.Sprintf(`
upstreams:
  legacy: {url: %q}
routes:
  - name: legacy-all
    method: "*"
    path: /legacy/*
    upstream: legacy
    cutover: legacy
  - name: post-event
    method: POST
    path: /events/{kind}
    nats: {subject: "events.{kind}", pattern: publish}
`, legacy.URL)})
	sp := startSpy(t, ns.URL(), ">")
	smuggled := "GET /legacy/smuggled HTTP/1.1\r\nHost: natsgate\r\n\r\n"
	cases := map[string]string{
		"CL and TE": "POST %s HTTP/1.1\r\nHost: natsgate\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"TE and CL": "POST %s HTTP/1.1\r\nHost: natsgate\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n" + smuggled,
		"two CLs":   "POST %s HTTP/1.1\r\nHost: natsgate\r\nContent-Length: 0\r\nContent-Length: 46\r\n\r\n" + smuggled,
		"TE twice":  "POST %s HTTP/1.1\r\nHost: natsgate\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + smuggled,
	}
	for name, tmpl := range cases {
		for _, path := range []string{"/legacy/front", "/events/front"} {
			conn, err := net.Dial("tcp", g.Addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(conn, fmt.Sprintf(tmpl, path))
			status, resp := readStatus(conn)
			switch {
			case status == 400:
			case name == "TE twice" && status == 501: // net/http: unsupported transfer encoding
			case strings.HasPrefix(name, "CL") || strings.HasPrefix(name, "TE and"):
				// RFC 9112 §6.1 allows framing by Transfer-Encoding
				// alone if the connection is closed after the answer.
				// net/http drops the Content-Length before natsgate sees
				// it, so natsgate cannot tell this from a plain chunked
				// request and closes after every chunked one.
				if status < 200 || status > 299 || !strings.Contains(resp, "Connection: close") {
					t.Errorf("%s to %s: got %d, want 400, or a 2xx framed by Transfer-Encoding with Connection: close:\n%s", name, path, status, resp)
				}
			default:
				t.Errorf("%s to %s: got %d, want 400:\n%s", name, path, status, resp)
			}
			// Nothing more may come on this connection: no answer to the
			// smuggled request.
			if status2, _ := readStatus(conn); status2 != 0 {
				t.Errorf("%s to %s: the smuggled request was answered with %d", name, path, status2)
			}
			conn.Close()
		}
	}
	// A well-formed request flushes both sides' queues.
	if e := do(newClient(t), "GET", g.URL+"/legacy/ok", "", nil); e.status != 200 {
		t.Fatalf("legacy: %v", e)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if s != "GET /legacy/ok" && s != "POST /legacy/front" {
			t.Errorf("the legacy upstream received %q", s)
		}
	}
	for _, m := range sp.Msgs() {
		if m.Subject != "events.front" {
			t.Errorf("NATS received a message on %q", m.Subject)
		}
	}
}

// Unknown route and wrong method: 404 and 405 (with Allow), each with a
// problem body.
func TestUnknownRouteAndWrongMethod(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: hostileConfig})
	client := newClient(t)
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/nowhere", 404, ""},
		{"GET", "/users/1/extra", 404, ""},
		{"DELETE", "/users/1", 405, "GET"},
		{"GET", "/events/x", 405, "POST"},
	} {
		req, _ := http.NewRequest(c.method, g.URL+c.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var p struct {
			Status    int     `json:"status"`
			Route     *string `json:"route"`
			RequestID string  `json:"request_id"`
		}
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != "application/problem+json" ||
			json.Unmarshal(b, &p) != nil || p.Status != c.status || p.RequestID == "" {
			t.Errorf("%s %s: %d %s %s; want %d with a problem body", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), b, c.status)
		}
		if c.allow != "" && !strings.Contains(resp.Header.Get("Allow"), c.allow) {
			t.Errorf("%s %s: Allow is %q, want it to list %s", c.method, c.path, resp.Header.Get("Allow"), c.allow)
		}
	}
}

// Hostile input: a client that declares a body and then stops sending it
// does not hold its request (and an in-flight slot) for ever: it is
// answered or cut off within the route's timeout.
func TestSlowBodyCutOff(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: hostileHTTP, Body: `
routes:
  - name: post-event
    method: POST
    path: /events/{kind}
    nats: {subject: "events.{kind}", pattern: publish, timeout: 1s}
`})
	conn, err := net.Dial("tcp", g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_, _ = io.WriteString(conn, "POST /events/slow HTTP/1.1\r\nHost: natsgate\r\nContent-Length: 100\r\n\r\n0123456789")
	_ = conn.SetReadDeadline(time.Now().Add(8 * time.Second))
	status, resp := readStatus(conn)
	took := time.Since(start)
	if took > time.Second+2*time.Second {
		t.Fatalf("a stalled body held its request for %v (status %d %s); the route timeout is 1s", took, status, resp)
	}
	if status != 408 {
		t.Errorf("a stalled body got %d, want 408:\n%s", status, resp)
	}
	t.Logf("a stalled body was answered %d after %v", status, took.Round(time.Millisecond))
}
