package metrics

import (
	"strconv"
	"sync"
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
	NATS     prometheus.Observer
	Worker   prometheus.Observer
	Upstream prometheus.Observer // nil for a route without an upstream
	Inflight prometheus.Gauge

	durations sync.Map // durationKey -> prometheus.Observer
	requests  sync.Map // requestKey -> prometheus.Counter
}

type durationKey struct{ method, backend string }

type requestKey struct {
	method, backend string
	code            int
}

// Route returns the recorder of one route. pattern is its NATS pattern
// ("" for none) and upstream its upstream's name ("" for none).
func (m *Metrics) Route(name, method, pattern, upstream string) *Route {
	r := &Route{
		m:        m,
		name:     name,
		method:   method,
		Worker:   m.WorkerDuration.WithLabelValues(name),
		Inflight: m.Inflight.WithLabelValues(name),
	}
	if pattern != "" {
		r.NATS = m.NATSDuration.WithLabelValues(name, pattern)
	}
	if upstream != "" {
		r.Upstream = m.UpstreamDuration.WithLabelValues(name, upstream)
	}
	return r
}

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
	method = Method(method)
	rk := requestKey{method: method, backend: backend, code: code}
	c, ok := r.requests.Load(rk)
	if !ok {
		c, _ = r.requests.LoadOrStore(rk, r.m.Requests.WithLabelValues(r.name, method, strconv.Itoa(code), backend))
	}
	c.(prometheus.Counter).Inc()

	dk := durationKey{method: method, backend: backend}
	o, ok := r.durations.Load(dk)
	if !ok {
		o, _ = r.durations.LoadOrStore(dk, r.m.RequestDuration.WithLabelValues(r.name, method, backend))
	}
	Observe(o.(prometheus.Observer), d, traceID)
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
	r.m.NATSErrors.WithLabelValues(r.name, kind).Inc()
}
