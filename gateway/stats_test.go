package gateway

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/metrics"
)

// clock is a settable time source for the window's tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestStats() (*stats, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	return newStats(c.now), c
}

func TestLatencyBuckets(t *testing.T) {
	prev := -1
	for _, d := range []time.Duration{
		0, time.Microsecond, 7 * time.Microsecond, 8 * time.Microsecond, 9 * time.Microsecond,
		15 * time.Microsecond, 16 * time.Microsecond, 50 * time.Microsecond, 333 * time.Microsecond,
		time.Millisecond, 1234567 * time.Nanosecond, 80 * time.Millisecond, time.Second,
		10 * time.Second, time.Minute, 35 * time.Minute,
	} {
		i := latencyBucket(d)
		if i < 0 || i >= latencyBuckets {
			t.Fatalf("%v: bucket %d out of range", d, i)
		}
		if i < prev {
			t.Errorf("%v: bucket %d is below the previous duration's %d", d, i, prev)
		}
		prev = i
		lo, hi := latencyBounds(i)
		us := float64(d.Microseconds())
		if us < lo || us >= hi {
			t.Errorf("%v (%gµs): bucket %d is [%g, %g)", d, us, i, lo, hi)
		}
		if us >= 8 && (hi-lo)/lo > 0.126 {
			t.Errorf("%v: bucket [%g, %g) is wider than 1/8", d, lo, hi)
		}
	}
	if i := latencyBucket(100 * time.Hour); i != latencyBuckets-1 {
		t.Errorf("100h: bucket %d, want the last (%d)", i, latencyBuckets-1)
	}
}

func TestStatsQuantiles(t *testing.T) {
	s, _ := newTestStats()
	// 1..1000 ms on NATS, 10x that on legacy.
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Millisecond
		s.request("r", &exchange{backend: metrics.BackendNATS, status: 200, nats: d / 2, worker: d / 4, upstream: -1}, d)
		s.request("r", &exchange{backend: metrics.BackendLegacy, status: 200, nats: -1, worker: -1, upstream: 10 * d}, 10*d)
	}
	rs := s.snapshot("r")
	check := func(name string, got *float64, want float64) {
		t.Helper()
		if got == nil {
			t.Errorf("%s: null, want about %g", name, want)
			return
		}
		if math.Abs(*got-want)/want > 0.07 {
			t.Errorf("%s = %g ms, want %g within 7%%", name, *got, want)
		}
	}
	n, l := rs.Backends["nats"].Latency, rs.Backends["legacy"].Latency
	check("nats p50", n.P50, 500)
	check("nats p95", n.P95, 950)
	check("nats p99", n.P99, 990)
	check("legacy p50", l.P50, 5000)
	check("legacy p99", l.P99, 9900)
	check("nats hop p50", rs.Hops["nats"].P50, 250)
	check("worker p99", rs.Hops["worker"].P99, 247.5)
	check("upstream p95", rs.Hops["upstream"].P95, 9500)
	if rs.Requests != 2000 || rs.Backends["nats"].Requests != 1000 || rs.Backends["legacy"].Requests != 1000 {
		t.Errorf("requests %d (nats %d, legacy %d), want 2000 (1000, 1000)", rs.Requests, rs.Backends["nats"].Requests, rs.Backends["legacy"].Requests)
	}
	if l.Count != 1000 || rs.Hops["worker"].Count != 1000 {
		t.Errorf("legacy count %d, worker count %d, want 1000 each", l.Count, rs.Hops["worker"].Count)
	}
}

func TestStatsWindowSlides(t *testing.T) {
	s, c := newTestStats()
	ok := &exchange{backend: metrics.BackendNATS, status: 200, nats: time.Millisecond, worker: -1, upstream: -1}
	bad := &exchange{backend: metrics.BackendNATS, status: 503, nats: -1, worker: -1, upstream: -1}
	c.add(StatsWindow) // the gateway is a minute old: rates are over the whole window
	for i := 0; i < 30; i++ {
		s.request("r", ok, time.Millisecond)
	}
	s.request("r", bad, time.Millisecond)
	c.add(30 * time.Second)
	for i := 0; i < 9; i++ {
		s.request("r", ok, time.Millisecond)
	}
	rs := s.snapshot("r")
	if rs.Requests != 40 || rs.Errors != 1 {
		t.Fatalf("after 30s: %d requests, %d errors; want 40, 1", rs.Requests, rs.Errors)
	}
	if rs.ErrorRate != 0.025 {
		t.Errorf("error rate %g, want 0.025", rs.ErrorRate)
	}
	if want := round3(40 / rs.Seconds); rs.Rate != want || rs.Seconds < 55 || rs.Seconds > 60 {
		t.Errorf("rate %g over %gs, want %g over 55-60s", rs.Rate, rs.Seconds, want)
	}

	// A minute after the first batch, only the second remains.
	c.add(30 * time.Second)
	rs = s.snapshot("r")
	if rs.Requests != 9 || rs.Errors != 0 {
		t.Errorf("after 65s: %d requests, %d errors; want 9, 0", rs.Requests, rs.Errors)
	}
	// A slot reused for a new epoch starts from zero.
	s.request("r", ok, time.Millisecond)
	if rs = s.snapshot("r"); rs.Requests != 10 {
		t.Errorf("after a slot's reuse: %d requests, want 10", rs.Requests)
	}
	c.add(2 * StatsWindow)
	rs = s.snapshot("r")
	if rs.Requests != 0 || rs.Backends["nats"].Latency.P50 != nil || len(rs.Hops) != 0 {
		t.Errorf("after two minutes idle: %+v, want an empty window", rs)
	}
}

func TestStatsYoungGatewayRate(t *testing.T) {
	s, c := newTestStats()
	c.add(4 * time.Second)
	for i := 0; i < 20; i++ {
		s.request("r", &exchange{backend: metrics.BackendLegacy, status: 200, nats: -1, worker: -1, upstream: time.Millisecond}, time.Millisecond)
	}
	rs := s.snapshot("r")
	if rs.Seconds != 4 || rs.Rate != 5 {
		t.Errorf("4s old, 20 requests: rate %g over %gs, want 5 over 4s", rs.Rate, rs.Seconds)
	}
}

func TestStatsShadow(t *testing.T) {
	s, _ := newTestStats()
	if rs := s.snapshot("r"); rs.Shadow.MatchRate != nil {
		t.Errorf("no comparisons: match rate %v, want null", *rs.Shadow.MatchRate)
	}
	for i := 0; i < 19; i++ {
		s.shadow("r", metrics.ShadowMatch)
	}
	s.shadow("r", metrics.ShadowMismatch)
	s.shadow("r", metrics.ShadowError)
	s.shadow("r", metrics.ShadowDropped)
	s.shadow("r", metrics.ShadowDropped)
	s.shadow("r", "something else")
	sh := s.snapshot("r").Shadow
	if sh.Match != 19 || sh.Mismatch != 1 || sh.Error != 1 || sh.Dropped != 2 {
		t.Errorf("shadow %+v, want 19 match, 1 mismatch, 1 error, 2 dropped", sh)
	}
	if sh.MatchRate == nil || *sh.MatchRate != 0.95 {
		t.Errorf("match rate %v, want 0.95", sh.MatchRate)
	}

	// The copies' hops count as hops, not as requests answered.
	s.hops("r", 2*time.Millisecond, time.Millisecond)
	s.hops("r", 4*time.Millisecond, -1)
	rs := s.snapshot("r")
	if rs.Requests != 0 || rs.Hops["nats"].Count != 2 || rs.Hops["worker"].Count != 1 {
		t.Errorf("after two shadow copies: %d requests, nats hops %d, worker %d; want 0, 2, 1", rs.Requests, rs.Hops["nats"].Count, rs.Hops["worker"].Count)
	}
}

// TestStatsConcurrent records from many goroutines across slot turnovers;
// with -race it checks the hot path, and every request is counted once.
func TestStatsConcurrent(t *testing.T) {
	s, c := newTestStats()
	ex := &exchange{backend: metrics.BackendNATS, status: 200, nats: time.Millisecond, worker: 100 * time.Microsecond, upstream: -1}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				s.request(fmt.Sprintf("r%d", i%3), ex, 2*time.Millisecond)
				if i%100 == 0 {
					_ = s.snapshot("r0")
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // turns the clock over a few slots meanwhile, within the window
		defer wg.Done()
		for i := 0; i < 5; i++ {
			c.add(time.Second)
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	var total uint64
	for _, r := range []string{"r0", "r1", "r2"} {
		total += s.snapshot(r).Requests
	}
	if total != 8*500 {
		t.Errorf("counted %d requests, want %d", total, 8*500)
	}
}

// TestAdminStats drives real requests through the gateway and a worker on
// a real nats-server, then reads /admin/stats.
func TestAdminStats(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
  - name: idle
    method: GET
    path: /idle
    nats: {subject: idle.get}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, "users.*.get", func(m *nats.Msg) *nats.Msg {
		out := nats.NewMsg(m.Reply)
		out.Header.Set("Server-Timing", "worker;dur=0.25")
		if m.Header.Get("Http-Param-id") == "0" {
			out.Header.Set("Http-Status", "500")
		}
		out.Data = []byte("ok")
		return out
	})
	for i := 0; i < 20; i++ {
		if resp, _ := do(t, "GET", fmt.Sprintf("%s/users/%d", gw.URL, i), nil, nil); resp.StatusCode != 200 && i != 0 {
			t.Fatalf("GET /users/%d: %d", i, resp.StatusCode)
		}
	}
	resp, body := do(t, "GET", gw.AdminURL+"/admin/stats", nil, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("/admin/stats: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var snap StatsSnapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatalf("/admin/stats: %v\n%s", err, body)
	}
	if len(snap.Routes) != 2 || snap.Routes[0].Name != "get-user" || snap.Routes[1].Name != "idle" {
		t.Fatalf("routes %+v, want get-user and idle in config order", snap.Routes)
	}
	if !snap.NATSConnected || snap.AdminWritable || snap.WindowSeconds != 60 {
		t.Errorf("connected %v, writable %v, window %g; want true, false, 60", snap.NATSConnected, snap.AdminWritable, snap.WindowSeconds)
	}
	r := snap.Routes[0]
	if r.Method != "GET" || r.Path != "/users/{id}" || r.Pattern != "request" || r.Stage != "nats" {
		t.Errorf("route fields %q %q %q %q, want GET /users/{id} request nats", r.Method, r.Path, r.Pattern, r.Stage)
	}
	n := r.Backends["nats"]
	if r.Requests != 20 || n.Requests != 20 || r.Errors != 1 || n.Errors != 1 || r.Rate <= 0 {
		t.Errorf("get-user: %d requests (nats %d), %d errors (nats %d), rate %g; want 20, 20, 1, 1, > 0", r.Requests, n.Requests, r.Errors, n.Errors, r.Rate)
	}
	if n.Latency.Count != 20 || n.Latency.P50 == nil || n.Latency.P99 == nil || *n.Latency.P99 < *n.Latency.P50 {
		t.Errorf("nats edge latency %+v, want 20 observations with p50 <= p99", n.Latency)
	}
	if _, ok := r.Backends["legacy"]; ok {
		t.Errorf("legacy backend reported for a NATS-only route")
	}
	if w := r.Hops["worker"]; w.Count != 20 || w.P50 == nil || math.Abs(*w.P50-0.25) > 0.02 {
		t.Errorf("worker hop %+v, want 20 around 0.25 ms", w)
	}
	if h := r.Hops["nats"]; h.Count != 20 || *h.P50 > *n.Latency.P50*1.07 {
		t.Errorf("nats hop %+v, want 20 no longer than the edge (%g ms)", h, *n.Latency.P50)
	}
	if idle := snap.Routes[1]; idle.Requests != 0 || len(idle.Backends) != 0 || idle.Rate != 0 {
		t.Errorf("idle route %+v, want nothing", idle)
	}
}

func TestDashboardFiles(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: r
    method: GET
    path: /r
    nats: {subject: r}
`)
	for _, tc := range []struct{ path, ctype, has string }{
		{"/", "text/html", `<script src="/dashboard.js"`},
		{"/dashboard.js", "text/javascript", "/admin/stats"},
		{"/dashboard.css", "text/css", "table"},
	} {
		resp, body := do(t, "GET", gw.AdminURL+tc.path, nil, nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(body, tc.has) {
			t.Errorf("GET %s: %d %q, body has %q: %v", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.has, strings.Contains(body, tc.has))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: CSP %q", tc.path, csp)
		}
	}
	if resp, _ := do(t, "GET", gw.AdminURL+"/nothing-here", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %d, want 404", resp.StatusCode)
	}
}

// BenchmarkStatsRequest is the window's cost on the request path.
func BenchmarkStatsRequest(b *testing.B) {
	s := newStats(nil)
	ex := &exchange{backend: metrics.BackendNATS, status: 200, nats: 300 * time.Microsecond, worker: 50 * time.Microsecond, upstream: -1}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.request("get-user", ex, 400*time.Microsecond)
		}
	})
}
