package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Route records one route's metrics. Its label children are looked up once,
// when the route is compiled, so that recording a request costs no label
// hashing on the hot path.
type Route struct {
	m        *Metrics
	name     string
	method   string // the route's method, or "*"
	pattern  string // the route's NATS pattern, or ""
	upstream string // the upstream's name, or ""
	NATS     prometheus.Observer
	Worker   prometheus.Observer // nil for a route without the request pattern
	Upstream prometheus.Observer // nil for a route without an upstream
	Inflight prometheus.Gauge

	// natsErrors and upstreamErrors are the error counters of each known
	// kind, looked up once: counting into them after Retire deleted them
	// recreates nothing.
	natsErrors, upstreamErrors map[string]prometheus.Counter

	// recorders holds the label children of each method, backend and code
	// seen so far. It is read without a lock on every request and copied
	// whole, under mu, the first time a combination is seen: there are few
	// (methods × backends × codes), and a plain map with a comparable key
	// hashes faster than a sync.Map's interface keys.
	recorders atomic.Pointer[map[requestKey]*recorder]
	mu        sync.Mutex
	// last is the recorder used last: most requests of a route share one
	// key, and comparing it costs less than hashing it.
	last atomic.Pointer[recorder]
	// retired is set, under mu, when a reload removed the route: a request
	// still in flight on it then records into children of no vector, as a
	// child looked up from the vector would bring the route's series back.
	retired bool
}

type requestKey struct {
	method, backend string
	code            int
}

// recorder is the two children a request with one key records into.
type recorder struct {
	key      requestKey
	count    prometheus.Counter
	duration prometheus.Observer
}

// Route returns the recorder of one route. pattern is its NATS pattern
// ("" for none) and upstream its upstream's name ("" for none).
//
// Only the hops the route can make get a histogram: one created and never
// observed exports zero buckets, which panels and rules read as a route
// with no traffic. The worker's time comes from a reply, so only the
// request pattern has it. Counters with known label values (the NATS error
// kinds, the upstream error kinds, and the shadow results of a route that
// can be shadowed: request pattern and an upstream) start at 0.
func (m *Metrics) Route(name, method, pattern, upstream string) *Route {
	r := &Route{
		m:        m,
		name:     name,
		method:   method,
		pattern:  pattern,
		upstream: upstream,
		Inflight: m.Inflight.WithLabelValues(name),
	}
	if pattern != "" {
		r.NATS = m.NATSDuration.WithLabelValues(name, pattern)
		r.natsErrors = make(map[string]prometheus.Counter, len(natsErrorKinds))
		for _, k := range natsErrorKinds {
			r.natsErrors[k] = m.NATSErrors.WithLabelValues(name, k)
		}
	}
	if pattern == patternRequest {
		r.Worker = m.WorkerDuration.WithLabelValues(name)
	}
	if upstream != "" {
		r.Upstream = m.UpstreamDuration.WithLabelValues(name, upstream)
		r.upstreamErrors = make(map[string]prometheus.Counter, len(upstreamErrorKinds))
		for _, k := range upstreamErrorKinds {
			r.upstreamErrors[k] = m.UpstreamErrors.WithLabelValues(name, upstream, k)
		}
	}
	if r.shadowable() {
		for _, res := range shadowResults {
			m.ShadowComparisons.WithLabelValues(name, res)
		}
	}
	return r
}

// patternRequest is routes.Request, the one NATS pattern with a reply
// (metrics does not import routes).
const patternRequest = "request"

// Name is the route's name.
func (r *Route) Name() string { return r.name }

// Method gives the method label of a request: the method itself when it is
// a standard one, "other" for anything a client made up, so that a route
// taking any method still has a bounded label set.
func Method(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE":
		return m
	}
	return "other"
}

// Request records an answered request: its count by code and backend, and
// its edge latency. traceID, when not empty, is attached as an exemplar.
func (r *Route) Request(method, backend string, code int, d time.Duration, traceID string) {
	key := requestKey{method: Method(method), backend: backend, code: code}
	rec := r.last.Load()
	if rec == nil || rec.key != key {
		if m := r.recorders.Load(); m != nil {
			rec = (*m)[key]
		} else {
			rec = nil
		}
		if rec == nil {
			rec = r.addRecorder(key)
		}
		r.last.Store(rec)
	}
	rec.count.Inc()
	Observe(rec.duration, d, traceID)
}

// addRecorder looks up the label children of a key not seen before and
// publishes a copy of the recorders with it.
func (r *Route) addRecorder(key requestKey) *recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.recorders.Load()
	if old != nil {
		if rec := (*old)[key]; rec != nil {
			return rec
		}
	}
	next := make(map[requestKey]*recorder, 1)
	if old != nil {
		next = make(map[requestKey]*recorder, len(*old)+1)
		for k, v := range *old {
			next[k] = v
		}
	}
	rec := &recorder{key: key}
	if r.retired {
		rec.count = prometheus.NewCounter(prometheus.CounterOpts{Name: "retired"})
		rec.duration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "retired"})
	} else {
		rec.count = r.m.Requests.WithLabelValues(r.name, key.method, strconv.Itoa(key.code), key.backend)
		rec.duration = r.m.RequestDuration.WithLabelValues(r.name, key.method, key.backend)
	}
	next[key] = rec
	r.recorders.Store(&next)
	return rec
}

// Observe records a duration, with the trace id as an exemplar when there
// is one.
func Observe(o prometheus.Observer, d time.Duration, traceID string) {
	if o == nil {
		return
	}
	if traceID != "" {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(d.Seconds(), prometheus.Labels{"trace_id": traceID})
			return
		}
	}
	o.Observe(d.Seconds())
}

// NATSError counts a NATS-side failure of the route by kind.
func (r *Route) NATSError(kind string) {
	if c := r.natsErrors[kind]; c != nil {
		c.Inc()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.retired {
		r.m.NATSErrors.WithLabelValues(r.name, kind).Inc()
	}
}

// Kinds of natsgate_upstream_errors_total.
const (
	UpstreamTimeout = "timeout"
	UpstreamFailed  = "error"
	UpstreamBodyCut = "body_cut"
)

var upstreamErrorKinds = []string{UpstreamTimeout, UpstreamFailed, UpstreamBodyCut}

// UpstreamError counts a failure of the route's upstream by kind.
func (r *Route) UpstreamError(kind string) {
	if c := r.upstreamErrors[kind]; c != nil {
		c.Inc()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.retired {
		r.m.UpstreamErrors.WithLabelValues(r.name, r.upstream, kind).Inc()
	}
}

// Retire removes, after a reload, the series a route had as old that it
// does not have as next: every one of them when next is nil (the reload
// removed the route), else those of a hop or a label value it lost (a NATS
// pattern that changed, an upstream renamed or dropped, shadow no longer
// possible). The series both share are kept, with their counts.
func (m *Metrics) Retire(old, next *Route) {
	if next == nil {
		// Marked first: a request on old that records after this finds
		// the route retired, and one that recorded before has its
		// children deleted below.
		old.mu.Lock()
		old.retired = true
		old.mu.Unlock()
		m.DeleteRoute(old.name)
		return
	}
	name := old.name
	if old.pattern != "" && old.pattern != next.pattern {
		m.NATSDuration.DeleteLabelValues(name, old.pattern)
	}
	if old.pattern != "" && next.pattern == "" {
		m.NATSErrors.DeletePartialMatch(prometheus.Labels{"route": name})
		m.BreakerState.DeleteLabelValues(name, BackendNATS)
	}
	if old.Worker != nil && next.Worker == nil {
		m.WorkerDuration.DeleteLabelValues(name)
	}
	if old.upstream != "" && old.upstream != next.upstream {
		m.UpstreamDuration.DeleteLabelValues(name, old.upstream)
		m.UpstreamErrors.DeletePartialMatch(prometheus.Labels{"route": name, "upstream": old.upstream})
		m.BreakerState.DeleteLabelValues(name, old.upstream)
	}
	if old.shadowable() && !next.shadowable() {
		m.ShadowComparisons.DeletePartialMatch(prometheus.Labels{"route": name})
	}
}

// shadowable says whether the route can be in shadow: it needs the request
// pattern and an upstream.
func (r *Route) shadowable() bool { return r.pattern == patternRequest && r.upstream != "" }
