package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rawUpstream is a legacy service written on raw TCP, so it can misbehave
// in ways net/http never would. The last path segment picks the behaviour:
//
//	ok         200 "ok\n", keep-alive
//	hang       reads the request and never answers
//	rst-head   half a status line, then a reset (SO_LINGER 0)
//	rst-body   a head promising 1000 bytes, 100 of them, then a reset
//	headbody   a HEAD answered with a 5-byte body after the head
//	badstatus  "HTTP/1.1 abc Nope"
//	slowread   reads the request body whole before answering 200
type rawUpstream struct {
	ln   net.Listener
	hits atomic.Int64
	mu   sync.Mutex
	conn []net.Conn
}

func startRawUpstream(t *testing.T) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conn = append(u.conn, c)
			u.mu.Unlock()
			go u.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for _, c := range u.conn {
			c.Close()
		}
		u.mu.Unlock()
	})
	return u
}

func (u *rawUpstream) URL() string { return "http://" + u.ln.Addr().String() }

func reset(c net.Conn) {
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close()
}

func (u *rawUpstream) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			c.Close()
			return
		}
		u.hits.Add(1)
		mode := req.URL.Path[strings.LastIndexByte(req.URL.Path, '/')+1:]
		if mode != "slowread" && mode != "hang" {
			_, _ = io.Copy(io.Discard, req.Body)
		}
		switch mode {
		case "hang":
			_, _ = io.Copy(io.Discard, c)
			return
		case "rst-head":
			_, _ = io.WriteString(c, "HTTP/1.1 200 O")
			time.Sleep(20 * time.Millisecond)
			reset(c)
			return
		case "rst-body":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"+strings.Repeat("x", 100))
			time.Sleep(20 * time.Millisecond)
			reset(c)
			return
		case "headbody":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
		case "badstatus":
			_, _ = io.WriteString(c, "HTTP/1.1 abc Nope\r\nContent-Length: 0\r\n\r\n")
			c.Close()
			return
		case "slowread":
			_, _ = io.Copy(io.Discard, req.Body)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
		default:
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
		}
	}
}

// attackGateway runs natsgate in front of upstreamURL with a small upstream
// breaker (5 requests, half failed, open 1s) and routes at every stage:
// a legacy catch-all, shadow, canary 0% and nats with fallback, all on the
// same upstream. The NATS side of each is the sample worker's users.{id}.get.
func attackGateway(t *testing.T, natsURL, upstreamURL, httpExtra string) *gateway {
	t.Helper()
	return startGateway(t, gatewayConfig{NATSURL: natsURL, HTTP: httpExtra, Admin: "  token: t0k3n", Body: fmt.Sprintf(`
upstreams:
  legacy:
    url: %q
    timeout: 1s
    breaker: {min_requests: 5, failure_ratio: 0.5, window: 10s, open_for: 1s}
routes:
  - name: shadowed
    method: "*"
    path: /shadow/{id}
    nats: {subject: "users.{id}.get", timeout: 300ms}
    upstream: legacy
    cutover: shadow
  - name: canary
    method: "*"
    path: /canary/{id}
    nats: {subject: "users.{id}.get", timeout: 300ms}
    upstream: legacy
    cutover: canary
    canary_percent: 0
  - name: fb
    method: "*"
    path: /fb/{id}
    nats: {subject: "nobody.{id}", timeout: 300ms}
    upstream: legacy
    cutover: nats
    fallback: true
  - name: get-user
    method: "*"
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 1s}
  - name: catch-all
    method: "*"
    path: /*
    upstream: legacy
`, upstreamURL)})
}

func upstreamBreaker(t *testing.T, client *http.Client, g *gateway) float64 {
	t.Helper()
	return scrape(t, client, g.AdminURL, "natsgate_breaker_state", `target="legacy"`)
}

// halfBody sends a request head declaring n bytes, n/2 of them, and closes
// its write side; it returns the status answered (0 if none within d).
func halfBody(t *testing.T, addr, method, path string, n int, d time.Duration) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", method, path, n, strings.Repeat("a", n/2))
	_ = c.(*net.TCPConn).CloseWrite()
	return readStatus(c)
}

// A client that sends half its declared body and half-closes is at fault:
// it gets a 4xx, never a 5xx, and however many do it, the upstream's
// breaker stays closed, so other clients on that upstream are served.
func TestHalfClosedBodyIsTheClientsFault(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	up := startRawUpstream(t)
	g := attackGateway(t, ns.URL(), up.URL(), "")
	client := newClient(t)
	for _, path := range []string{"/legacy/slowread", "/shadow/slowread", "/canary/slowread", "/users/7"} {
		for i := 0; i < 10; i++ {
			code, resp := halfBody(t, g.Addr, "POST", path, 100, 5*time.Second)
			if code < 400 || code > 499 {
				t.Errorf("POST %s with half its body, write side closed: %d, want a 4xx\n%s", path, code, resp)
				break
			}
		}
	}
	if v := upstreamBreaker(t, client, g); v != 0 {
		t.Errorf("upstream breaker state %v after client-side half bodies, want 0 (closed)", v)
	}
	if e := do(client, "GET", g.URL+"/legacy/ok", "", nil); e.status != 200 {
		t.Errorf("GET /legacy/ok after half-closed clients: %v, want 200", e)
	}
}

// A client that trickles its body a byte a second, slower than the
// timeout, gets 408 on a NATS route and on a legacy route alike; on the
// legacy side it is not counted against the upstream, so a handful of slow
// clients cannot open the upstream's breaker.
func TestSlowBodyDoesNotOpenTheUpstreamBreaker(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	up := startRawUpstream(t)
	g := attackGateway(t, ns.URL(), up.URL(), "")
	client := newClient(t)
	var wg sync.WaitGroup
	codes := make([]int, 8)
	paths := []string{"/legacy/slowread", "/shadow/slowread", "/canary/slowread", "/users/7"}
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n", paths[i%len(paths)])
			done := make(chan struct{})
			go func() {
				defer close(done)
				for j := 0; j < 8; j++ {
					if _, err := c.Write([]byte("a")); err != nil {
						return
					}
					time.Sleep(time.Second)
				}
			}()
			codes[i], _ = readStatus(c)
			<-done
		}()
	}
	wg.Wait()
	for i, code := range codes {
		if code != 408 {
			t.Errorf("POST %s at a byte a second: %d, want 408", paths[i%len(paths)], code)
		}
	}
	if v := upstreamBreaker(t, client, g); v != 0 {
		t.Errorf("upstream breaker state %v after slow clients, want 0 (closed)", v)
	}
	if e := do(client, "GET", g.URL+"/legacy/ok", "", nil); e.status != 200 {
		t.Errorf("GET /legacy/ok after slow clients: %v, want 200", e)
	}
}

// Expect: 100-continue with no body following: the client gets an answer
// (the 100 and then 408, or a final status at once) and the connection is
// not held past the timeout.
func TestExpectContinueWithoutBody(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	up := startRawUpstream(t)
	g := attackGateway(t, ns.URL(), up.URL(), "")
	for _, path := range []string{"/users/7", "/legacy/slowread", "/shadow/slowread"} {
		start := time.Now()
		c, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(8 * time.Second))
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", path)
		br := bufio.NewReader(c)
		var final int
		for final == 0 || final == 100 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Errorf("POST %s with Expect: 100-continue and no body: no final answer after %v: %v", path, time.Since(start), err)
				break
			}
			final = resp.StatusCode
			resp.Body.Close()
		}
		c.Close()
		if final != 0 && final != 408 && final != 417 {
			t.Errorf("POST %s with Expect: 100-continue and no body: %d, want 408 (or 417)", path, final)
		}
	}
}

// An upstream that misbehaves on the wire is a failure of that upstream;
// the breaker opens after enough of them on every stage that reaches the
// upstream, answers at once while open, and closes again once the
// upstream answers well.
func TestUpstreamWireFaultsOpenAndCloseTheBreaker(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	for _, mode := range []string{"hang", "rst-head", "rst-body", "badstatus"} {
		for _, prefix := range []string{"/legacy", "/shadow", "/canary", "/fb"} {
			t.Run(mode+prefix, func(t *testing.T) {
				up := startRawUpstream(t)
				g := attackGateway(t, ns.URL(), up.URL(), "")
				client := newClient(t)
				for i := 0; i < 8; i++ {
					e := do(client, "GET", g.URL+prefix+"/"+mode, "", nil)
					if e.err == nil && e.status < 500 {
						t.Errorf("GET %s/%s: %v, want a 5xx or a cut connection", prefix, mode, e)
					}
					if e.took() > 3*time.Second {
						t.Errorf("GET %s/%s took %v (upstream timeout 1s)", prefix, mode, e.took())
					}
				}
				if v := upstreamBreaker(t, client, g); v != 2*4 {
					// four routes name the upstream; each exports its state
					t.Errorf("after 8 %s from the upstream: breaker states sum %v, want 8 (open on every route)", mode, v)
				}
				eventually(t, 10*time.Second, "the upstream breaker to close again", func() bool {
					e := do(client, "GET", g.URL+prefix+"/ok", "", nil)
					return e.status == 200 && upstreamBreaker(t, client, g) == 0
				})
			})
		}
	}
}

// A HEAD answered with a body leaves bytes on the upstream connection; they
// must never become the answer to another client's request, nor count
// against the upstream.
func TestHeadWithBodyDoesNotPoisonTheNextRequest(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	up := startRawUpstream(t)
	g := attackGateway(t, ns.URL(), up.URL(), "")
	client := newClient(t)
	l := startLoad(4, 100, 20*time.Second, func(c, i int) exchange {
		if c%2 == 0 {
			return do(client, "HEAD", g.URL+"/legacy/headbody", "", nil)
		}
		return do(client, "GET", g.URL+"/legacy/ok", "", nil)
	})
	res, _ := l.Wait(30 * time.Second)
	bad := 0
	for _, e := range res {
		if e.err != nil || e.status != 200 || (e.client%2 == 1 && e.body != "ok\n") {
			if bad < 5 {
				t.Errorf("%v", e)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d requests not answered 200 beside HEADs answered with a body", bad, len(res))
	}
	if v := upstreamBreaker(t, client, g); v != 0 {
		t.Errorf("upstream breaker state %v, want 0", v)
	}
}

// A client that declares a body on a legacy route, sends a few bytes and
// stalls is answered (408, or 504 once the upstream timeout passes) and its
// connection closed within a few seconds, never held open waiting for the
// rest; and it is not counted against the upstream's breaker.
func TestStalledUploadOnLegacyRouteIsAnswered(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	up := startRawUpstream(t)
	g := attackGateway(t, ns.URL(), up.URL(), "")
	client := newClient(t)
	for _, path := range []string{"/legacy/slowread", "/shadow/slowread", "/canary/slowread"} {
		c, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789", path)
		code, resp := readStatus(c)
		c.Close()
		if code != 408 && code != 504 {
			t.Errorf("POST %s declaring 1000 bytes, 10 sent, then stalled: after %v got %d, want 408 or 504 within the upstream timeout (1s) \n%s", path, time.Since(start).Round(time.Millisecond), code, resp)
		}
	}
	// Six more stalled uploads at once, enough for min_requests: the
	// breaker must stay closed while they are cut, and after.
	var conns []net.Conn
	for i := 0; i < 6; i++ {
		c, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /legacy/slowread HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second) // past the upstream timeout; then the clients give up
	for _, c := range conns {
		c.Close()
	}
	if took, opened := within(3*time.Second, func() bool { return upstreamBreaker(t, client, g) != 0 }); opened {
		t.Errorf("upstream breaker left closed %v after 6 clients stalled their uploads and went away: clients opened the upstream's breaker", took.Round(time.Millisecond))
	}
	if e := do(client, "GET", g.URL+"/legacy/ok", "", nil); e.status != 200 {
		t.Errorf("GET /legacy/ok after stalled uploads: %v, want 200", e)
	}
}

var _ = syscall.SIGTERM
