package gateway

// Tests of what issue 4 makes visible per request: Server-Timing on every
// response, one access log line per request with each hop and no secrets,
// and trace ids passed on and attached to the latency histograms as
// exemplars.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// syncBuffer is a log destination the test reads while the gateway writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// observed is a gateway with a NATS route, a legacy route and an
// unanswered one, logging JSON to a buffer, with what its worker and its
// legacy service saw.
type observed struct {
	gw  *testGateway
	log *syncBuffer

	mu            sync.Mutex
	workerTrace   []string // traceparent as the worker got it
	upstreamTrace []string // traceparent as the legacy service got it
	workerState   []string // tracestate as the worker got it
	upstreamState []string // tracestate as the legacy service got it
}

const observedTrace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

func startObserved(t *testing.T) *observed {
	t.Helper()
	o := &observed{log: &syncBuffer{}}
	legacySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.upstreamTrace = append(o.upstreamTrace, strings.Join(r.Header.Values("Traceparent"), " | "))
		o.upstreamState = append(o.upstreamState, r.Header.Get("Tracestate"))
		o.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"version":"3.4.1"}`))
	}))
	t.Cleanup(legacySrv.Close)

	ns := natstest.RunServer(t)
	o.gw = startGatewayLogging(t, ns, fmt.Sprintf(`
log: {format: json, level: info}
upstreams:
  legacy: {url: %q}
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
  - name: version
    method: GET
    path: /version
    upstream: legacy
  - name: nobody
    method: GET
    path: /nobody
    nats: {subject: nobody.home}
`, legacySrv.URL), o.log)

	worker := natstest.Connect(t, ns)
	respond(t, worker, "users.*.get", func(m *nats.Msg) *nats.Msg {
		o.mu.Lock()
		o.workerTrace = append(o.workerTrace, strings.Join(m.Header.Values("traceparent"), " | "))
		o.workerState = append(o.workerState, m.Header.Get("tracestate"))
		o.mu.Unlock()
		out := nats.NewMsg(m.Reply)
		out.Header.Set("Server-Timing", "worker;dur=1.5")
		out.Data = []byte(`{"id":7}`)
		return out
	})
	return o
}

// serverTiming parses a Server-Timing header into name → milliseconds.
func serverTiming(t *testing.T, h string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, part := range strings.Split(h, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		dur, ok := strings.CutPrefix(params, "dur=")
		if !ok {
			t.Fatalf("Server-Timing %q: %q has no dur", h, part)
		}
		v, err := strconv.ParseFloat(dur, 64)
		if err != nil || v < 0 {
			t.Fatalf("Server-Timing %q: bad dur %q", h, dur)
		}
		out[name] = v
	}
	return out
}

func TestServerTiming(t *testing.T) {
	o := startObserved(t)
	for _, tc := range []struct {
		path   string
		status int
		hops   []string // besides edge
	}{
		{"/users/7", 200, []string{"nats", "worker"}},
		{"/version", 200, []string{"upstream"}},
		{"/nobody", 503, []string{"nats"}}, // no responders: the hop was still made
		{"/users/a.b", 400, nil},           // refused before NATS
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, _ := do(t, "GET", o.gw.URL+tc.path, nil, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			st := serverTiming(t, resp.Header.Get("Server-Timing"))
			if _, ok := st["edge"]; !ok {
				t.Errorf("Server-Timing %v has no edge", st)
			}
			if len(st) != 1+len(tc.hops) {
				t.Errorf("Server-Timing %v, want edge and %v", st, tc.hops)
			}
			for _, h := range tc.hops {
				if _, ok := st[h]; !ok {
					t.Errorf("Server-Timing %v has no %s", st, h)
				}
			}
			if w, ok := st["worker"]; ok && w != 1.5 {
				t.Errorf("worker;dur=%g, want the worker's own 1.5", w)
			}
		})
	}
}

func TestAccessLog(t *testing.T) {
	o := startObserved(t)
	secret := http.Header{
		"Authorization": {"Bearer sekrit-token"},
		"Cookie":        {"session=sekrit-cookie"},
		"X-Api-Key":     {"sekrit-key"},
		"Traceparent":   {observedTrace},
	}
	for i, path := range []string{"/users/7", "/version", "/nobody"} {
		h := secret.Clone()
		h.Set("X-Request-Id", fmt.Sprintf("req-%d", i))
		do(t, "GET", o.gw.URL+path+"?token=sekrit-query", nil, h)
	}
	var lines []map[string]any
	natstest.Eventually(t, 15*time.Second, "three access log lines", func() bool {
		lines = lines[:0]
		for _, l := range strings.Split(strings.TrimSpace(o.log.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" {
				lines = append(lines, m)
			}
		}
		return len(lines) >= 3
	})
	if len(lines) != 3 {
		t.Fatalf("%d access log lines, want one per request: %v", len(lines), lines)
	}
	for i, tc := range []struct {
		route, backend string
		status         float64
		hops           []string
		absent         []string
	}{
		{"get-user", "nats", 200, []string{"nats_ms", "worker_ms"}, []string{"upstream_ms", "error"}},
		{"version", "legacy", 200, []string{"upstream_ms"}, []string{"nats_ms", "worker_ms", "error"}},
		{"nobody", "nats", 503, []string{"nats_ms", "error"}, []string{"upstream_ms", "worker_ms"}},
	} {
		l := lines[i]
		if l["route"] != tc.route || l["backend"] != tc.backend || l["status"] != tc.status || l["method"] != "GET" ||
			l["request_id"] != fmt.Sprintf("req-%d", i) || l["level"] != "INFO" {
			t.Errorf("line %d: %v; want route %s, backend %s, status %g, GET, req-%d, INFO", i, l, tc.route, tc.backend, tc.status, i)
		}
		if b, ok := l["bytes"].(float64); !ok || b <= 0 {
			t.Errorf("line %d: bytes %v, want the body's size", i, l["bytes"])
		}
		for _, k := range append([]string{"edge_ms"}, tc.hops...) {
			if _, ok := l[k]; !ok {
				t.Errorf("line %d (%s): no %s in %v", i, tc.route, k, l)
			}
		}
		for _, k := range tc.absent {
			if _, ok := l[k]; ok {
				t.Errorf("line %d (%s): %s present: %v", i, tc.route, k, l)
			}
		}
	}
	if all := o.log.String(); strings.Contains(all, "sekrit") {
		t.Errorf("a secret reached the log:\n%s", all)
	}
}

// exemplarTraces returns the trace ids of a histogram family's exemplars,
// for one route.
func exemplarTraces(t *testing.T, reg *prometheus.Registry, family, route string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	add := func(e *dto.Exemplar) {
		for _, lp := range e.GetLabel() {
			if lp.GetName() == "trace_id" {
				out = append(out, lp.GetValue())
			}
		}
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			isRoute := false
			for _, lp := range m.GetLabel() {
				isRoute = isRoute || (lp.GetName() == "route" && lp.GetValue() == route)
			}
			if !isRoute {
				continue
			}
			for _, b := range m.GetHistogram().GetBucket() {
				if e := b.GetExemplar(); e != nil {
					add(e)
				}
			}
			for _, e := range m.GetHistogram().GetExemplars() {
				add(e)
			}
		}
	}
	return out
}

func TestTraceContextAndExemplars(t *testing.T) {
	o := startObserved(t)
	traced := http.Header{"Traceparent": {observedTrace}, "Tracestate": {"vendor=1"}}
	do(t, "GET", o.gw.URL+"/users/7", nil, traced)
	do(t, "GET", o.gw.URL+"/version", nil, traced)
	do(t, "GET", o.gw.URL+"/nobody", nil, nil) // no trace: no exemplar

	o.mu.Lock()
	if len(o.workerTrace) != 1 || o.workerTrace[0] != observedTrace {
		t.Errorf("the worker got traceparent %q, want %q", o.workerTrace, observedTrace)
	}
	if len(o.upstreamTrace) != 1 || o.upstreamTrace[0] != observedTrace {
		t.Errorf("the legacy service got traceparent %q, want %q", o.upstreamTrace, observedTrace)
	}
	o.mu.Unlock()

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	for _, tc := range []struct{ family, route string }{
		{"natsgate_http_request_duration_seconds", "get-user"},
		{"natsgate_nats_request_duration_seconds", "get-user"},
		{"natsgate_worker_duration_seconds", "get-user"},
		{"natsgate_http_request_duration_seconds", "version"},
		{"natsgate_upstream_request_duration_seconds", "version"},
	} {
		// The access log and metrics are written after the response; poll.
		natstest.Eventually(t, 15*time.Second, tc.family+" exemplar for "+tc.route, func() bool {
			for _, id := range exemplarTraces(t, o.gw.Registry, tc.family, tc.route) {
				if id == traceID {
					return true
				}
			}
			return false
		})
	}
	natstest.Eventually(t, 15*time.Second, "nobody's request counted", func() bool {
		mfs, _ := o.gw.Registry.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "natsgate_http_requests_total" {
				for _, m := range mf.GetMetric() {
					for _, lp := range m.GetLabel() {
						if lp.GetValue() == "nobody" {
							return true
						}
					}
				}
			}
		}
		return false
	})
	for _, family := range []string{"natsgate_http_request_duration_seconds", "natsgate_nats_request_duration_seconds"} {
		if got := exemplarTraces(t, o.gw.Registry, family, "nobody"); len(got) != 0 {
			t.Errorf("%s for an untraced request has exemplars %v", family, got)
		}
	}
}

// openMetrics scrapes the admin listener's /metrics as Prometheus does
// when it stores exemplars (OpenMetrics, the one format that carries them).
func openMetrics(t *testing.T, adminURL string) string {
	t.Helper()
	req, err := http.NewRequest("GET", adminURL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	resp, body := send(t, req)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/openmetrics-text") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return body
}

// TestTraceparentValidation: only a valid traceparent (W3C Trace Context:
// lowercase hex, trace id and parent id not all zeros, version not ff, a
// version 00 header exactly 55 characters) is passed on to the worker and
// the legacy service, with its tracestate; an invalid one is dropped with
// its tracestate. Only a valid and sampled one becomes an exemplar.
func TestTraceparentValidation(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tc := range []struct {
		name      string
		header    []string
		forwarded bool
		exemplar  bool
	}{
		{"sampled", []string{"00-" + id + "-00f067aa0ba902b7-01"}, true, true},
		{"sampled with other flags", []string{"00-" + id + "-00f067aa0ba902b7-09"}, true, true},
		{"not sampled", []string{"00-" + id + "-00f067aa0ba902b7-00"}, true, false},
		{"a later version with more fields", []string{"01-" + id + "-00f067aa0ba902b7-01-what-comes-next"}, true, true},
		{"upper case", []string{"00-" + strings.ToUpper(id) + "-00F067AA0BA902B7-01"}, false, false},
		{"zero trace id", []string{"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, false, false},
		{"zero parent id", []string{"00-" + id + "-0000000000000000-01"}, false, false},
		{"version ff", []string{"ff-" + id + "-00f067aa0ba902b7-01"}, false, false},
		{"version 00 too long", []string{"00-" + id + "-00f067aa0ba902b7-01-x"}, false, false},
		{"later version run on", []string{"01-" + id + "-00f067aa0ba902b7-01x"}, false, false},
		{"not hex", []string{"00-" + id[:31] + "g-00f067aa0ba902b7-01"}, false, false},
		{"bad flags", []string{"00-" + id + "-00f067aa0ba902b7-0z"}, false, false},
		{"no dashes", []string{"00_" + id + "_00f067aa0ba902b7_01"}, false, false},
		{"short", []string{"00-" + id + "-00f067aa-01"}, false, false},
		{"only a tracestate", nil, false, false},
		{"twice", []string{"00-" + id + "-00f067aa0ba902b7-01", "00-" + id + "-00f067aa0ba902b7-01"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startObserved(t)
			h := http.Header{"Traceparent": tc.header, "Tracestate": {"vendor=1"}}
			for _, path := range []string{"/users/7", "/version"} {
				if resp, body := do(t, "GET", o.gw.URL+path, nil, h); resp.StatusCode != 200 {
					t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
				}
			}
			wantTrace, wantState := "", ""
			if tc.forwarded {
				wantTrace, wantState = strings.Join(tc.header, " | "), "vendor=1"
			}
			o.mu.Lock()
			for _, got := range []struct {
				who          string
				trace, state []string
			}{{"worker", o.workerTrace, o.workerState}, {"legacy service", o.upstreamTrace, o.upstreamState}} {
				if len(got.trace) != 1 || got.trace[0] != wantTrace || got.state[0] != wantState {
					t.Errorf("the %s got traceparent %q tracestate %q, want %q and %q", got.who, got.trace, got.state, wantTrace, wantState)
				}
			}
			o.mu.Unlock()

			// Metrics are recorded after the answer: wait for both
			// requests to be counted, then read the exemplars.
			natstest.Eventually(t, 15*time.Second, "both requests counted", func() bool {
				return testutil.ToFloat64(o.gw.metrics.Requests.WithLabelValues("get-user", "GET", "200", "nats")) == 1 &&
					testutil.ToFloat64(o.gw.metrics.Requests.WithLabelValues("version", "GET", "200", "legacy")) == 1
			})
			body := strings.ToLower(openMetrics(t, o.gw.AdminURL))
			var families []string
			for _, line := range strings.Split(body, "\n") {
				if strings.Contains(line, `trace_id="`+id+`"`) {
					families = append(families, line[:strings.Index(line, "{")])
				}
			}
			if tc.exemplar {
				for _, f := range []string{"natsgate_http_request_duration_seconds_bucket", "natsgate_nats_request_duration_seconds_bucket",
					"natsgate_worker_duration_seconds_bucket", "natsgate_upstream_request_duration_seconds_bucket"} {
					if !slices.Contains(families, f) {
						t.Errorf("no exemplar of the trace in %s; exemplars in %v", f, families)
					}
				}
			} else if len(families) != 0 || strings.Contains(body, "trace_id=") {
				t.Errorf("exemplars of a trace that is not to be recorded: %v", families)
			}
		})
	}
}

// metricLines are the lines of a text scrape that start with one of the
// prefixes.
func metricLines(body string, prefixes ...string) []string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// TestRouteSeriesAtStartAndReload scrapes /metrics: each route has the
// series of the sides it has, counters with known label values start at
// 0, natsgate_build_info is there, and a reload removes the series of a
// route it removed and those a changed route no longer has.
func TestRouteSeriesAtStartAndReload(t *testing.T) {
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
	t.Cleanup(legacy.Close)
	ns := natstest.RunServer(t)
	const routesText = `
upstreams:
  legacy: {url: %q}
routes:
  - name: both
    method: GET
    path: /both
    upstream: legacy
    nats: {subject: svc.both}
  - name: only-legacy
    method: GET
    path: /legacy
    upstream: legacy
  - name: pub
    method: POST
    path: /pub
    nats: {subject: svc.pub, pattern: publish}
`
	gw := startGateway(t, ns, fmt.Sprintf(routesText, legacy.URL))
	scrape := func() string {
		t.Helper()
		resp, body := do(t, "GET", gw.AdminURL+"/metrics", nil, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("/metrics: %d", resp.StatusCode)
		}
		return body
	}
	body := scrape()
	for _, want := range []string{
		`natsgate_config_reloads_total{result="ok"} 0`,
		`natsgate_config_reloads_total{result="error"} 0`,
		`natsgate_rejected_requests_total{reason="inflight_limit"} 0`,
		`natsgate_shadow_comparisons_total{result="match",route="both"} 0`,
		`natsgate_shadow_comparisons_total{result="dropped",route="both"} 0`,
		`natsgate_nats_errors_total{kind="timeout",route="pub"} 0`,
		`natsgate_nats_errors_total{kind="no_responders",route="both"} 0`,
		`natsgate_upstream_errors_total{kind="timeout",route="only-legacy",upstream="legacy"} 0`,
		`natsgate_worker_duration_seconds_count{route="both"} 0`,
		`natsgate_nats_request_duration_seconds_count{pattern="publish",route="pub"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if bi := metricLines(body, "natsgate_build_info{"); len(bi) != 1 || !strings.HasSuffix(bi[0], "} 1") || !strings.Contains(bi[0], `goversion="go`) {
		t.Errorf("natsgate_build_info: %q, want one series at 1 with the Go version", bi)
	}
	for _, absent := range []string{
		`natsgate_worker_duration_seconds_count{route="only-legacy"}`,
		`natsgate_worker_duration_seconds_count{route="pub"}`,
		`natsgate_nats_request_duration_seconds_count{pattern="request",route="only-legacy"}`,
		`natsgate_shadow_comparisons_total{result="match",route="pub"}`,
		`natsgate_shadow_comparisons_total{result="match",route="only-legacy"}`,
		`natsgate_nats_errors_total{kind="timeout",route="only-legacy"}`,
	} {
		if strings.Contains(body, absent) {
			t.Errorf("/metrics has %s, a series the route cannot have", absent)
		}
	}

	// The reload drops pub and makes both a publish route without an
	// upstream.
	next, err := loadText(fmt.Sprintf(`
upstreams:
  legacy: {url: %q}
routes:
  - name: both
    method: GET
    path: /both
    nats: {subject: svc.both, pattern: publish}
  - name: only-legacy
    method: GET
    path: /legacy
    upstream: legacy
`, legacy.URL))
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Reload(next); err != nil {
		t.Fatal(err)
	}
	body = scrape()
	if gone := metricLines(body, "natsgate_"); len(gone) == 0 {
		t.Fatal("/metrics has no natsgate series after the reload")
	}
	for _, line := range metricLines(body, "natsgate_") {
		if strings.Contains(line, `route="pub"`) {
			t.Errorf("the removed route still has %s", line)
		}
	}
	for _, absent := range []string{
		`natsgate_worker_duration_seconds_count{route="both"}`,
		`natsgate_nats_request_duration_seconds_count{pattern="request",route="both"}`,
		`natsgate_shadow_comparisons_total{result="match",route="both"}`,
		`natsgate_upstream_request_duration_seconds_count{route="both",upstream="legacy"}`,
		`natsgate_upstream_errors_total{kind="timeout",route="both",upstream="legacy"}`,
		`natsgate_breaker_state{route="both",target="legacy"}`,
	} {
		if strings.Contains(body, absent) {
			t.Errorf("after the reload /metrics still has %s, a series the changed route no longer has", absent)
		}
	}
	for _, want := range []string{
		`natsgate_config_reloads_total{result="ok"} 1`,
		`natsgate_nats_request_duration_seconds_count{pattern="publish",route="both"} 0`,
		`natsgate_nats_errors_total{kind="timeout",route="both"} 0`,
		`natsgate_upstream_errors_total{kind="timeout",route="only-legacy",upstream="legacy"} 0`,
		`natsgate_breaker_state{route="only-legacy",target="legacy"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("after the reload /metrics has no %s", want)
		}
	}
}

// appendTiming writes a duration as the shortest decimal of its
// milliseconds to the microsecond, which is what strconv's shortest float
// form gives for such a value: it is checked against that form over every
// microsecond up to 20 ms and at the edges beyond.
func TestAppendTimingIsTheShortestDecimalOfTheMilliseconds(t *testing.T) {
	check := func(us int64) {
		t.Helper()
		d := time.Duration(us) * time.Microsecond
		want := "nats;dur=" + strconv.FormatFloat(float64(us)/1000, 'f', -1, 64)
		if got := string(appendTiming(nil, "nats", d)); got != want {
			t.Fatalf("%v: got %q, want %q", d, got, want)
		}
	}
	for us := int64(-1500); us <= 20_000; us++ {
		check(us)
	}
	for _, us := range []int64{100_000, 999_999, 1_000_001, 3_600_000_000, 86_400_000_123} {
		check(us)
	}
	// Below a microsecond is zero, as the float form of its microseconds.
	if got := string(appendTiming(nil, "edge", 999*time.Nanosecond)); got != "edge;dur=0" {
		t.Errorf("999ns: got %q", got)
	}
}
