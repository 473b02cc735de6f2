package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// legacyService is a real HTTP upstream that answers with its name and
// records what it saw.
type legacyService struct {
	*httptest.Server
	hits    atomic.Int64
	mu      sync.Mutex
	lastXFF string
	body    func(r *http.Request) (int, string)
}

func startLegacy(t *testing.T) *legacyService {
	t.Helper()
	l := &legacyService{body: func(r *http.Request) (int, string) {
		return 200, `{"id": 1, "name": "ann", "at": "legacy-time"}`
	}}
	l.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.hits.Add(1)
		l.mu.Lock()
		l.lastXFF = r.Header.Get("X-Forwarded-For")
		l.mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		code, body := l.body(r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(l.Close)
	return l
}

// cutoverConfig is a route with both sides, at the given stage.
func cutoverConfig(legacyURL, stage, extra string) string {
	return fmt.Sprintf(`
admin:
  token: secret
upstreams:
  legacy:
    url: %s
    timeout: 2s
routes:
  - name: get-user
    method: "*"
    path: /users/{id}
    nats:
      subject: users.{id}.get
      timeout: 300ms
    upstream: legacy
    cutover: %s
    shadow_ignore: [at]
%s`, legacyURL, stage, extra)
}

// natsWorker answers users.*.get with the same data as the legacy
// service (but another timestamp).
func natsWorker(t *testing.T, ns *server.Server) (*nats.Conn, *atomic.Int64) {
	t.Helper()
	nc := natstest.Connect(t, ns)
	var hits atomic.Int64
	respond(t, nc, "users.*.get", func(m *nats.Msg) *nats.Msg {
		hits.Add(1)
		return &nats.Msg{Data: []byte(`{"name":"ann","id":1,"at":"worker-time"}`)}
	})
	return nc, &hits
}

func backendOf(t *testing.T, url string, header http.Header) (int, string) {
	t.Helper()
	resp, _ := do(t, "GET", url, nil, header)
	return resp.StatusCode, resp.Header.Get(HeaderBackend)
}

func TestStageLegacyProxies(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "legacy", ""))
	resp, body := do(t, "GET", gw.URL+"/users/1?x=%2F", nil, http.Header{"X-Forwarded-For": {"6.6.6.6"}, "Connection": {"X-Forwarded-For"}})
	if resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "legacy" || !strings.Contains(body, "legacy-time") {
		t.Fatalf("got %d %s %q", resp.StatusCode, resp.Header.Get(HeaderBackend), body)
	}
	legacy.mu.Lock()
	xff := legacy.lastXFF
	legacy.mu.Unlock()
	if xff != "127.0.0.1" {
		t.Fatalf("X-Forwarded-For at the upstream = %q, want only the real peer 127.0.0.1 (a spoofed value from an untrusted peer must not pass)", xff)
	}
	if !strings.Contains(resp.Header.Get(HeaderServerTiming), "upstream;dur=") {
		t.Fatalf("Server-Timing %q lacks the upstream hop", resp.Header.Get(HeaderServerTiming))
	}
}

func TestLegacyUpstreamDownIs502AndTimeoutIs504(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	block := make(chan struct{})
	legacy.body = func(r *http.Request) (int, string) {
		if r.URL.Path == "/users/2" {
			<-block
		}
		return 200, "{}"
	}
	t.Cleanup(func() { close(block) })
	gw := startGateway(t, ns, strings.Replace(cutoverConfig(legacy.URL, "legacy", ""), "timeout: 2s", "timeout: 200ms", 1))

	resp, body := do(t, "GET", gw.URL+"/users/2", nil, nil)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, `"route":"get-user"`) || resp.Header.Get(HeaderBackend) != "legacy" {
		t.Fatalf("slow upstream: got %d %s %q, want a 504 problem from the legacy side", resp.StatusCode, body, resp.Header.Get(HeaderBackend))
	}
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	gw2 := startGateway(t, ns, cutoverConfig(dead.URL, "legacy", ""))
	resp, body = do(t, "GET", gw2.URL+"/users/1", nil, nil)
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("refused upstream: got %d %s, want 502 problem", resp.StatusCode, body)
	}
}

// holdingWorker answers users.*.get like the legacy service (user 9
// differs), but holds every message until release is closed; seen gets
// each message's header as it arrives.
func holdingWorker(t *testing.T, ns *server.Server) (release chan struct{}, seen chan nats.Header) {
	t.Helper()
	nc := natstest.Connect(t, ns)
	release = make(chan struct{})
	seen = make(chan nats.Header, 10)
	sub, err := nc.Subscribe("users.*.get", func(m *nats.Msg) {
		seen <- m.Header
		go func() {
			<-release
			if m.Header.Get(HeaderParam+"id") == "9" {
				_ = m.Respond([]byte(`{"id": 9, "name": "bob"}`))
				return
			}
			_ = m.Respond([]byte(`{"name":"ann","id":1,"at":"worker-time"}`))
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return release, seen
}

func TestStageShadowComparesOffThePath(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "shadow", ""))
	release, seen := holdingWorker(t, ns)

	// The client gets the legacy answer while the worker still holds the
	// copy: the copy is not on the client's path.
	resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "legacy" || !strings.Contains(body, "legacy-time") {
		t.Fatalf("got %d %s %q", resp.StatusCode, resp.Header.Get(HeaderBackend), body)
	}
	h := <-seen
	if h.Get(HeaderShadow) != "true" {
		t.Fatalf("copy lacks Http-Shadow: true: %v", h)
	}
	resp, _ = do(t, "GET", gw.URL+"/users/9", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	<-seen
	// POST is not shadowed without shadow_unsafe.
	resp, _ = do(t, "POST", gw.URL+"/users/1", strings.NewReader("{}"), nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	close(release)

	shadow := gw.metrics.ShadowComparisons
	natstest.Eventually(t, 5*time.Second, "two shadow outcomes", func() bool {
		return testutil.ToFloat64(shadow.WithLabelValues("get-user", "match"))+testutil.ToFloat64(shadow.WithLabelValues("get-user", "mismatch")) == 2
	})
	// /users/1 differs only in the ignored "at" field and in key order.
	if got := testutil.ToFloat64(shadow.WithLabelValues("get-user", "match")); got != 1 {
		t.Fatalf("matches = %v, want 1", got)
	}
	select {
	case h := <-seen:
		t.Fatalf("a POST was shadowed: %v", h)
	default:
	}
	resp, body = do(t, "GET", gw.AdminURL+"/admin/routes/get-user/mismatches", nil, nil)
	var out struct{ Mismatches []Mismatch }
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Mismatches) != 1 {
		t.Fatalf("mismatches: %d %s", resp.StatusCode, body)
	}
	if m := out.Mismatches[0]; m.Path != "/users/9" || !strings.Contains(m.NATS.Body, "bob") || !strings.Contains(m.Legacy.Body, "ann") {
		t.Fatalf("mismatch record: %+v", m)
	}
}

func TestShadowCopiesOverTheBoundAreDropped(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	// A copy ends only when the worker lets go: the route's timeout is far
	// longer than the test, so no slot frees up by timing out.
	cfg := strings.Replace(cutoverConfig(legacy.URL, "shadow", ""), "timeout: 300ms", "timeout: 1m", 1)
	gw := startGateway(t, ns, "defaults:\n  shadow_max_inflight: 2\n"+cfg)
	release, _ := holdingWorker(t, ns)
	defer close(release)
	for i := 0; i < 5; i++ {
		if resp, _ := do(t, "GET", gw.URL+"/users/1", nil, nil); resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
	}
	// The legacy answer is flushed to the client before its handler decides
	// on the copy, so the last decision may land just after the client has
	// its answer: wait for it.
	dropped := gw.metrics.ShadowComparisons.WithLabelValues("get-user", "dropped")
	natstest.Eventually(t, 5*time.Second, "3 dropped copies", func() bool { return testutil.ToFloat64(dropped) >= 3 })
	if got := testutil.ToFloat64(dropped); got != 3 {
		t.Fatalf("dropped = %v, want 3 (5 copies, 2 allowed in flight)", got)
	}
}

func TestStageCanarySplitAndStickyKey(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	natsWorker(t, ns)
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "canary", "    canary_percent: 10\n    canary_key: X-User\n"))

	const n = 10000
	var toNATS atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/8; i++ {
				resp, err := client.Get(gw.URL + "/users/1")
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Header.Get(HeaderBackend) == "nats" {
					toNATS.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	share := float64(toNATS.Load()) * 100 / n
	if share < 7 || share > 13 {
		t.Fatalf("canary share %.2f%%, want 10 ± 3", share)
	}
	// The same key always lands on the same side.
	for _, key := range []string{"alice", "bob", "carol", "dave"} {
		_, first := backendOf(t, gw.URL+"/users/1", http.Header{"X-User": {key}})
		for i := 0; i < 20; i++ {
			if _, b := backendOf(t, gw.URL+"/users/1", http.Header{"X-User": {key}}); b != first {
				t.Fatalf("key %s moved from %s to %s", key, first, b)
			}
		}
	}
}

func TestFallbackForEachFailure(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	log := &syncBuffer{}
	gw := startGatewayLogging(t, ns, cutoverConfig(legacy.URL, "nats", "    fallback: true\n    breaker: {min_requests: 2, failure_ratio: 1, open_for: 1m}\n"), log)

	// No responders: nothing reached a worker, so even a POST falls back.
	for _, method := range []string{"GET", "POST"} {
		resp, body := do(t, method, gw.URL+"/users/1", strings.NewReader(`{"x":1}`), nil)
		if resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "legacy" {
			t.Fatalf("%s with no responders: %d %s %s", method, resp.StatusCode, resp.Header.Get(HeaderBackend), body)
		}
	}
	// The access line follows the flushed answer: wait for the second.
	natstest.Eventually(t, 5*time.Second, "two access lines saying fallback", func() bool {
		return strings.Count(log.String(), `"fallback":true`) == 2
	})
	// No responders are answered at once and say nothing about the
	// workers: the breaker stays closed, and a worker that arrives is used.
	if got := gw.Routes()[0].Breakers["nats"]; got != "closed" {
		t.Fatalf("breaker %s after no responders, want closed", got)
	}
	if n := testutil.ToFloat64(gw.metrics.NATSErrors.WithLabelValues("get-user", metrics.KindNoResponders)); n != 2 {
		t.Errorf("natsgate_nats_errors_total{kind=no_responders} = %v after two fallbacks, want 2", n)
	}
	nc := natstest.Connect(t, ns)
	respond(t, nc, "users.*.get", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte(`{"id":1}`)} })
	resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "nats" {
		t.Fatalf("with a worker back: %d %s %s, want NATS to answer", resp.StatusCode, resp.Header.Get(HeaderBackend), body)
	}
}

func TestFallbackAfterTimeoutOnlyForIdempotentMethods(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "nats", "    fallback: true\n"))
	nc := natstest.Connect(t, ns)
	var calls atomic.Int64
	respond(t, nc, "users.*.get", func(m *nats.Msg) *nats.Msg {
		calls.Add(1)
		time.Sleep(600 * time.Millisecond) // past the route's 300ms timeout
		return &nats.Msg{Data: []byte("late")}
	})
	resp, _ := do(t, "GET", gw.URL+"/users/1", nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "legacy" {
		t.Fatalf("GET after timeout: %d %s, want the legacy answer", resp.StatusCode, resp.Header.Get(HeaderBackend))
	}
	resp, body := do(t, "POST", gw.URL+"/users/1", strings.NewReader("{}"), nil)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("POST after timeout: %d %s, want 504: a worker may have acted", resp.StatusCode, body)
	}
}

func TestFallbackWhenNATSIsDown(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "nats", "    fallback: true\n"))
	ns.Shutdown()
	natstest.Eventually(t, 5*time.Second, "the gateway to see NATS down", func() bool { return !gw.Conn().IsConnected() })
	resp, body := do(t, "POST", gw.URL+"/users/1", strings.NewReader("{}"), nil)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "legacy" {
		t.Fatalf("NATS down: %d %s", resp.StatusCode, body)
	}
}

func TestBreakerOpensAndCloses(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: flaky
    method: GET
    path: /flaky
    nats:
      subject: flaky
      timeout: 1s
    breaker: {min_requests: 3, failure_ratio: 1, open_for: 300ms}
`)
	nc := natstest.Connect(t, ns)
	var healthy atomic.Bool
	respond(t, nc, "flaky", func(m *nats.Msg) *nats.Msg {
		if healthy.Load() {
			return &nats.Msg{Data: []byte("ok")}
		}
		out := nats.NewMsg("")
		out.Header.Set(HeaderStatus, "500")
		return out
	})
	for i := 0; i < 3; i++ {
		if resp, _ := do(t, "GET", gw.URL+"/flaky", nil, nil); resp.StatusCode != 500 {
			t.Fatalf("want the worker's 500, got %d", resp.StatusCode)
		}
	}
	resp, body := do(t, "GET", gw.URL+"/flaky", nil, nil)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "breaker_open") {
		t.Fatalf("open breaker: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if got := testutil.ToFloat64(gw.metrics.BreakerState.WithLabelValues("flaky", "nats")); got != breakerOpen {
		t.Fatalf("natsgate_breaker_state = %v, want 2 (open)", got)
	}
	healthy.Store(true)
	natstest.Eventually(t, 5*time.Second, "the breaker to close", func() bool {
		resp, _ := do(t, "GET", gw.URL+"/flaky", nil, nil)
		return resp.StatusCode == 200
	})
	if got := testutil.ToFloat64(gw.metrics.BreakerState.WithLabelValues("flaky", "nats")); got != breakerClosed {
		t.Fatalf("natsgate_breaker_state = %v, want 0 (closed)", got)
	}
}

func TestBreakerIgnoresClientErrors(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: lookup
    method: GET
    path: /lookup
    nats: {subject: lookup}
    breaker: {min_requests: 2, failure_ratio: 1, open_for: 1m}
`)
	nc := natstest.Connect(t, ns)
	respond(t, nc, "lookup", func(m *nats.Msg) *nats.Msg {
		out := nats.NewMsg("")
		out.Header.Set(HeaderServiceErrCode, "404")
		out.Header.Set(HeaderServiceErr, "not here")
		return out
	})
	for i := 0; i < 5; i++ {
		if resp, _ := do(t, "GET", gw.URL+"/lookup", nil, nil); resp.StatusCode != 404 {
			t.Fatalf("request %d: %d, want 404 (4xx must not open the breaker)", i, resp.StatusCode)
		}
	}
}

// putCutover changes a route's stage through the admin API.
func putCutover(t *testing.T, adminURL, route, body string) (*http.Response, string) {
	t.Helper()
	return do(t, "PUT", adminURL+"/admin/routes/"+route+"/cutover", strings.NewReader(body),
		http.Header{"Authorization": {"Bearer secret"}})
}

func TestAdminCutoverSharedByReplicas(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	natsWorker(t, ns)
	cfg := cutoverConfig(legacy.URL, "legacy", "")
	a := startGateway(t, ns, cfg)
	b := startGateway(t, ns, cfg)

	if _, got := backendOf(t, b.URL+"/users/1", nil); got != "legacy" {
		t.Fatalf("b starts on %s", got)
	}
	if resp, body := putCutover(t, a.AdminURL, "get-user", `{"cutover":"nats"}`); resp.StatusCode != 200 {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	start := time.Now()
	natstest.Eventually(t, time.Second, "replica b to apply the override", func() bool {
		_, got := backendOf(t, b.URL+"/users/1", nil)
		return got == "nats"
	})
	t.Logf("replica b applied the override after %v", time.Since(start))

	// A replica started now comes back with the current stage.
	c := startGateway(t, ns, cfg)
	if _, got := backendOf(t, c.URL+"/users/1", nil); got != "nats" {
		t.Fatalf("a new replica serves %s, want the stored override nats", got)
	}
	// DELETE returns every replica to the config's stage.
	resp, body := do(t, "DELETE", b.AdminURL+"/admin/routes/get-user/cutover", nil, http.Header{"Authorization": {"Bearer secret"}})
	if resp.StatusCode != 200 {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	for _, g := range []*testGateway{a, c} {
		natstest.Eventually(t, time.Second, "the replica to return to legacy", func() bool {
			_, got := backendOf(t, g.URL+"/users/1", nil)
			return got == "legacy"
		})
	}
}

func TestAdminCutoverRejectsBadInput(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "legacy", "  - name: only-nats\n    method: GET\n    path: /n\n    nats: {subject: n}\n"))
	cases := []struct {
		name, route, body, auth string
		status                  int
		mention                 string
	}{
		{"unknown stage", "get-user", `{"cutover":"blue"}`, "Bearer secret", 400, "cutover"},
		{"percent over 100", "get-user", `{"cutover":"canary","canary_percent":101}`, "Bearer secret", 400, "canary_percent"},
		{"percent negative", "get-user", `{"cutover":"canary","canary_percent":-1}`, "Bearer secret", 400, "canary_percent"},
		{"stage the route cannot run", "only-nats", `{"cutover":"legacy"}`, "Bearer secret", 400, "upstream"},
		{"unknown field", "get-user", `{"stage":"nats"}`, "Bearer secret", 400, "body"},
		{"unknown route", "nope", `{"cutover":"nats"}`, "Bearer secret", 404, "nope"},
		{"no token", "get-user", `{"cutover":"nats"}`, "", 401, "Bearer"},
		{"wrong token", "get-user", `{"cutover":"nats"}`, "Bearer secreT", 401, "Bearer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.auth != "" {
				h.Set("Authorization", tc.auth)
			}
			resp, body := do(t, "PUT", gw.AdminURL+"/admin/routes/"+tc.route+"/cutover", strings.NewReader(tc.body), h)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, tc.mention) || !strings.Contains(body, `"request_id"`) {
				t.Fatalf("got %d %s, want %d problem mentioning %q", resp.StatusCode, body, tc.status, tc.mention)
			}
		})
	}
	if st := gw.Routes()[0].Stage; st != "legacy" {
		t.Fatalf("a rejected PUT changed the stage to %s", st)
	}
}

func TestAdminReadOnlyWithoutToken(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	gw := startGateway(t, ns, strings.Replace(cutoverConfig(legacy.URL, "legacy", ""), "  token: secret\n", "", 1))
	resp, body := putCutover(t, gw.AdminURL, "get-user", `{"cutover":"nats"}`)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "read-only") {
		t.Fatalf("got %d %s, want 403 read-only", resp.StatusCode, body)
	}
	resp, body = do(t, "GET", gw.AdminURL+"/admin/routes", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"config_stage": "legacy"`) {
		t.Fatalf("GET /admin/routes: %d %s", resp.StatusCode, body)
	}
}

// TestWalkthroughWithoutDroppedRequests moves a route legacy → shadow →
// canary 10% → nats → back to legacy under steady traffic: every request
// is answered 200.
func TestWalkthroughWithoutDroppedRequests(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	_, workerHits := natsWorker(t, ns)
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "legacy", ""))

	ctx, cancel := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000 && ctx.Err() == nil; i++ {
				resp, err := http.Get(gw.URL + "/users/1")
				sent.Add(1)
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				}
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	for _, step := range []string{`{"cutover":"shadow"}`, `{"cutover":"canary","canary_percent":10}`, `{"cutover":"nats"}`} {
		before := sent.Load()
		if resp, body := putCutover(t, gw.AdminURL, "get-user", step); resp.StatusCode != 200 {
			t.Fatalf("PUT %s: %d %s", step, resp.StatusCode, body)
		}
		natstest.Eventually(t, 5*time.Second, "traffic at the new stage", func() bool { return sent.Load() > before+50 })
	}
	resp, _ := do(t, "DELETE", gw.AdminURL+"/admin/routes/get-user/cutover", nil, http.Header{"Authorization": {"Bearer secret"}})
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	before := sent.Load()
	natstest.Eventually(t, 5*time.Second, "traffic back on legacy", func() bool { return sent.Load() > before+50 })
	cancel()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during the walkthrough", failed.Load(), sent.Load())
	}
	if workerHits.Load() == 0 || legacy.hits.Load() == 0 {
		t.Fatalf("both sides should have answered: worker %d, legacy %d", workerHits.Load(), legacy.hits.Load())
	}
	if st := gw.Routes()[0]; st.Stage != "legacy" || st.Overridden {
		t.Fatalf("after DELETE: %+v", st)
	}
}

// TestShutdownDelayKeepsServingWhileNotReady: after SIGTERM's Shutdown the
// gateway reports not ready at once but keeps answering for
// http.shutdown_delay, so load balancers can stop sending first.
func TestShutdownDelayKeepsServingWhileNotReady(t *testing.T) {
	ns := natstest.RunServer(t)
	natsWorker(t, ns)
	gw := startGateway(t, ns, `
http:
  shutdown_delay: 2s
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get"}
`)
	done := make(chan error, 1)
	go func() { done <- gw.Shutdown(context.Background()) }()
	natstest.Eventually(t, time.Second, "/readyz to turn 503", func() bool {
		resp, _ := do(t, "GET", gw.AdminURL+"/readyz", nil, nil)
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("during the delay: %d %s, want still served", resp.StatusCode, body)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(gw.URL + "/users/1"); err == nil {
		t.Fatal("the listener still accepts after Shutdown")
	}
}

// A burst of copies, many at once, is compared whole: every copy's
// outcome is counted (none lost between the handler and the copy's
// goroutine), each matches, and each copy's NATS hop is timed once.
func TestShadowBurstIsComparedWhole(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	natsWorker(t, ns)
	cfg := strings.Replace(cutoverConfig(legacy.URL, "shadow", ""), "timeout: 300ms", "timeout: 10s", 1)
	gw := startGateway(t, ns, "defaults:\n  shadow_max_inflight: 1000\n"+cfg)
	const n = 199
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("%s/users/%d", gw.URL, i))
			if err != nil {
				failed.Add(1)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d clients did not get 200", f, n)
	}
	shadow := gw.metrics.ShadowComparisons
	outcomes := func() (total float64) {
		for _, r := range []string{"match", "mismatch", "error", "dropped"} {
			total += testutil.ToFloat64(shadow.WithLabelValues("get-user", r))
		}
		return total
	}
	natstest.Eventually(t, 20*time.Second, fmt.Sprintf("%d shadow outcomes", n), func() bool { return outcomes() >= n })
	if got := testutil.ToFloat64(shadow.WithLabelValues("get-user", "match")); got != n {
		t.Errorf("%v matches of %d copies (%v outcomes in all), want every copy matched", got, n, outcomes())
	}
	var hops dto.Metric
	if err := gw.metrics.NATSDuration.WithLabelValues("get-user", "request").(prometheus.Histogram).Write(&hops); err != nil {
		t.Fatal(err)
	}
	if got := hops.GetHistogram().GetSampleCount(); got != n {
		t.Errorf("%d NATS hops observed for %d copies, want one each", got, n)
	}
}

// A body within the route's max_body but over the NATS server's
// max_payload never reaches a worker, so a route with fallback sends it
// to the upstream, whole, for any method, while a route without fallback
// answers 413. The limit is NATS's, not the client's fault: the upstream
// may take what NATS cannot. A worker is there and would have answered:
// the upstream's answer can only be the fallback's.
func TestFallbackTakesABodyOverMaxPayload(t *testing.T) {
	opts := natstest.Options(t)
	opts.MaxPayload = 16 << 10
	ns := natstest.RunServerWith(t, opts)
	var got atomic.Value // the last body the upstream received
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(b)
		_, _ = io.WriteString(w, "legacy took it")
	}))
	t.Cleanup(legacy.Close)
	gw := startGateway(t, ns, `
defaults: {max_body: 64KiB}
upstreams:
  legacy: {url: `+legacy.URL+`, timeout: 5s}
routes:
  - {name: upload, method: POST, path: /upload, nats: {subject: uploads.new, timeout: 2s}, upstream: legacy, cutover: nats, fallback: true}
  - {name: strict, method: POST, path: /strict, nats: {subject: uploads.strict, timeout: 2s}, upstream: legacy, cutover: nats}
`)
	nc := natstest.Connect(t, ns)
	respond(t, nc, "uploads.*", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("nats took it")} })

	for _, size := range []int{16 << 10, 32 << 10, 64 << 10} { // the body alone over, and at max_body
		body := bytes.Repeat([]byte("b"), size)
		resp, answer := do(t, "POST", gw.URL+"/upload", bytes.NewReader(body), nil)
		if resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "legacy" || answer != "legacy took it" {
			t.Fatalf("%d B over max_payload with fallback: %d %s %q, want the upstream's answer", size, resp.StatusCode, resp.Header.Get(HeaderBackend), answer)
		}
		if b, _ := got.Load().([]byte); !bytes.Equal(b, body) {
			t.Fatalf("%d B over max_payload: the upstream got %d B, want the whole body", size, len(b))
		}
	}
	// Without fallback it stays a 413 problem, and within max_payload
	// NATS answers.
	resp, answer := do(t, "POST", gw.URL+"/strict", bytes.NewReader(bytes.Repeat([]byte("s"), 32<<10)), nil)
	checkProblem(t, resp, answer, 413, "strict")
	resp, answer = do(t, "POST", gw.URL+"/upload", strings.NewReader("small"), nil)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderBackend) != "nats" {
		t.Fatalf("a small body: %d %s %q, want NATS to answer", resp.StatusCode, resp.Header.Get(HeaderBackend), answer)
	}
}
