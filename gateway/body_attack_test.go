package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// These tests hold natsgate to its promise about request bodies: whichever
// backend answers sees the client's body whole and once, or the client is
// told of a problem naming route and request id. Each backend hashes what
// it received; the client says the hash of what it sent in X-Body-Sha256,
// and its own X-Request-Id ties each sighting to its request.

// bodyMaxAttack is the max_body of the routes under attack.
const bodyMaxAttack = 4096

// bodySighting is one body a backend received.
type bodySighting struct {
	backend string // "legacy" or "nats"
	reqID   string
	n       int
	sum     string // sha256 of what arrived, hex
	claimed string // the X-Body-Sha256 the client sent
	readErr string // the upstream's read failed: it did not act
	shadow  bool   // a copy marked Http-Shadow: true
}

// bodyBackends records what the legacy upstream and a NATS worker received.
type bodyBackends struct {
	mu   sync.Mutex
	seen []bodySighting
}

func (b *bodyBackends) add(s bodySighting) {
	b.mu.Lock()
	b.seen = append(b.seen, s)
	b.mu.Unlock()
}

// of returns the sightings of one request.
func (b *bodyBackends) of(reqID string) []bodySighting {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []bodySighting
	for _, s := range b.seen {
		if s.reqID == reqID {
			out = append(out, s)
		}
	}
	return out
}

// startBodyUpstream is a legacy service that reads each body to its end
// and records it; a body whose read failed is answered 400, as any
// upstream that does not act on a broken body would.
func startBodyUpstream(t *testing.T, seen *bodyBackends) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		s := bodySighting{backend: "legacy", reqID: r.Header.Get(HeaderRequestID), n: len(b), sum: bodyHash(b), claimed: r.Header.Get("X-Body-Sha256")}
		if err != nil {
			s.readErr = err.Error()
			seen.add(s)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		seen.add(s)
		_, _ = io.WriteString(w, "legacy:"+s.sum)
	}))
	t.Cleanup(up.Close)
	return up
}

// bodyWorker is a NATS worker on subject that records each body.
func bodyWorker(t *testing.T, nc *nats.Conn, subject string, seen *bodyBackends) {
	t.Helper()
	respond(t, nc, subject, func(m *nats.Msg) *nats.Msg {
		s := bodySighting{backend: "nats", reqID: m.Header.Get(HeaderRequestID), n: len(m.Data), sum: bodyHash(m.Data),
			claimed: m.Header.Get("X-Body-Sha256"), shadow: m.Header.Get(HeaderShadow) == "true"}
		seen.add(s)
		return &nats.Msg{Data: []byte("nats:" + s.sum)}
	})
}

// bodyRouteConfig is a route with both sides over the test's upstream,
// at stage, with extra lines under the route.
// bodyRig is the body route's gateway (see bodyRouteConfig) in front of
// an upstream that records what it gets, on a nats-server of its own.
type bodyRig struct {
	ns   *server.Server
	gw   *testGateway
	seen *bodyBackends
	addr string // the gateway's host:port, for hand-written requests
}

// startBodyRig starts the body route at stage, its config changed by
// each edit in turn.
func startBodyRig(t *testing.T, stage, extra string, edits ...func(string) string) bodyRig {
	t.Helper()
	ns := natstest.RunServer(t)
	seen := &bodyBackends{}
	up := startBodyUpstream(t, seen)
	cfg := bodyRouteConfig(up.URL, stage, extra)
	for _, edit := range edits {
		cfg = edit(cfg)
	}
	gw := startGateway(t, ns, cfg)
	return bodyRig{ns: ns, gw: gw, seen: seen, addr: strings.TrimPrefix(gw.URL, "http://")}
}

func bodyRouteConfig(upstreamURL, stage, extra string) string {
	return fmt.Sprintf(`
admin:
  token: secret
upstreams:
  legacy: {url: %s, timeout: 5s}
routes:
  - name: body
    method: "*"
    path: /things/{id}
    nats: {subject: "things.{id}", timeout: 2s}
    upstream: legacy
    cutover: %s
    max_body: %d
    forward_headers: [X-Body-Sha256]
%s`, upstreamURL, stage, bodyMaxAttack, extra)
}

// rawBody is how a raw request sends its body.
type rawBody struct {
	body    []byte
	chunked bool   // Transfer-Encoding: chunked, no Content-Length
	expect  bool   // Expect: 100-continue: the body only after the 100
	extra   string // more header lines, each ending in \r\n
}

// dialRaw opens a connection for a request written by hand, every read
// and write on it bounded by within so that a gateway that never answers
// fails the test rather than hanging it.
func dialRaw(t *testing.T, addr string, within time.Duration) *net.TCPConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(within))
	return conn.(*net.TCPConn)
}

// rawExchange sends one request on a new connection, written by hand so
// that nothing in a client library decides how its body travels, and
// reads the final answer.
func rawExchange(t *testing.T, addr, method, path, reqID string, rb rawBody) (*http.Response, string) {
	t.Helper()
	conn := dialRaw(t, addr, 15*time.Second)
	defer conn.Close()
	var head strings.Builder
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: natsgate\r\nX-Request-Id: %s\r\nX-Body-Sha256: %s\r\nConnection: close\r\n", method, path, reqID, bodyHash(rb.body))
	if rb.chunked {
		head.WriteString("Transfer-Encoding: chunked\r\n")
	} else {
		fmt.Fprintf(&head, "Content-Length: %d\r\n", len(rb.body))
	}
	if rb.expect {
		head.WriteString("Expect: 100-continue\r\n")
	}
	head.WriteString(rb.extra)
	head.WriteString("\r\n")
	if _, err := io.WriteString(conn, head.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	var payload bytes.Buffer
	if rb.chunked {
		// Two chunks when there is more than a byte, so the body is
		// really chunked, then the last chunk.
		cut := len(rb.body) / 2
		for _, part := range [][]byte{rb.body[:cut], rb.body[cut:]} {
			if len(part) > 0 {
				fmt.Fprintf(&payload, "%x\r\n%s\r\n", len(part), part)
			}
		}
		payload.WriteString("0\r\n\r\n")
	} else {
		payload.Write(rb.body)
	}
	if rb.expect {
		// The body goes only once natsgate asked for it; a final answer
		// before that is the answer.
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer to Expect: %v", err)
		}
		if resp.StatusCode != http.StatusContinue {
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, string(b)
		}
	}
	if _, err := conn.Write(payload.Bytes()); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if resp.StatusCode >= 200 {
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, string(b)
		}
	}
}

// pattern is n bytes that differ from one offset to the next, so that a
// body cut, doubled or shifted hashes differently.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i*7%26)
	}
	return b
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkWholeOnce checks that exactly one backend, want, acted on the
// request (a shadow copy aside), with the very bytes the client sent.
func checkWholeOnce(t *testing.T, seen *bodyBackends, reqID string, body []byte, want string) {
	t.Helper()
	var acted []bodySighting
	for _, s := range seen.of(reqID) {
		if s.shadow || s.readErr != "" {
			continue
		}
		acted = append(acted, s)
	}
	if len(acted) != 1 {
		t.Fatalf("request %s: %d backends acted on it (%+v), want exactly one", reqID, len(acted), acted)
	}
	s := acted[0]
	if s.backend != want {
		t.Errorf("request %s: %s acted on it, want %s", reqID, s.backend, want)
	}
	if s.n != len(body) || s.sum != bodyHash(body) || s.claimed != bodyHash(body) {
		t.Errorf("request %s: %s got %d bytes hashing %s (client said %s), the client sent %d hashing %s",
			reqID, s.backend, s.n, s.sum[:12], s.claimed, len(body), bodyHash(body)[:12])
	}
}

// checkNoneActed checks that no backend acted on the request.
func checkNoneActed(t *testing.T, seen *bodyBackends, reqID string) {
	t.Helper()
	for _, s := range seen.of(reqID) {
		if s.readErr == "" {
			t.Errorf("request %s: %s acted on a body of %d bytes, want no backend to act", reqID, s.backend, s.n)
		}
	}
}

// With no worker on the subject, every method falls back, and the
// upstream gets the client's body byte for byte and once, however it was
// sent: empty, one byte, up to max_body, chunked, after a 100 Continue,
// gzip-encoded. A body over max_body is 413 and reaches nobody.
func TestFallbackCarriesTheWholeBodyOnce(t *testing.T) {
	b := startBodyRig(t, "nats", "    fallback: true\n")
	seen, addr := b.seen, b.addr

	bodies := []struct {
		name string
		rb   rawBody
	}{
		{"empty", rawBody{body: []byte{}}},
		{"one byte", rawBody{body: pattern(1)}},
		{"just under max_body", rawBody{body: pattern(bodyMaxAttack - 1)}},
		{"at max_body", rawBody{body: pattern(bodyMaxAttack)}},
		{"just over max_body", rawBody{body: pattern(bodyMaxAttack + 1)}},
		{"chunked empty", rawBody{body: []byte{}, chunked: true}},
		{"chunked one byte", rawBody{body: pattern(1), chunked: true}},
		{"chunked at max_body", rawBody{body: pattern(bodyMaxAttack), chunked: true}},
		{"chunked over max_body", rawBody{body: pattern(bodyMaxAttack + 1), chunked: true}},
		{"expect 100-continue", rawBody{body: pattern(1000), expect: true}},
		{"expect 100-continue chunked", rawBody{body: pattern(1000), chunked: true, expect: true}},
		{"expect 100-continue over max_body", rawBody{body: pattern(bodyMaxAttack + 1), expect: true}},
		{"gzip encoded", rawBody{body: gzipped(t, pattern(3000)), extra: "Content-Encoding: gzip\r\nContent-Type: application/json\r\n"}},
	}
	n := 0
	for _, method := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		for _, b := range bodies {
			t.Run(method+" "+b.name, func(t *testing.T) {
				n++
				reqID := "body-" + strconv.Itoa(n)
				resp, text := rawExchange(t, addr, method, "/things/1", reqID, b.rb)
				if len(b.rb.body) > bodyMaxAttack {
					checkProblem(t, resp, text, http.StatusRequestEntityTooLarge, "body")
					checkNoneActed(t, seen, reqID)
					return
				}
				if resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "legacy" || text != "legacy:"+bodyHash(b.rb.body) {
					t.Fatalf("got %d from %q: %q, want 200 from legacy with the body's hash", resp.StatusCode, resp.Header.Get(HeaderBackend), text)
				}
				checkWholeOnce(t, seen, reqID, b.rb.body, "legacy")
			})
		}
	}
}

// After a timeout a worker holds the whole body and may have acted on it:
// a POST or PATCH is then 504 and never replayed to the upstream, while
// no responders (nothing reached a worker) falls back with the whole
// body whatever the method.
func TestTimeoutNeverReplaysUnsafeBodies(t *testing.T) {
	b := startBodyRig(t, "nats", "    fallback: true\n", func(cfg string) string { return strings.Replace(cfg, "timeout: 2s}", "timeout: 300ms}", 1) })
	seen, addr := b.seen, b.addr
	worker := natstest.Connect(t, b.ns)
	// things.slow is held (it records the body and never answers).
	respond(t, worker, "things.slow", func(m *nats.Msg) *nats.Msg {
		seen.add(bodySighting{backend: "nats", reqID: m.Header.Get(HeaderRequestID), n: len(m.Data), sum: bodyHash(m.Data),
			claimed: m.Header.Get("X-Body-Sha256")})
		return nil
	})
	body := pattern(3000)
	for i, method := range []string{"POST", "PATCH"} {
		reqID := "slow-" + strconv.Itoa(i)
		resp, text := rawExchange(t, addr, method, "/things/slow", reqID, rawBody{body: body})
		checkProblem(t, resp, text, http.StatusGatewayTimeout, "body")
		natstest.Eventually(t, 5*time.Second, "the worker's sighting", func() bool { return len(seen.of(reqID)) > 0 })
		for _, s := range seen.of(reqID) {
			if s.backend != "nats" || s.n != len(body) || s.sum != bodyHash(body) {
				t.Errorf("%s after a timeout: %s got %d bytes (%s), want only the worker, with the whole body", method, s.backend, s.n, s.sum[:12])
			}
		}
		if n := len(seen.of(reqID)); n != 1 {
			t.Errorf("%s after a timeout reached %d backends, want only the worker", method, n)
		}
	}
	for i, method := range []string{"POST", "PATCH", "PUT"} {
		reqID := "none-" + strconv.Itoa(i)
		resp, text := rawExchange(t, addr, method, "/things/nobody", reqID, rawBody{body: body, chunked: i%2 == 1})
		if resp.StatusCode != 200 || text != "legacy:"+bodyHash(body) {
			t.Fatalf("%s with no responders: %d %q, want the upstream's answer to the whole body", method, resp.StatusCode, text)
		}
		checkWholeOnce(t, seen, reqID, body, "legacy")
	}
}

// At canary 50% with a canary_key each side gets whole bodies, and one
// key's requests stay on one side.
func TestCanaryBodiesWholeAndKeyedToOneSide(t *testing.T) {
	b := startBodyRig(t, "canary", "    canary_percent: 50\n    canary_key: X-User\n")
	seen, addr := b.seen, b.addr
	bodyWorker(t, natstest.Connect(t, b.ns), "things.*", seen)
	sides := map[string]int{}
	for user := 0; user < 16; user++ {
		side := ""
		for i := 0; i < 3; i++ {
			reqID := fmt.Sprintf("canary-%d-%d", user, i)
			body := pattern(user*250 + i)
			resp, text := rawExchange(t, addr, "POST", "/things/1", reqID, rawBody{body: body, chunked: i == 1, extra: fmt.Sprintf("X-User: u%d\r\n", user)})
			got := resp.Header.Get(HeaderBackend)
			if resp.StatusCode != 200 || text != got+":"+bodyHash(body) {
				t.Fatalf("user %d: %d from %q: %q, want 200 with the body's hash", user, resp.StatusCode, got, text)
			}
			checkWholeOnce(t, seen, reqID, body, got)
			if side != "" && got != side {
				t.Errorf("user %d: request %d went to %s, the earlier ones to %s", user, i, got, side)
			}
			side = got
		}
		sides[side]++
	}
	if sides["nats"] == 0 || sides["legacy"] == 0 {
		t.Errorf("16 keys at 50%%: %v, want both sides used", sides)
	}
}

// While the route's stage is changed through the admin API, bodies in
// flight are each acted on by one backend, whole (a shadow copy aside,
// which is whole too), or refused with 413 and seen by nobody.
func TestStageChangesWhileBodiesInFlight(t *testing.T) {
	b := startBodyRig(t, "legacy", "    shadow_unsafe: true\n    fallback: true\n")
	seen, addr, gw := b.seen, b.addr, b.gw
	bodyWorker(t, natstest.Connect(t, b.ns), "things.*", seen)

	type sent struct {
		reqID   string
		body    []byte
		status  int
		backend string
		text    string
	}
	const clients, each = 4, 25
	results := make(chan sent, clients*each)
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				reqID := fmt.Sprintf("flip-%d-%d", c, i)
				size := (c*each + i) * 37 % (bodyMaxAttack + 2)
				body := pattern(size)
				resp, text := rawExchange(t, addr, []string{"POST", "PUT", "PATCH"}[i%3], "/things/1", reqID, rawBody{body: body, chunked: i%2 == 0})
				results <- sent{reqID, body, resp.StatusCode, resp.Header.Get(HeaderBackend), text}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	steps := []string{`{"cutover":"shadow"}`, `{"cutover":"canary","canary_percent":50}`, `{"cutover":"nats"}`, `{"cutover":"legacy"}`}
flip:
	for i := 0; i < 40; i++ {
		select {
		case <-done:
			break flip
		default:
		}
		if resp, text := putCutover(t, gw.AdminURL, "body", steps[i%len(steps)]); resp.StatusCode != 200 {
			t.Fatalf("PUT cutover %s: %d %s", steps[i%len(steps)], resp.StatusCode, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the clients did not finish")
	}
	close(results)
	natstest.Eventually(t, 10*time.Second, "the shadow copies to end", func() bool { return len(gw.shadowSem) == 0 })
	by := map[string]int{}
	for r := range results {
		by[r.backend]++
		for _, s := range seen.of(r.reqID) {
			if s.shadow {
				by["shadow copy"]++
			}
		}
		if len(r.body) > bodyMaxAttack {
			if r.status != http.StatusRequestEntityTooLarge {
				t.Errorf("%s: %d bytes over max_body got %d, want 413", r.reqID, len(r.body), r.status)
			}
			for _, s := range seen.of(r.reqID) {
				if s.readErr == "" {
					t.Errorf("%s: %s acted on %d bytes of a body over max_body", r.reqID, s.backend, s.n)
				}
			}
			continue
		}
		if r.status != 200 || r.text != r.backend+":"+bodyHash(r.body) {
			t.Errorf("%s: %d from %q: %q, want 200 with the body's hash", r.reqID, r.status, r.backend, r.text)
			continue
		}
		checkWholeOnce(t, seen, r.reqID, r.body, r.backend)
		for _, s := range seen.of(r.reqID) {
			if s.shadow && (s.n != len(r.body) || s.sum != bodyHash(r.body)) {
				t.Errorf("%s: the shadow copy carried %d bytes (%s), the client sent %d", r.reqID, s.n, s.sum[:12], len(r.body))
			}
		}
	}
	t.Logf("answered by %v", by)
}

// A body sent with Content-Encoding (gzip here) reaches a worker as the
// same bytes, so the worker must learn the encoding too, as the upstream
// does: without it, it takes the compressed bytes for a body in the
// request's Content-Type. The same holds for a shadow copy.
func TestEncodedBodyReachesWorkerWithItsEncoding(t *testing.T) {
	for _, stage := range []string{"nats", "shadow"} {
		t.Run(stage, func(t *testing.T) {
			b := startBodyRig(t, stage, "    shadow_unsafe: true\n")
			worker := natstest.Connect(t, b.ns)
			encodings := make(chan string, 1)
			respond(t, worker, "things.*", func(m *nats.Msg) *nats.Msg {
				encodings <- m.Header.Get("Content-Encoding")
				return &nats.Msg{Data: []byte("nats:" + bodyHash(m.Data))}
			})
			body := gzipped(t, []byte(`{"name":"ann","note":"`+strings.Repeat("x", 500)+`"}`))
			resp, text := rawExchange(t, b.addr, "POST", "/things/1", "enc-"+stage,
				rawBody{body: body, extra: "Content-Encoding: gzip\r\nContent-Type: application/json\r\n"})
			if resp.StatusCode != 200 {
				t.Fatalf("got %d: %s", resp.StatusCode, text)
			}
			select {
			case enc := <-encodings:
				if enc != "gzip" {
					t.Errorf("the worker got the gzip body with Content-Encoding %q, want \"gzip\": it cannot tell the body is compressed", enc)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the worker got no request")
			}
		})
	}
}

// rawBroken sends a request whose body misbehaves, written by send on
// the open connection after the head, and reads the answer.
func rawBroken(t *testing.T, addr, head string, send func(c *net.TCPConn)) (*http.Response, string) {
	t.Helper()
	conn := dialRaw(t, addr, 20*time.Second)
	defer conn.Close()
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	send(conn)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// A body that comes slowly but within its timeout reaches the upstream
// whole, through a fallback as when the route is at legacy; one that
// stalls half way, is cut by a half-close, or is shorter than its
// Content-Length is the same clear 400 or 408 on both, naming the route
// and the request (the client that half-closed is still reading), and no
// backend acts on its part.
func TestFallbackWithBrokenBodiesActsOnNoPart(t *testing.T) {
	for _, stage := range []string{"nats", "legacy"} {
		t.Run(stage, func(t *testing.T) { testBrokenBodies(t, stage) })
	}
}

func testBrokenBodies(t *testing.T, stage string) {
	// The route's and the upstream's timeouts bound how long a body may
	// take to arrive.
	b := startBodyRig(t, stage, "    fallback: true\n", func(cfg string) string {
		cfg = strings.Replace(cfg, "timeout: 2s}", "timeout: 1s}", 1)
		return strings.Replace(cfg, "timeout: 5s}", "timeout: 1s}", 1)
	})
	seen, addr := b.seen, b.addr
	body := pattern(2000)
	head := func(reqID, framing string) string {
		return "POST /things/1 HTTP/1.1\r\nHost: natsgate\r\nX-Request-Id: " + reqID + "\r\nX-Body-Sha256: " + bodyHash(body) + "\r\n" + framing + "\r\n"
	}
	cl := "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
	cases := []struct {
		name    string
		framing string
		send    func(c *net.TCPConn)
		status  int // 200: the upstream answers with the whole body
	}{
		{"slow but in time", cl, func(c *net.TCPConn) {
			for i := 0; i < 4; i++ {
				_, _ = c.Write(body[i*500 : (i+1)*500])
				time.Sleep(100 * time.Millisecond)
			}
		}, 200},
		{"stalls half way", cl, func(c *net.TCPConn) { _, _ = c.Write(body[:1000]) }, http.StatusRequestTimeout},
		{"half-closed half way", cl, func(c *net.TCPConn) { _, _ = c.Write(body[:1000]); _ = c.CloseWrite() }, http.StatusBadRequest},
		{"chunked, half-closed half way", "Transfer-Encoding: chunked\r\n", func(c *net.TCPConn) {
			_, _ = fmt.Fprintf(c, "%x\r\n%s\r\n", 1000, body[:1000])
			_ = c.CloseWrite()
		}, http.StatusBadRequest},
		{"chunked, stalls before the last chunk", "Transfer-Encoding: chunked\r\n", func(c *net.TCPConn) {
			_, _ = fmt.Fprintf(c, "%x\r\n%s\r\n", len(body), body)
		}, http.StatusRequestTimeout},
		{"chunked, malformed", "Transfer-Encoding: chunked\r\n", func(c *net.TCPConn) {
			_, _ = fmt.Fprintf(c, "%x\r\n%s\r\nzz\r\n", 1000, body[:1000])
		}, http.StatusBadRequest},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reqID := "broken-" + stage + strconv.Itoa(i)
			resp, text := rawBroken(t, addr, head(reqID, tc.framing), tc.send)
			if tc.status == 200 {
				if resp.StatusCode != 200 || text != "legacy:"+bodyHash(body) {
					t.Fatalf("got %d %q, want 200 from legacy with the body's hash", resp.StatusCode, text)
				}
				checkWholeOnce(t, seen, reqID, body, "legacy")
				return
			}
			checkProblem(t, resp, text, tc.status, "body")
			checkNoneActed(t, seen, reqID)
		})
	}
}
