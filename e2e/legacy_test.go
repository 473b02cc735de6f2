package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// legacyUpstream is a real HTTP listener in the test process standing in
// for a legacy application: /broken/… answers 500, /cut answers a head
// promising 1000 bytes and closes after 100, anything else answers 200.
func legacyUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/broken/"):
			http.Error(w, "legacy broke", http.StatusInternalServerError)
		case r.URL.Path == "/cut":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
			_, _ = brw.Write(make([]byte, 100))
			_ = brw.Flush()
		default:
			_, _ = io.WriteString(w, "legacy ok\n")
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// legacyGateway runs natsgate with three routes on one upstream: a
// catch-all, and a shadow and a canary route (whose NATS side nobody
// answers).
func legacyGateway(t *testing.T, upstreamURL string) *gateway {
	t.Helper()
	ns := startNATS(t, natsOptions{})
	return startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: fmt.Sprintf(`
upstreams:
  legacy: {url: %q, timeout: 2s}
routes:
  - name: shadowed
    method: GET
    path: /shadowed/{id}
    nats: {subject: "shadowed.{id}", timeout: 200ms}
    upstream: legacy
    cutover: shadow
  - name: canary
    method: GET
    path: /canary/{id}
    nats: {subject: "canary.{id}", timeout: 200ms}
    upstream: legacy
    cutover: canary
    canary_percent: 0
  - name: catch-all
    method: "*"
    path: /*
    upstream: legacy
`, upstreamURL)})
}

// Fault 3: many 500s from one legacy path are the application's answers,
// passed on. They do not open the upstream's breaker, so every other path
// and route on that upstream still answers.
func TestLegacy5xxDoesNotTakeTheUpstreamOffline(t *testing.T) {
	up := legacyUpstream(t)
	g := legacyGateway(t, up.URL)
	client := newClient(t)
	for i := 0; i < 100; i++ {
		e := do(client, "GET", g.URL+"/broken/report", "", nil)
		if e.status != 500 || !strings.Contains(e.body, "legacy broke") || e.backend != "legacy" {
			t.Fatalf("request %d to the failing path: %v; want the upstream's own 500", i, e)
		}
	}
	for _, path := range []string{"/other", "/shadowed/1", "/canary/1"} {
		if e := do(client, "GET", g.URL+path, "", nil); e.status != 200 || e.body != "legacy ok\n" {
			t.Errorf("%s after 100 500s elsewhere on the upstream: %v; want 200 from legacy", path, e)
		}
	}
	if v := scrape(t, client, g.AdminURL, "natsgate_breaker_state", `target="legacy"`); v != 0 {
		t.Errorf("natsgate_breaker_state for the upstream sums to %v, want 0 (closed on every route)", v)
	}
}

// Fault 8: an answer whose body the upstream cuts short reaches the client
// broken (an error, not a clean short body) and is recorded: an access
// line at error level with the error, and natsgate_upstream_errors_total.
func TestLegacyBodyCutShortIsRecorded(t *testing.T) {
	up := legacyUpstream(t)
	g := legacyGateway(t, up.URL)
	client := newClient(t)
	e := do(client, "GET", g.URL+"/cut", "", http.Header{"X-Request-Id": {"cut-e2e-1"}})
	if e.err == nil {
		t.Fatalf("a body cut short reached the client as a whole answer: %v", e)
	}
	t.Logf("the client saw: %v", e.err)
	var line map[string]any
	eventually(t, 10*time.Second, "the access line of the cut answer", func() bool {
		for _, l := range strings.Split(g.Output(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" && m["request_id"] == "cut-e2e-1" {
				line = m
				return true
			}
		}
		return false
	})
	if line["level"] != "ERROR" || line["status"] != float64(200) || !strings.Contains(fmt.Sprint(line["error"]), "upstream body cut short after 100 bytes") {
		t.Errorf("access line %v; want level ERROR, status 200 as sent, error naming the cut", line)
	}
	if v := scrape(t, client, g.AdminURL, "natsgate_upstream_errors_total", `route="catch-all"`, `kind="body_cut"`); v != 1 {
		t.Errorf("natsgate_upstream_errors_total{kind=body_cut} = %v, want 1", v)
	}
	if v := scrape(t, client, g.AdminURL, "natsgate_http_requests_total", `route="catch-all"`, `code="200"`); v != 1 {
		t.Errorf("natsgate_http_requests_total{route=catch-all,code=200} = %v, want 1 (the cut answer, counted)", v)
	}
	for _, l := range strings.Split(strings.TrimSpace(g.Output()), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("a line that is not JSON in natsgate's log: %q", l)
		}
	}
}
