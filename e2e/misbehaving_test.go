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

	"github.com/nats-io/nats.go"
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

// misbehavingGateway runs natsgate in front of upstreamURL with a small upstream
// breaker (5 requests, half failed, open 1s) and routes at every stage:
// a legacy catch-all, shadow, canary 0% and nats with fallback, all on the
// same upstream. The NATS side of each is the sample worker's users.{id}.get.
func misbehavingGateway(t *testing.T, natsURL, upstreamURL, httpExtra string) *gateway {
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
	g := misbehavingGateway(t, ns.URL(), up.URL(), "")
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
	upstreamStillServes(t, client, g, "after half-closed clients")
}

// A client that trickles its body a byte a second, slower than the
// timeout, gets 408 on a NATS route and on a legacy route alike; on the
// legacy side it is not counted against the upstream, so a handful of slow
// clients cannot open the upstream's breaker.
func TestSlowBodyDoesNotOpenTheUpstreamBreaker(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	up := startRawUpstream(t)
	g := misbehavingGateway(t, ns.URL(), up.URL(), "")
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
	upstreamStillServes(t, client, g, "after slow clients")
}

// Expect: 100-continue with no body following: the client gets an answer
// (the 100 and then 408, or a final status at once) and the connection is
// not held past the timeout.
func TestExpectContinueWithoutBody(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	up := startRawUpstream(t)
	g := misbehavingGateway(t, ns.URL(), up.URL(), "")
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
				g := misbehavingGateway(t, ns.URL(), up.URL(), "")
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
	g := misbehavingGateway(t, ns.URL(), up.URL(), "")
	client := newClient(t)
	l := startLoad(8, 500, 20*time.Second, func(c, i int) exchange {
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
	g := misbehavingGateway(t, ns.URL(), up.URL(), "")
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

// A worker that answers every request twice, and one request in five only
// after the route's timeout, never crosses answers between clients: each
// 200 carries the client's own X-Request-Id and the worker's echo of it.
func TestDuplicateAndLateRepliesNeverCrossClients(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, err = nc.QueueSubscribe("echo.*", "q", func(m *nats.Msg) {
		id := m.Header.Get("X-Request-Id")
		n := m.Subject[len("echo."):]
		go func() {
			if strings.HasSuffix(n, "0") || strings.HasSuffix(n, "5") {
				time.Sleep(400 * time.Millisecond) // past the 200ms timeout
			}
			_ = m.Respond([]byte(id))
			time.Sleep(time.Millisecond)
			_ = m.Respond([]byte("second answer to " + id))
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: `
routes:
  - name: echo
    method: GET
    path: /echo/{n}
    nats: {subject: "echo.{n}", timeout: 200ms}
    breaker: {min_requests: 1000000, failure_ratio: 1, window: 1s, open_for: 1s}
`})
	client := newClient(t)
	var crossed atomic.Int64
	l := startLoad(16, 150, 40*time.Second, func(c, i int) exchange {
		id := fmt.Sprintf("client-%d-req-%d", c, i)
		e := do(client, "GET", fmt.Sprintf("%s/echo/%d", g.URL, c*1000+i), "", http.Header{"X-Request-Id": {id}})
		if e.status == 200 && e.body != id {
			if crossed.Add(1) <= 5 {
				t.Errorf("request %s answered %q", id, e.body)
			}
		}
		return e
	})
	res, _ := l.Wait(60 * time.Second)
	other := 0
	for _, e := range res {
		if e.err != nil || (e.status != 200 && e.status != 504) {
			if other++; other <= 5 {
				t.Errorf("want 200 or 504: %v", e)
			}
		}
	}
	t.Logf("%d requests, %d 200, %d 504, %d crossed", len(res), l.Count(200), l.Count(504), crossed.Load())
	if crossed.Load() > 0 || other > 0 {
		t.Errorf("%d answers crossed between clients, %d unexpected outcomes", crossed.Load(), other)
	}
}

// flapGateway runs natsgate with get-profile on the legacy sample service
// and the sample worker, fallback on, starting at legacy.
func flapGateway(t *testing.T) (*natsServer, *gateway) {
	t.Helper()
	ns := startNATS(t, natsOptions{jetstream: true})
	startWorker(t, ns.URL(), "w1", time.Second)
	startWorker(t, ns.URL(), "w2", time.Second)
	legacyAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	lp := startProc(t, "legacy", bin.worker, "--legacy", legacyAddr)
	eventually(t, 10*time.Second, "legacy service", func() bool { return strings.Contains(lp.Output(), "legacy REST service") })
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: "  shutdown_grace: 3s", Admin: "  token: t0k3n", Body: fmt.Sprintf(`
upstreams:
  legacy: {url: "http://%s", timeout: 2s}
routes:
  - name: get-profile
    method: GET
    path: /profiles/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
    upstream: legacy
    cutover: legacy
    fallback: true
    shadow_ignore: [served_by]
`, legacyAddr)})
	return ns, g
}

func putStage(client *http.Client, adminURL, body string) int {
	req, _ := http.NewRequest("PUT", adminURL+"/admin/routes/get-profile/cutover", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer t0k3n")
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A route's stage flapped legacy → nats → shadow → canary twenty times a
// second under steady load: every request is answered 200, and goroutines
// come back to where they were.
func TestStageFlappingUnderLoad(t *testing.T) {
	_, g := flapGateway(t)
	client := newClient(t)
	for i := 0; i < 20; i++ {
		do(client, "GET", g.URL+"/profiles/7", "", nil)
	}
	before := scrape(t, client, g.AdminURL, "go_goroutines")
	l := startLoad(8, 100000, 20*time.Second, func(c, i int) exchange {
		return do(client, "GET", fmt.Sprintf("%s/profiles/%d", g.URL, 1+(c*100+i)%1000), "", nil)
	})
	stages := []string{`{"cutover":"legacy"}`, `{"cutover":"nats"}`, `{"cutover":"shadow"}`, `{"cutover":"canary","canary_percent":50}`}
	tick := time.NewTicker(50 * time.Millisecond)
	bad := 0
	for i := 0; i < 200; i++ {
		<-tick.C
		if code := putStage(client, g.AdminURL, stages[i%len(stages)]); code != 200 {
			if bad++; bad <= 3 {
				t.Errorf("PUT %s: %d", stages[i%len(stages)], code)
			}
		}
	}
	tick.Stop()
	res := l.Stop()
	failed := 0
	for _, e := range res {
		if e.err != nil || e.status != 200 {
			if failed++; failed <= 5 {
				t.Errorf("while flapping: %v", e)
			}
		}
	}
	t.Logf("%d requests while flapping, %d failed", len(res), failed)
	client.CloseIdleConnections()
	eventually(t, 10*time.Second, "goroutines back", func() bool {
		return scrape(t, client, g.AdminURL, "go_goroutines") <= before+20
	})
	g.Signal(syscall.SIGTERM)
	if code, ok := g.Wait(5 * time.Second); !ok || code != 0 {
		t.Errorf("SIGTERM after flapping: exited %v, code %d; want 0 within the 3s grace", ok, code)
	}
}

// A few thousand idle keep-alive connections cost a bounded amount of
// memory and goroutines, and SIGTERM with them open exits 0 within the
// grace.
func TestManyIdleKeepAlives(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: "  shutdown_grace: 3s", Body: `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
`})
	client := newClient(t)
	rss0 := g.Memory("VmRSS")
	gor0 := scrape(t, client, g.AdminURL, "go_goroutines")
	const n = 3000
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /users/%d HTTP/1.1\r\nHost: x\r\n\r\n", 1+i%1000)
		if code, _ := readStatus(c); code != 200 {
			t.Fatalf("connection %d: %d", i, code)
		}
	}
	rss1 := g.Memory("VmRSS")
	gor1 := scrape(t, client, g.AdminURL, "go_goroutines")
	t.Logf("%d idle keep-alives: RSS %d MiB -> %d MiB, goroutines %v -> %v", n, rss0>>20, rss1>>20, gor0, gor1)
	if gor1-gor0 > 2*n {
		t.Errorf("%v goroutines for %d idle connections", gor1-gor0, n)
	}
	if rss1-rss0 > 200<<20 {
		t.Errorf("%d MiB for %d idle connections", (rss1-rss0)>>20, n)
	}
	if e := do(client, "GET", g.URL+"/users/1", "", nil); e.status != 200 {
		t.Errorf("a new client beside %d idle ones: %v", n, e)
	}
	start := time.Now()
	g.Signal(syscall.SIGTERM)
	code, ok := g.Wait(5 * time.Second)
	if !ok || code != 0 {
		t.Errorf("SIGTERM with %d idle keep-alives: exited %v code %d after %v; want 0 within 3s", n, ok, code, time.Since(start))
	}
}

// SIGTERM while requests are stuck, each kind on its own: on an upstream
// that never answers, on a legacy route whose client stalled its upload, on
// a NATS route whose client stalled its upload, and on a shadow route
// whose client asked for 100-continue and sent nothing. natsgate exits 0
// within http.shutdown_grace, as "Running it" in docs/operations.md promises.
func TestSIGTERMWithStuckClientsAndUpstream(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	for _, c := range []struct{ name, req string }{
		{"upstream-never-answers", "GET /legacy/hang HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"legacy-stalled-upload", "POST /legacy/slowread HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"},
		{"nats-stalled-upload", "POST /users/7 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"},
		{"shadow-expect-continue", "POST /shadow/slowread HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := startRawUpstream(t)
			g := misbehavingGateway(t, ns.URL(), up.URL(), "  shutdown_grace: 3s")
			for i := 0; i < 4; i++ {
				conn, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				_, _ = conn.Write([]byte(c.req))
			}
			time.Sleep(1500 * time.Millisecond) // past the upstream timeout (1s)
			start := time.Now()
			g.Signal(syscall.SIGTERM)
			code, ok := g.Wait(8 * time.Second)
			took := time.Since(start)
			if !ok || code != 0 || took > 4*time.Second {
				t.Errorf("SIGTERM with 4 clients stuck (%s): exited %v, code %d, after %v; want 0 within the 3s grace", c.name, ok, code, took.Round(time.Millisecond))
			}
		})
	}
}

// natsgate started while its NATS server is down either exits non-zero
// saying why, or waits and serves once NATS is up; it never hangs silent.
func TestStartedWhileNATSIsDown(t *testing.T) {
	ns := newNATS(t, natsOptions{jetstream: true})
	g := launchGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
`})
	client := &http.Client{Timeout: time.Second}
	time.Sleep(3 * time.Second)
	if !g.Running() {
		t.Logf("natsgate exited %d with NATS down:\n%s", g.code, strings.ReplaceAll(tail(g.Output(), 600), `{"time`, `|{"time`))
		if g.code == 0 {
			t.Errorf("natsgate exited 0 with NATS down")
		}
		return
	}
	adminUp := httpStatus(client, g.AdminURL+"/healthz")
	ready := httpStatus(client, g.AdminURL+"/readyz")
	t.Logf("NATS down 3s: natsgate running, /healthz %d, /readyz %d, output:\n%s", adminUp, ready, tail(g.Output(), 600))
	ns.Start()
	startWorker(t, ns.URL(), "w1", time.Second)
	if took, ok := within(10*time.Second, func() bool { return httpStatus(client, g.AdminURL+"/readyz") == 200 }); !ok {
		t.Fatalf("natsgate not ready %v after NATS came up (started while NATS was down); output:\n%s", took, tail(g.Output(), 1500))
	}
	eventually(t, 15*time.Second, "GET /users/7 200", func() bool { return httpStatus(client, g.URL+"/users/7") == 200 })
}

// nats-server killed and restarted twice within a second: the route serves
// again soon after, with no restart of natsgate.
func TestNATSDoubleRestart(t *testing.T) {
	ns := startNATS(t, natsOptions{jetstream: true})
	startWorker(t, ns.URL(), "w1", time.Second, "--reconnect-wait", "100ms")
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
`})
	client := newClient(t)
	l := startLoad(4, 100000, 30*time.Second, func(c, i int) exchange {
		return do(client, "GET", g.URL+"/users/7", "", nil)
	})
	defer l.Stop()
	eventually(t, 15*time.Second, "load", func() bool { return l.Count(200) > 20 })
	ns.Kill()
	ns.StartNoWait()
	time.Sleep(300 * time.Millisecond)
	ns.Kill()
	ns.Start()
	back := time.Now()
	if took, ok := within(10*time.Second, func() bool { return httpStatus(client, g.URL+"/users/7") == 200 }); !ok {
		t.Fatalf("GET /users/7 not 200 %v after the second restart", took)
	} else {
		t.Logf("serving %v after the second restart", took)
	}
	n := len(l.Snapshot())
	time.Sleep(time.Second)
	res := l.Stop()
	for _, e := range res[n:] {
		if e.start.After(back.Add(5*time.Second)) && e.status != 200 {
			t.Errorf("long after the restarts: %v", e)
		}
		if e.err != nil || e.took() > 3*time.Second {
			t.Errorf("request hung or broke: %v", e)
		}
	}
	g.Signal(syscall.SIGTERM)
	if code, ok := g.Wait(20 * time.Second); !ok || code != 0 {
		t.Errorf("SIGTERM: exited %v code %d", ok, code)
	}
}

// The JetStream stream deleted while POSTs run: every POST is answered
// promptly, 202 before and 503 after, never a 500 or a hang.
func TestStreamDeletedWhilePosting(t *testing.T) {
	ns := startNATS(t, natsOptions{jetstream: true})
	natsExtra, body := ordersConfig(1)
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: natsExtra, HTTP: "  shutdown_grace: 3s", Body: body})
	client := newClient(t)
	l := startLoad(4, 100000, 20*time.Second, func(c, i int) exchange {
		return postOrder(client, g.URL, fmt.Sprintf("k-%d-%d", c, i))
	})
	defer l.Stop()
	eventually(t, 15*time.Second, "202s", func() bool { return l.Count(202) > 20 })
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	if err := js.DeleteStream("ORDERS"); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	time.Sleep(2 * time.Second)
	g.Signal(syscall.SIGTERM)
	code, ok := g.Wait(6 * time.Second)
	res := l.Stop()
	counts := map[int]int{}
	for _, e := range res {
		counts[e.status]++
		if e.status >= 500 && e.status != 503 && e.status != 504 {
			t.Errorf("after the stream was deleted: %v", e)
		}
		if e.took() > 3*time.Second {
			t.Errorf("slow answer: %v", e)
		}
		if e.start.After(deleted.Add(500*time.Millisecond)) && e.status == 202 && e.end.Before(deleted.Add(2*time.Second)) {
			t.Errorf("202 after the stream was deleted: %v", e)
		}
	}
	t.Logf("statuses: %v", counts)
	for _, e := range res {
		if e.status != 202 {
			t.Logf("%v (%.3fs after delete)", e, e.start.Sub(deleted).Seconds())
		}
	}
	if !ok || code != 0 {
		t.Errorf("SIGTERM: exited %v code %d", ok, code)
	}
}

// upstreamStillServes checks that what came before (named by after) left
// the upstream's breaker closed and the legacy route serving.
func upstreamStillServes(t *testing.T, client *http.Client, g *gateway, after string) {
	t.Helper()
	if v := upstreamBreaker(t, client, g); v != 0 {
		t.Errorf("upstream breaker state %v %s, want 0 (closed)", v, after)
	}
	if e := do(client, "GET", g.URL+"/legacy/ok", "", nil); e.status != 200 {
		t.Errorf("GET /legacy/ok %s: %v, want 200", after, e)
	}
}
