package gateway

// Tests of the legacy side (issue 9, faults 3 and 8): a legacy 5xx is an
// answer, a body the upstream cuts short is recorded and breaks the
// client's response, 1xx answers pass through, upgraded connections
// outlive the upstream timeout, and each answer carries one request id.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// misbehavingUpstream is a real HTTP upstream whose paths each fail in one
// way. Every handler that holds its request ends when the request's
// context does (natsgate gave up) or when the test ends.
type misbehavingUpstream struct {
	*httptest.Server
	mu     sync.Mutex
	seenID []string // X-Request-Id as each request to /ids arrived
}

func startMisbehaving(t *testing.T) *misbehavingUpstream {
	t.Helper()
	u := &misbehavingUpstream{}
	stop := make(chan struct{})
	hold := func(r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("/broken/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "legacy broke", http.StatusInternalServerError)
	})
	mux.HandleFunc("/ids", func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seenID = append(u.seenID, r.Header.Get("X-Request-Id"))
		u.mu.Unlock()
		w.Header().Set("X-Request-Id", "the-upstream-own-id")
		w.Header().Set(HeaderBackend, "nats")
		_, _ = io.WriteString(w, "ids")
	})
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "done")
	})
	mux.HandleFunc("/hints-then-nothing", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints) // net/http sends a 1xx at once
		hold(r)
	})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		_, _ = w.Write(make([]byte, 100))
		http.NewResponseController(w).Flush()
		hold(r)
	})
	mux.HandleFunc("/endless", func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 1024)
		for i := 0; i < 5000; i++ { // bounded: 5 MiB at most
			if _, err := w.Write(chunk); err != nil {
				return
			}
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("/early-close", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
		_, _ = brw.Write(make([]byte, 100))
		_ = brw.Flush()
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "upgrade to echo", http.StatusUpgradeRequired)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Request-Id: the-upstream-own-id\r\n\r\n")
		_ = brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = brw.WriteString("echo: " + line)
			if brw.Flush() != nil {
				return
			}
		}
	})
	u.Server = httptest.NewServer(mux)
	t.Cleanup(u.Close)
	t.Cleanup(func() { close(stop) }) // runs first: lets held handlers end
	return u
}

// legacyTimeout is the upstream timeout of the legacy tests: short, so a
// timeout case is quick, and far above a loopback answer.
const legacyTimeout = 300 * time.Millisecond

// startLegacyGateway serves every path of upstream through one catch-all
// legacy route, "legacy-api", logging JSON to the returned buffer.
func startLegacyGateway(t *testing.T, upstream string, httpExtra string) (*testGateway, *syncBuffer) {
	t.Helper()
	ns := natstest.RunServer(t)
	logBuf := &syncBuffer{}
	gw := startGatewayLogging(t, ns, fmt.Sprintf(`
log: {format: json, level: info}
http:
  listen: 127.0.0.1:0
%s
upstreams:
  legacy: {url: %q, timeout: %s}
routes:
  - name: legacy-api
    method: "*"
    path: /*
    upstream: legacy
`, httpExtra, upstream, legacyTimeout), logBuf)
	return gw, logBuf
}

// accessLine waits for the access log line of a request id.
func accessLine(t *testing.T, log *syncBuffer, reqID string) map[string]any {
	t.Helper()
	var line map[string]any
	natstest.Eventually(t, 15*time.Second, "the access log line of "+reqID, func() bool {
		for _, l := range strings.Split(log.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" && m["request_id"] == reqID {
				line = m
				return true
			}
		}
		return false
	})
	return line
}

// counter sums a counter family's samples whose labels include all of
// labels; a family not registered sums to 0.
func counter(t *testing.T, reg *prometheus.Registry, family string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// Fault 3: a legacy application's 5xx is its answer, passed on; it says
// nothing about whether the upstream is reachable, so it never opens the
// upstream's breaker for the other paths.
func TestLegacy5xxIsPassedOnAndLeavesTheBreakerClosed(t *testing.T) {
	up := startMisbehaving(t)
	gw, _ := startLegacyGateway(t, up.URL, "")
	for i := 0; i < 50; i++ {
		resp, body := do(t, "GET", gw.URL+"/broken/thing", nil, nil)
		if resp.StatusCode != 500 || !strings.Contains(body, "legacy broke") {
			t.Fatalf("request %d to the failing path: %d %q, want the upstream's own 500", i, resp.StatusCode, body)
		}
	}
	resp, body := do(t, "GET", gw.URL+"/ok/other", nil, nil)
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("another path on the same upstream after 50 500s: %d %q, want 200 ok", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(gw.metrics.BreakerState.WithLabelValues("legacy-api", "legacy")); got != breakerClosed {
		t.Fatalf("natsgate_breaker_state for the upstream = %v, want 0 (closed)", got)
	}
}

// Fault 8: the client sees natsgate's request id once and the backend
// once, whatever the upstream sends, and the upstream sees natsgate's id.
func TestLegacyAnswerCarriesOneRequestID(t *testing.T) {
	up := startMisbehaving(t)
	gw, _ := startLegacyGateway(t, up.URL, "")
	for _, tc := range []struct {
		name, sent string
		kept       bool
	}{
		{"valid client id", "client-id-7", true},
		{"no client id", "", false},
		{"invalid client id", "has space", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.sent != "" {
				h.Set("X-Request-Id", tc.sent)
			}
			resp, body := do(t, "GET", gw.URL+"/ids", nil, h)
			if resp.StatusCode != 200 || body != "ids" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			ids := resp.Header.Values("X-Request-Id")
			if len(ids) != 1 || ids[0] == "the-upstream-own-id" {
				t.Fatalf("X-Request-Id values %q, want exactly natsgate's one", ids)
			}
			if tc.kept && ids[0] != tc.sent {
				t.Errorf("X-Request-Id %q, want the client's valid %q kept", ids[0], tc.sent)
			}
			if !tc.kept && ids[0] == tc.sent {
				t.Errorf("X-Request-Id %q: natsgate should have made a new one", ids[0])
			}
			if b := resp.Header.Values(HeaderBackend); len(b) != 1 || b[0] != "legacy" {
				t.Errorf("%s values %q, want exactly [legacy]", HeaderBackend, b)
			}
			up.mu.Lock()
			seen := up.seenID[len(up.seenID)-1]
			up.mu.Unlock()
			if seen != ids[0] {
				t.Errorf("the upstream saw X-Request-Id %q, the client got %q: want the same, so the two logs join", seen, ids[0])
			}
		})
	}
}

// Fault 8: a 103 Early Hints is passed on and is not the final status; a
// 103 followed by nothing ends in a 504 problem.
func TestLegacyEarlyHints(t *testing.T) {
	up := startMisbehaving(t)
	gw, log := startLegacyGateway(t, up.URL, "")

	var mu sync.Mutex
	var informational []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		informational = append(informational, code)
		mu.Unlock()
		return nil
	}}
	get := func(path, id string) (*http.Response, string) {
		req, err := http.NewRequest("GET", gw.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		req.Header.Set("X-Request-Id", id)
		return send(t, req)
	}

	resp, body := get("/hints", "hints-1")
	if resp.StatusCode != 200 || body != "done" {
		t.Fatalf("103 then 200: the client got %d %q, want 200 done", resp.StatusCode, body)
	}
	mu.Lock()
	if len(informational) != 1 || informational[0] != 103 {
		t.Errorf("the client saw 1xx %v, want [103]", informational)
	}
	mu.Unlock()
	if ids := resp.Header.Values("X-Request-Id"); len(ids) != 1 || ids[0] != "hints-1" {
		t.Errorf("the final answer's X-Request-Id %q, want [hints-1]", ids)
	}
	if l := accessLine(t, log, "hints-1"); l["status"] != float64(200) {
		t.Errorf("access log status %v, want 200 (the final status, not the 103)", l["status"])
	}
	if n := counter(t, gw.Registry, "natsgate_http_requests_total", map[string]string{"route": "legacy-api", "code": "200"}); n != 1 {
		t.Errorf("natsgate_http_requests_total{code=200} = %v, want 1", n)
	}
	if n := counter(t, gw.Registry, "natsgate_http_requests_total", map[string]string{"route": "legacy-api", "code": "103"}); n != 0 {
		t.Errorf("natsgate_http_requests_total{code=103} = %v, want 0", n)
	}

	resp, body = get("/hints-then-nothing", "hints-2")
	checkProblem(t, resp, body, http.StatusGatewayTimeout, "legacy-api")
	if l := accessLine(t, log, "hints-2"); l["status"] != float64(504) {
		t.Errorf("access log status %v, want 504", l["status"])
	}
}

// Fault 8: a body the upstream cuts short breaks the client's response
// (never a clean truncated one), and is recorded: an access line at error
// level with the status sent and the error, a count in
// natsgate_upstream_errors_total, and a failure for the upstream's breaker.
// httputil's own log lines go to the JSON log, naming the route.
func TestLegacyBodyCutShort(t *testing.T) {
	up := startMisbehaving(t)
	gw, log := startLegacyGateway(t, up.URL, "")
	for _, path := range []string{"/stall", "/endless", "/early-close"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			id := "cut" + strings.ReplaceAll(path, "/", "-")
			before := counter(t, gw.Registry, "natsgate_upstream_errors_total", map[string]string{"route": "legacy-api", "kind": "body_cut"})
			req, _ := http.NewRequest("GET", gw.URL+path, nil)
			req.Header.Set("X-Request-Id", id)
			client := &http.Client{Timeout: 10 * time.Second}
			// Broken either way: a head and a body that breaks off, or,
			// where head and body were still in the connection's buffer
			// when the upstream broke off (a small answer goes out in one
			// write), a connection closed with no answer at all.
			resp, err := client.Do(req)
			if err == nil {
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Fatalf("the client read %d bytes and a clean end: want a broken response", n)
				}
			}
			l := accessLine(t, log, id)
			if l["level"] != "ERROR" || l["status"] != float64(200) || !strings.Contains(fmt.Sprint(l["error"]), "upstream body cut short after") {
				t.Errorf("access line %v: want level ERROR, status 200, error \"upstream body cut short after N bytes\"", l)
			}
			if b, _ := l["bytes"].(float64); b < 100 {
				t.Errorf("access line bytes %v, want the bytes sent (at least 100)", l["bytes"])
			}
			after := counter(t, gw.Registry, "natsgate_upstream_errors_total", map[string]string{"route": "legacy-api", "kind": "body_cut"})
			if after != before+1 {
				t.Errorf("natsgate_upstream_errors_total{kind=body_cut} went %v → %v, want +1", before, after)
			}
		})
	}
	for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("a log line that is not JSON: %q", l)
		}
	}
	if !strings.Contains(log.String(), `"msg":"httputil: ReverseProxy read error during body copy`) ||
		!strings.Contains(log.String(), `"route":"legacy-api"`) {
		t.Errorf("httputil's copy error is not in the JSON log with the route:\n%s", log.String())
	}

	// Each cut body is an upstream failure: enough of them open the
	// breaker (however it is tuned), which a cut counted as a success
	// never would.
	opened := false
	for i := 0; i < 100 && !opened; i++ {
		resp, err := http.Get(gw.URL + "/early-close")
		if err != nil {
			continue // the answer broke off before its head went out
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		opened = resp.StatusCode == http.StatusServiceUnavailable
	}
	if !opened {
		t.Fatalf("100 bodies cut short did not open the upstream's breaker: they are counted as successes")
	}
}

// Fault 8: a connection upgraded through a legacy route is not cut at the
// upstream timeout, which covers only getting the 101; it ends after
// http.idle_timeout without traffic.
func TestLegacyUpgradeOutlivesTheUpstreamTimeout(t *testing.T) {
	up := startMisbehaving(t)
	const idle = time.Second
	gw, log := startLegacyGateway(t, up.URL, fmt.Sprintf("  idle_timeout: %s", idle))

	conn, err := net.DialTimeout("tcp", gw.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // only catches a hang
	_, _ = io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Request-Id: upgrade-1\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if ids := resp.Header.Values("X-Request-Id"); len(ids) != 1 || ids[0] != "upgrade-1" {
		t.Errorf("the 101's X-Request-Id %q, want [upgrade-1]", ids)
	}
	// Lines across several upstream timeouts, each gap well inside the
	// idle limit.
	start := time.Now()
	for i := 0; time.Since(start) < 4*legacyTimeout; i++ {
		line := fmt.Sprintf("line %d\n", i)
		if _, err := io.WriteString(conn, line); err != nil {
			t.Fatalf("after %v: writing %q: %v", time.Since(start), line, err)
		}
		got, err := br.ReadString('\n')
		if err != nil || got != "echo: "+line {
			t.Fatalf("after %v (upstream timeout %v): read %q, %v; want the echo", time.Since(start), legacyTimeout, got, err)
		}
		time.Sleep(legacyTimeout / 3)
	}
	// Then silence: natsgate closes the connection after the idle limit.
	_, err = br.ReadString('\n')
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("an idle upgraded connection was not closed within 30s (idle limit %v)", idle)
	}
	if err == nil {
		t.Fatalf("read data from an idle connection")
	}
	if l := accessLine(t, log, "upgrade-1"); l["status"] != float64(101) {
		t.Errorf("access line status %v, want 101", l["status"])
	}
}

// Fault 3: a client's fault says nothing about the upstream: bodies over
// max_body (declared or not) and clients that leave mid-upload never open
// the upstream's breaker.
func TestLegacyClientFaultsLeaveTheBreakerClosed(t *testing.T) {
	up := startMisbehaving(t)
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, fmt.Sprintf(`
upstreams:
  legacy: {url: %q, timeout: 2s}
routes:
  - name: legacy-api
    method: "*"
    path: /*
    upstream: legacy
    max_body: 1KiB
`, up.URL))
	big := strings.Repeat("x", 64<<10)
	for i := 0; i < 30; i++ {
		// Undeclared length (chunked): found over the limit mid-way.
		resp, body := do(t, "POST", gw.URL+"/ok/upload", io.MultiReader(strings.NewReader(big)), nil)
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked body over max_body, request %d: %d %s, want 413", i, resp.StatusCode, body)
		}
	}
	for i := 0; i < 30; i++ {
		// A client that sends half a declared body and leaves.
		conn, err := net.Dial("tcp", gw.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(conn, "POST /ok/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 900\r\n\r\n"+strings.Repeat("y", 300))
		time.Sleep(5 * time.Millisecond)
		conn.Close()
	}
	resp, body := do(t, "GET", gw.URL+"/ok/after", nil, nil)
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("after client faults: %d %q, want 200 ok", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(gw.metrics.BreakerState.WithLabelValues("legacy-api", "legacy")); got != breakerClosed {
		t.Fatalf("natsgate_breaker_state for the upstream = %v, want 0 (closed)", got)
	}
}

// A failed upstream exchange tells the client which upstream failed, in
// natsgate's words: never the transport's error, which names the
// upstream's address and, over TLS, its certificate. The log has the cause.
func TestLegacyFailureHidesTheTransportsError(t *testing.T) {
	ns := natstest.RunServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	var logs strings.Builder
	var mu sync.Mutex
	gw := startGatewayLogging(t, ns, `
upstreams:
  old: {url: "http://`+addr+`"}
routes:
  - name: get
    method: GET
    path: /get
    upstream: old
`, writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}))
	resp, body := do(t, "GET", gw.URL+"/get", nil, nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("GET /get: %d %s, want 502", resp.StatusCode, body)
	}
	_, port, _ := net.SplitHostPort(addr)
	if strings.Contains(body, port) || strings.Contains(body, "refused") || strings.Contains(body, "dial") {
		t.Errorf("the problem body leaks the transport's error: %s", body)
	}
	if !strings.Contains(body, "upstream old") {
		t.Errorf("the problem body does not name the upstream: %s", body)
	}
	waitFor(t, 15*time.Second, "the cause in the log", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "refused")
	})
}
