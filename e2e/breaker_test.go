package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"
)

// Fault 5: a slow worker. The route times out with 504, its breaker opens
// after the configured failures and then answers 503 with Retry-After (or
// from the fallback) at once, and closes again once the worker is healthy.
func TestSlowWorkerBreaker(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	slowWorker := startWorker(t, ns.URL(), "slow", 2*time.Second)
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "from legacy\n")
	}))
	defer legacy.Close()
	const timeout, openFor = 300 * time.Millisecond, 2 * time.Second
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: fmt.Sprintf(`
upstreams:
  legacy: {url: %q}
routes:
  - name: slow
    method: GET
    path: /slow
    nats: {subject: demo.slow, timeout: 300ms}
    breaker: {min_requests: 3, failure_ratio: 1, open_for: 2s}
  - name: slow-fallback
    method: GET
    path: /slow-fallback
    nats: {subject: demo.slow, timeout: 300ms}
    upstream: legacy
    cutover: nats
    fallback: true
    breaker: {min_requests: 3, failure_ratio: 1, open_for: 2s}
`, legacy.URL)})
	client := newClient(t)

	// 3 timeouts open the breaker.
	for i := 0; i < 3; i++ {
		e := do(client, "GET", g.URL+"/slow", "", nil)
		if e.status != 504 || e.took() > timeout+time.Second {
			t.Fatalf("request %d to a slow worker: want 504 within %v, got %v", i, timeout+time.Second, e)
		}
	}
	opened := time.Now()
	// Open: 503 with Retry-After, without waiting on NATS. One request on
	// a shared CI machine can be descheduled for longer than 10ms, so the
	// bound is on the median of 21.
	var took []time.Duration
	for i := 0; i < 21; i++ {
		e := do(client, "GET", g.URL+"/slow", "", nil)
		if e.status != 503 || e.retryAfter == "" || !strings.Contains(e.body, "breaker_open") {
			t.Fatalf("with the breaker open want 503 breaker_open with Retry-After, got %v (Retry-After %q)", e, e.retryAfter)
		}
		took = append(took, e.took())
	}
	if time.Since(opened) > openFor {
		t.Fatalf("the open-breaker requests took longer than open_for; the checks above are void")
	}
	if m := median(took); m > 10*time.Millisecond {
		t.Errorf("an open breaker answered in a median %v, want under 10ms", m)
	}
	if v := scrape(t, client, g.AdminURL, "natsgate_breaker_state", `route="slow"`, `target="nats"`); v != 2 {
		t.Errorf("natsgate_breaker_state for slow is %v, want 2 (open)", v)
	}

	// With a fallback: timeouts of an idempotent GET and the open breaker
	// are answered by the upstream.
	took = took[:0]
	for i := 0; i < 3+21; i++ {
		req, _ := http.NewRequest("GET", g.URL+"/slow-fallback", nil)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "from legacy\n" || resp.Header.Get("X-Natsgate-Backend") != "legacy" {
			t.Fatalf("fallback request %d: %d %q backend %q, want 200 from legacy", i, resp.StatusCode, b, resp.Header.Get("X-Natsgate-Backend"))
		}
		if i >= 3 {
			took = append(took, time.Since(start))
		}
	}
	if m := median(took); m > 10*time.Millisecond {
		t.Errorf("the fallback behind an open breaker answered in a median %v, want under 10ms", m)
	}

	// The worker recovers: a fast one replaces the slow one.
	slowWorker.Kill()
	startWorker(t, ns.URL(), "fast", time.Millisecond)
	healthy := time.Now()
	eventually(t, openFor+3*time.Second, "a 200 from slow after the worker recovered", func() bool {
		return do(client, "GET", g.URL+"/slow", "", nil).status == 200
	})
	t.Logf("the breaker let a request through %v after the worker recovered (open_for %v)", time.Since(healthy).Round(time.Millisecond), openFor)
	for i := 0; i < 10; i++ {
		if e := do(client, "GET", g.URL+"/slow", "", nil); e.status != 200 {
			t.Fatalf("after the breaker closed: %v", e)
		}
	}
	if v := scrape(t, client, g.AdminURL, "natsgate_breaker_state", `route="slow"`, `target="nats"`); v != 0 {
		t.Errorf("natsgate_breaker_state for slow is %v, want 0 (closed)", v)
	}
	eventually(t, 15*time.Second, "the breaker's closing logged", func() bool { return strings.Contains(g.Output(), `"to":"closed"`) })
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
