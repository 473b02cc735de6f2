package metrics

import (
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// TestBuckets checks the rule: 50µs to 10s, at least three buckets
// in every decade below 10ms.
func TestBuckets(t *testing.T) {
	if Buckets[0] != 50e-6 || Buckets[len(Buckets)-1] != 10 {
		t.Errorf("buckets run %g to %g, want 50µs to 10s", Buckets[0], Buckets[len(Buckets)-1])
	}
	for i := 1; i < len(Buckets); i++ {
		if Buckets[i] <= Buckets[i-1] {
			t.Fatalf("buckets not increasing at %d: %g after %g", i, Buckets[i], Buckets[i-1])
		}
	}
	// Whole decades from 100µs up; the range starts at 50µs.
	for lo := 1e-4; lo < 10e-3; lo *= 10 {
		n := 0
		for _, b := range Buckets {
			// (lo, 10·lo], with a margin for floating point.
			if b > lo*(1+1e-9) && b <= 10*lo*(1+1e-9) {
				n++
			}
		}
		if n < 3 {
			t.Errorf("%d buckets in (%gs, %gs], want at least 3", n, lo, 10*lo)
		}
	}
}

// TestNames pins every metric of the table: name, type and labels.
// Dashboards and alerts are written against these.
func TestNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	r := m.Route("get-user", "GET", "request", "legacy")
	r.Request("GET", BackendNATS, 200, time.Millisecond, "")
	r.NATS.Observe(0.001)
	r.Worker.Observe(0.0005)
	r.Upstream.Observe(0.002)
	r.Inflight.Set(0)
	r.NATSError(KindTimeout)
	m.ShadowComparisons.WithLabelValues("get-user", ShadowMatch).Inc()
	m.BreakerState.WithLabelValues("get-user", "nats").Set(0)
	m.NATSConnected.Set(1)
	m.FleetReplicas.Set(2)

	want := map[string]struct {
		typ    dto.MetricType
		labels string
	}{
		"natsgate_http_requests_total":               {dto.MetricType_COUNTER, "backend,code,method,route"},
		"natsgate_http_request_duration_seconds":     {dto.MetricType_HISTOGRAM, "backend,method,route"},
		"natsgate_nats_request_duration_seconds":     {dto.MetricType_HISTOGRAM, "pattern,route"},
		"natsgate_worker_duration_seconds":           {dto.MetricType_HISTOGRAM, "route"},
		"natsgate_upstream_request_duration_seconds": {dto.MetricType_HISTOGRAM, "route,upstream"},
		"natsgate_shadow_comparisons_total":          {dto.MetricType_COUNTER, "result,route"},
		"natsgate_breaker_state":                     {dto.MetricType_GAUGE, "route,target"},
		"natsgate_nats_errors_total":                 {dto.MetricType_COUNTER, "kind,route"},
		"natsgate_inflight_requests":                 {dto.MetricType_GAUGE, "route"},
		"natsgate_nats_connected":                    {dto.MetricType_GAUGE, ""},
		"natsgate_fleet_replicas":                    {dto.MetricType_GAUGE, ""},
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	for name, w := range want {
		mf, ok := got[name]
		if !ok {
			t.Errorf("%s: not exported", name)
			continue
		}
		if mf.GetType() != w.typ {
			t.Errorf("%s: type %v, want %v", name, mf.GetType(), w.typ)
		}
		var labels []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, lp.GetName())
		}
		if l := strings.Join(labels, ","); l != w.labels {
			t.Errorf("%s: labels %q, want %q", name, l, w.labels)
		}
	}
}

func TestRequestRecorded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	r := m.Route("get-user", "GET", "request", "")
	r.Request("GET", BackendNATS, 200, 3*time.Millisecond, "")
	r.Request("GET", BackendNATS, 200, 3*time.Millisecond, "")
	r.Request("BREW", BackendLegacy, 418, time.Millisecond, "")
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP natsgate_http_requests_total HTTP requests answered, by route, method, status code and the backend that answered.
# TYPE natsgate_http_requests_total counter
natsgate_http_requests_total{backend="legacy",code="418",method="other",route="get-user"} 1
natsgate_http_requests_total{backend="nats",code="200",method="GET",route="get-user"} 2
`), "natsgate_http_requests_total")
	if err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.RequestDuration); n != 2 {
		t.Errorf("%d duration series, want 2 (nats GET, legacy other)", n)
	}
	if r.Upstream != nil {
		t.Error("a route without an upstream has an upstream observer")
	}
}

// histogramOf gathers the one histogram of a family.
func histogramOf(t *testing.T, reg *prometheus.Registry, name string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatalf("no single %s histogram", name)
	return nil
}

// TestNativeHistogram: the histograms are classic and native at once, so
// either kind of scrape gets them.
func TestNativeHistogram(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	r := m.Route("get-user", "GET", "request", "")
	for _, d := range []time.Duration{80 * time.Microsecond, 300 * time.Microsecond, 2 * time.Millisecond} {
		r.Request("GET", BackendNATS, 200, d, "")
	}
	h := histogramOf(t, reg, "natsgate_http_request_duration_seconds")
	if len(h.GetBucket()) != len(Buckets) {
		t.Errorf("%d classic buckets, want %d", len(h.GetBucket()), len(Buckets))
	}
	if h.Schema == nil {
		t.Fatal("no native histogram schema: NativeHistogramBucketFactor is not in effect")
	}
	// Factor 1.1 needs schema 3 (2^(2^-3) ≈ 1.09) or finer.
	if s := h.GetSchema(); s < 3 {
		t.Errorf("native schema %d, want at least 3 for a bucket factor of 1.1", s)
	}
	var spans uint32
	for _, s := range h.GetPositiveSpan() {
		spans += s.GetLength()
	}
	if spans < 3 {
		t.Errorf("native histogram has %d positive buckets for 3 distinct observations", spans)
	}
	if h.GetSampleCount() != 3 || math.Abs(h.GetSampleSum()-0.00238) > 1e-9 {
		t.Errorf("count %d sum %g, want 3 and 0.00238", h.GetSampleCount(), h.GetSampleSum())
	}
}

func TestExemplar(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	r := m.Route("get-user", "GET", "request", "")
	r.Request("GET", BackendNATS, 200, 3*time.Millisecond, "0af7651916cd43dd8448eb211c80319c")
	h := histogramOf(t, reg, "natsgate_http_request_duration_seconds")
	var found []string
	for _, b := range h.GetBucket() {
		if e := b.GetExemplar(); e != nil {
			for _, lp := range e.GetLabel() {
				found = append(found, lp.GetName()+"="+lp.GetValue())
			}
			if e.GetValue() != 0.003 {
				t.Errorf("exemplar value %g, want 0.003", e.GetValue())
			}
		}
	}
	if len(found) != 1 || found[0] != "trace_id=0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("exemplars %v, want one trace_id", found)
	}

	// Observe without a trace id adds no exemplar; a nil observer is a no-op.
	reg2 := prometheus.NewRegistry()
	m2 := New(reg2)
	Observe(m2.WorkerDuration.WithLabelValues("r"), time.Millisecond, "")
	Observe(nil, time.Millisecond, "x")
	for _, b := range histogramOf(t, reg2, "natsgate_worker_duration_seconds").GetBucket() {
		if b.GetExemplar() != nil {
			t.Errorf("exemplar without a trace id: %v", b.GetExemplar())
		}
	}
}

func TestSetStage(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SetStage("get-profile", "shadow")
	m.SetStage("get-profile", "canary")
	for _, s := range []string{"legacy", "shadow", "canary", "nats"} {
		want := 0.0
		if s == "canary" {
			want = 1
		}
		if got := testutil.ToFloat64(m.CutoverStage.WithLabelValues("get-profile", s)); got != want {
			t.Errorf("stage %s = %g, want %g", s, got, want)
		}
	}
}

// series lists a family's series as "name=value,…" label strings (sorted
// by name), with their value for a counter or gauge; only those with
// every label of match.
func series(t *testing.T, reg *prometheus.Registry, family string, match map[string]string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			var labels []string
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range match {
				if have[k] != v {
					continue metric
				}
			}
			out[strings.Join(labels, ",")] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}

// TestBuildInfo: natsgate_build_info is 1, labelled with what the binary
// was built from, so a dashboard can show which build each replica runs.
func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	got := series(t, reg, "natsgate_build_info", nil)
	if len(got) != 1 {
		t.Fatalf("natsgate_build_info series %v, want one", got)
	}
	for labels, v := range got {
		if v != 1 {
			t.Errorf("natsgate_build_info{%s} = %g, want 1", labels, v)
		}
		have := map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			have[k] = v
		}
		if have["goversion"] != runtime.Version() {
			t.Errorf("goversion %q, want %q", have["goversion"], runtime.Version())
		}
		// A test binary has no main module version nor VCS stamp: both
		// still have a value, so the series keeps its three labels.
		for _, l := range []string{"version", "revision"} {
			if have[l] == "" {
				t.Errorf("label %s is empty in %s", l, labels)
			}
		}
	}
}

// TestCountersStartAtZero: counters whose label values are known before
// anything happens export 0 from the start, so a rate or a share over them
// is 0 rather than no data.
func TestCountersStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg)
	for _, tc := range []struct {
		family string
		want   []string
	}{
		{"natsgate_config_reloads_total", []string{"result=error", "result=ok"}},
		{"natsgate_rejected_requests_total", []string{"reason=inflight_limit"}},
	} {
		got := series(t, reg, tc.family, nil)
		for _, w := range tc.want {
			if v, ok := got[w]; !ok || v != 0 {
				t.Errorf("%s{%s}: %v (present %v), want 0 from the start", tc.family, w, v, ok)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s has %v, want exactly %v", tc.family, got, tc.want)
		}
	}
}

// TestRouteSeriesByShape: a route exports the series of the sides it has,
// each counter at 0 for every known label value, and no histogram for a
// hop it cannot make (an empty histogram is a series of zero buckets that
// panels and rules would read as a route with no traffic).
func TestRouteSeriesByShape(t *testing.T) {
	allKinds := []string{KindNoResponders, KindTimeout, KindDisconnected, KindPayload, KindRefused, KindOther}
	shadow := []string{ShadowMatch, ShadowMismatch, ShadowError, ShadowDropped}
	upKinds := []string{UpstreamTimeout, UpstreamFailed, UpstreamBodyCut}
	for _, tc := range []struct {
		name              string
		pattern, upstream string
		nats, worker      bool
		upstreamHop       bool
		natsErrors        []string
		shadow            []string
		upstreamErrors    []string
	}{
		{name: "legacy-only", upstream: "legacy", upstreamHop: true, upstreamErrors: upKinds},
		{name: "publish", pattern: "publish", nats: true, natsErrors: allKinds},
		{name: "jetstream", pattern: "jetstream", nats: true, natsErrors: allKinds},
		{name: "request", pattern: "request", nats: true, worker: true, natsErrors: allKinds},
		{name: "request-and-legacy", pattern: "request", upstream: "legacy", nats: true, worker: true, upstreamHop: true,
			natsErrors: allKinds, shadow: shadow, upstreamErrors: upKinds},
		{name: "publish-and-legacy", pattern: "publish", upstream: "legacy", nats: true, upstreamHop: true,
			natsErrors: allKinds, upstreamErrors: upKinds},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := New(reg)
			r := m.Route(tc.name, "GET", tc.pattern, tc.upstream)
			route := map[string]string{"route": tc.name}
			count := func(family string) int { return len(series(t, reg, family, route)) }
			for _, h := range []struct {
				family string
				want   bool
				obs    prometheus.Observer
			}{
				{"natsgate_nats_request_duration_seconds", tc.nats, r.NATS},
				{"natsgate_worker_duration_seconds", tc.worker, r.Worker},
				{"natsgate_upstream_request_duration_seconds", tc.upstreamHop, r.Upstream},
			} {
				if n := count(h.family); (n == 1) != h.want || n > 1 {
					t.Errorf("%s: %d series, want %v", h.family, n, h.want)
				}
				if (h.obs != nil) != h.want {
					t.Errorf("%s: observer set %v, want %v", h.family, h.obs != nil, h.want)
				}
			}
			for _, c := range []struct {
				family, label string
				want          []string
			}{
				{"natsgate_nats_errors_total", "kind", tc.natsErrors},
				{"natsgate_shadow_comparisons_total", "result", tc.shadow},
				{"natsgate_upstream_errors_total", "kind", tc.upstreamErrors},
			} {
				got := series(t, reg, c.family, route)
				if len(got) != len(c.want) {
					t.Errorf("%s: %v, want %s %v at 0", c.family, got, c.label, c.want)
				}
				for labels, v := range got {
					if v != 0 {
						t.Errorf("%s{%s} = %g, want 0", c.family, labels, v)
					}
				}
				for _, w := range c.want {
					found := false
					for labels := range got {
						found = found || strings.Contains(","+labels+",", ","+c.label+"="+w+",")
					}
					if !found {
						t.Errorf("%s has no %s=%s series", c.family, c.label, w)
					}
				}
			}
		})
	}
}

// TestDeleteRoute: a route a reload removed leaves no series behind, and
// the other routes keep theirs.
func TestDeleteRoute(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	gone := m.Route("gone", "GET", "request", "legacy")
	kept := m.Route("kept", "GET", "request", "legacy")
	for _, r := range []*Route{gone, kept} {
		r.Request("GET", BackendNATS, 200, time.Millisecond, "")
		r.NATS.Observe(0.001)
		r.Worker.Observe(0.001)
		r.Upstream.Observe(0.001)
		r.Inflight.Set(0)
		m.SetStage(r.Name(), "shadow")
		m.BreakerState.WithLabelValues(r.Name(), BackendNATS).Set(0)
		m.BreakerState.WithLabelValues(r.Name(), "legacy").Set(0)
		m.RolloutStep.WithLabelValues(r.Name()).Set(0)
		m.RouteResponders.WithLabelValues(r.Name()).Set(1)
	}
	m.DeleteRoute("gone")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := 0
	for _, mf := range mfs {
		keptHere := false
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == "route" && lp.GetValue() == "gone" {
					t.Errorf("%s still has a series of the removed route: %v", mf.GetName(), s.GetLabel())
				}
				keptHere = keptHere || (lp.GetName() == "route" && lp.GetValue() == "kept")
			}
		}
		if keptHere {
			families++
		}
	}
	if families < 13 {
		t.Errorf("the kept route has series in %d families, want them all (13)", families)
	}
}
