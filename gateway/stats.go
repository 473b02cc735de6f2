package gateway

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natsgate/natsgate/metrics"
)

// The dashboard's window: the last minute, in twelve five-second slots.
// Prometheus keeps the long history; this is what a person watching a
// migration needs right now, from the gateway alone.
const (
	statsSlot  = 5 * time.Second
	statsSlots = 12
	// StatsWindow is how far back /admin/stats looks.
	StatsWindow = statsSlot * statsSlots
)

// Latency histograms in the window are log-linear: exact below 8µs, then
// eight buckets for each power of two, so a quantile is within about 6% of
// the true value. 240 buckets reach 2^32µs (71 minutes); longer durations
// land in the last one. Fixed buckets keep memory bounded and recording a
// few atomic adds.
const (
	latencySub     = 8
	latencyBuckets = latencySub + (32-3)*latencySub
)

// Series of one route's window.
const (
	seriesEdgeNATS = iota
	seriesEdgeLegacy
	seriesNATSHop
	seriesWorker
	seriesUpstream
	seriesCount
)

// Backends counted apart in the window.
const (
	slotNATS = iota
	slotLegacy
	slotNone
	slotBackends
)

// Shadow outcomes counted in the window.
const (
	shadowMatch = iota
	shadowMismatch
	shadowError
	shadowDropped
	shadowCount
)

// stats is the gateway's recent memory: per route, a ring of time slots
// with counters and latency histograms. Recording is lock-free except for
// the first request of a slot, which clears it; reading merges the slots
// still inside the window.
type stats struct {
	now     func() time.Time
	started time.Time
	routes  sync.Map // route name -> *routeStats
}

func newStats(now func() time.Time) *stats {
	if now == nil {
		now = time.Now
	}
	return &stats{now: now, started: now()}
}

type routeStats struct {
	mu    sync.Mutex // held only to clear a slot for a new epoch
	slots [statsSlots]statsSlotData
}

type statsSlotData struct {
	epoch    atomic.Int64 // unix time / statsSlot, +1 so that 0 is "never used"
	requests [slotBackends]atomic.Uint32
	errors   [slotBackends]atomic.Uint32
	shadow   [shadowCount]atomic.Uint32
	latency  [seriesCount][latencyBuckets]atomic.Uint32
}

func (s *stats) epoch(t time.Time) int64 { return t.UnixNano()/int64(statsSlot) + 1 }

func (s *stats) route(name string) *routeStats {
	if rs, ok := s.routes.Load(name); ok {
		return rs.(*routeStats)
	}
	rs, _ := s.routes.LoadOrStore(name, &routeStats{})
	return rs.(*routeStats)
}

// slot returns the slot of epoch e, cleared first if it last held an older
// epoch.
func (rs *routeStats) slot(e int64) *statsSlotData {
	sl := &rs.slots[e%statsSlots]
	if sl.epoch.Load() == e {
		return sl
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if old := sl.epoch.Load(); old != e {
		if old > e { // a request that started before a slot turned over
			return nil
		}
		for i := range sl.requests {
			sl.requests[i].Store(0)
			sl.errors[i].Store(0)
		}
		for i := range sl.shadow {
			sl.shadow[i].Store(0)
		}
		for i := range sl.latency {
			for j := range sl.latency[i] {
				sl.latency[i][j].Store(0)
			}
		}
		sl.epoch.Store(e)
	}
	return sl
}

// request records an answered request of a route: its backend, whether it
// was a server error, the edge latency and each hop's.
func (s *stats) request(route string, ex *exchange, edge time.Duration) {
	sl := s.route(route).slot(s.epoch(s.now()))
	if sl == nil {
		return
	}
	b := slotNone
	switch ex.backend {
	case metrics.BackendNATS:
		b = slotNATS
		sl.latency[seriesEdgeNATS][latencyBucket(edge)].Add(1)
	case metrics.BackendLegacy:
		b = slotLegacy
		sl.latency[seriesEdgeLegacy][latencyBucket(edge)].Add(1)
	}
	sl.requests[b].Add(1)
	if ex.status >= 500 {
		sl.errors[b].Add(1)
	}
	if ex.nats >= 0 {
		sl.latency[seriesNATSHop][latencyBucket(ex.nats)].Add(1)
	}
	if ex.worker >= 0 {
		sl.latency[seriesWorker][latencyBucket(ex.worker)].Add(1)
	}
	if ex.upstream >= 0 {
		sl.latency[seriesUpstream][latencyBucket(ex.upstream)].Add(1)
	}
}

// hops records the NATS hop and the worker's time (-1: not reported) of a
// call no client waited on: a shadow copy.
func (s *stats) hops(route string, nats, worker time.Duration) {
	sl := s.route(route).slot(s.epoch(s.now()))
	if sl == nil {
		return
	}
	sl.latency[seriesNATSHop][latencyBucket(nats)].Add(1)
	if worker >= 0 {
		sl.latency[seriesWorker][latencyBucket(worker)].Add(1)
	}
}

// shadow records a shadow comparison's result (metrics.ShadowMatch, …).
func (s *stats) shadow(route, result string) {
	i := -1
	switch result {
	case metrics.ShadowMatch:
		i = shadowMatch
	case metrics.ShadowMismatch:
		i = shadowMismatch
	case metrics.ShadowError:
		i = shadowError
	case metrics.ShadowDropped:
		i = shadowDropped
	}
	if i < 0 {
		return
	}
	if sl := s.route(route).slot(s.epoch(s.now())); sl != nil {
		sl.shadow[i].Add(1)
	}
}

// latencyBucket maps a duration to its histogram bucket.
func latencyBucket(d time.Duration) int {
	us := d.Microseconds()
	if us < latencySub {
		if us < 0 {
			return 0
		}
		return int(us)
	}
	v := uint64(us)
	n := bits.Len64(v) // at least 4
	if n > 32 {
		return latencyBuckets - 1
	}
	sub := int(v>>(n-4)) & (latencySub - 1)
	return latencySub + (n-4)*latencySub + sub
}

// latencyBounds is the range [lo, hi) of a bucket, in microseconds.
func latencyBounds(i int) (lo, hi float64) {
	if i < latencySub {
		return float64(i), float64(i + 1)
	}
	n := (i-latencySub)/latencySub + 4
	sub := (i - latencySub) % latencySub
	shift := uint(n - 4)
	return float64(uint64(latencySub+sub) << shift), float64(uint64(latencySub+sub+1) << shift)
}

// StatsSnapshot is what /admin/stats serves: each route's last minute.
type StatsSnapshot struct {
	// WindowSeconds is the window's length; a gateway younger than that
	// reports on its life so far (see each route's seconds).
	WindowSeconds float64 `json:"window_seconds"`
	// Time the snapshot was taken.
	Time          time.Time `json:"time"`
	NATSConnected bool      `json:"nats_connected"`
	// Scope is "fleet" (every replica heard in the last 5s, this one
	// included) or "replica" (this one alone); Replicas counts them.
	Scope         string       `json:"scope"`
	Replicas      int          `json:"replicas"`
	AdminWritable bool         `json:"admin_writable"`
	Routes        []RouteStats `json:"routes"`
}

// RouteStats is one route's window. Latencies are in milliseconds; a
// quantile of a series with no observations is null.
type RouteStats struct {
	Name     string `json:"name"`
	Method   string `json:"method"`
	Path     string `json:"path"`
	Pattern  string `json:"pattern,omitempty"`
	Upstream string `json:"upstream,omitempty"`
	// Stage is the route's cutover stage now, a run-time override
	// included; /admin/routes has the details.
	Stage string `json:"stage"`
	// Seconds the figures cover: the window, or less for a young gateway.
	Seconds float64 `json:"seconds"`

	Requests  uint64  `json:"requests"`
	Rate      float64 `json:"rate"`       // requests per second
	Errors    uint64  `json:"errors"`     // 5xx answers
	ErrorRate float64 `json:"error_rate"` // errors / requests, 0 without requests

	// Backends answering the route: nats and legacy (and none, for answers
	// natsgate gave itself: a bad parameter, a body too large).
	Backends map[string]BackendStats `json:"backends"`
	// Hops of the NATS and legacy paths: nats, worker, upstream.
	Hops   map[string]Latency `json:"hops"`
	Shadow ShadowStats        `json:"shadow"`
}

// BackendStats is one backend's share of a route.
type BackendStats struct {
	Requests  uint64  `json:"requests"`
	Rate      float64 `json:"rate"`
	Errors    uint64  `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
	// Latency is the edge latency of the requests this backend answered.
	Latency Latency `json:"latency"`
}

// Latency is a series' count and quantiles in milliseconds.
type Latency struct {
	Count uint64   `json:"count"`
	P50   *float64 `json:"p50"`
	P95   *float64 `json:"p95"`
	P99   *float64 `json:"p99"`
}

// ShadowStats counts shadow comparisons. MatchRate is matches over
// compared pairs (match + mismatch), null when nothing was compared.
type ShadowStats struct {
	Match     uint64   `json:"match"`
	Mismatch  uint64   `json:"mismatch"`
	Error     uint64   `json:"error"`
	Dropped   uint64   `json:"dropped"`
	MatchRate *float64 `json:"match_rate"`
}

var backendNames = [slotBackends]string{metrics.BackendNATS, metrics.BackendLegacy, metrics.BackendNone}

// routeWindow is one route's window as raw sums: counts, the latency
// buckets and the rate per backend. Windows of several replicas add up
// (see add), which is how the fleet's figures are made.
type routeWindow struct {
	secs   float64
	req    [slotBackends]uint64
	errs   [slotBackends]uint64
	rate   [slotBackends]float64 // requests per second, summed over replicas
	shadow [shadowCount]uint64
	lat    [seriesCount][latencyBuckets]uint64
}

// snapshot reads one route's window.
func (s *stats) snapshot(name string) RouteStats {
	w := s.window(name)
	return w.render(name)
}

// window reads one route's window as raw sums, through the slots' atomics.
func (s *stats) window(name string) *routeWindow {
	now := s.now()
	cur := s.epoch(now)
	w := &routeWindow{}
	// The current slot is partly over; the window is the slots before it
	// and that part, or the gateway's age if that is shorter.
	secs := (time.Duration(statsSlots-1)*statsSlot + time.Duration(now.UnixNano()%int64(statsSlot))).Seconds()
	if age := now.Sub(s.started).Seconds(); age < secs {
		secs = age
	}
	if secs < 1 {
		secs = 1
	}
	w.secs = secs
	if v, ok := s.routes.Load(name); ok {
		rs := v.(*routeStats)
		for i := range rs.slots {
			sl := &rs.slots[i]
			if e := sl.epoch.Load(); e <= cur-statsSlots || e > cur {
				continue
			}
			for b := range w.req {
				w.req[b] += uint64(sl.requests[b].Load())
				w.errs[b] += uint64(sl.errors[b].Load())
			}
			for j := range w.shadow {
				w.shadow[j] += uint64(sl.shadow[j].Load())
			}
			for j := range w.lat {
				for k := range w.lat[j] {
					w.lat[j][k] += uint64(sl.latency[j][k].Load())
				}
			}
		}
	}
	for b := range w.rate {
		w.rate[b] = float64(w.req[b]) / secs
	}
	return w
}

// slotWindow reads one route's slot e alone, or nil when the ring no
// longer (or not yet) holds it or nothing was recorded in it.
func (s *stats) slotWindow(name string, e int64) *routeWindow {
	v, ok := s.routes.Load(name)
	if !ok {
		return nil
	}
	sl := &v.(*routeStats).slots[e%statsSlots]
	if sl.epoch.Load() != e {
		return nil
	}
	w := &routeWindow{secs: statsSlot.Seconds()}
	var any uint64
	for b := range w.req {
		w.req[b] = uint64(sl.requests[b].Load())
		w.errs[b] = uint64(sl.errors[b].Load())
		any += w.req[b]
	}
	for j := range w.shadow {
		w.shadow[j] = uint64(sl.shadow[j].Load())
		any += w.shadow[j]
	}
	if any == 0 {
		return nil
	}
	for j := range w.lat {
		for k := range w.lat[j] {
			w.lat[j][k] = uint64(sl.latency[j][k].Load())
		}
	}
	if sl.epoch.Load() != e { // cleared for a newer epoch while read
		return nil
	}
	return w
}

// render turns raw sums into what /admin/stats shows: quantiles read from
// the (possibly merged) buckets, never averaged.
func (w *routeWindow) render(name string) RouteStats {
	out := RouteStats{Name: name, Backends: map[string]BackendStats{}, Hops: map[string]Latency{}}
	out.Seconds = math.Round(w.secs*10) / 10
	var total float64
	for b, bn := range backendNames {
		out.Requests += w.req[b]
		out.Errors += w.errs[b]
		total += w.rate[b]
		if w.req[b] == 0 {
			continue
		}
		bs := BackendStats{Requests: w.req[b], Rate: round3(w.rate[b]), Errors: w.errs[b], ErrorRate: ratio(w.errs[b], w.req[b])}
		switch b {
		case slotNATS:
			bs.Latency = quantiles(&w.lat[seriesEdgeNATS])
		case slotLegacy:
			bs.Latency = quantiles(&w.lat[seriesEdgeLegacy])
		}
		out.Backends[bn] = bs
	}
	out.Rate = round3(total)
	out.ErrorRate = ratio(out.Errors, out.Requests)
	for j, hop := range map[int]string{seriesNATSHop: "nats", seriesWorker: "worker", seriesUpstream: "upstream"} {
		if l := quantiles(&w.lat[j]); l.Count > 0 {
			out.Hops[hop] = l
		}
	}
	sh := &w.shadow
	out.Shadow = ShadowStats{Match: sh[shadowMatch], Mismatch: sh[shadowMismatch], Error: sh[shadowError], Dropped: sh[shadowDropped]}
	if compared := sh[shadowMatch] + sh[shadowMismatch]; compared > 0 {
		r := ratio(sh[shadowMatch], compared)
		out.Shadow.MatchRate = &r
	}
	return out
}

// forget drops the windows of routes no longer served.
func (s *stats) forget(keep map[string]bool) {
	s.routes.Range(func(k, _ any) bool {
		if !keep[k.(string)] {
			s.routes.Delete(k)
		}
		return true
	})
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return round3(float64(a) / float64(b))
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// quantiles reads p50, p95 and p99 from a histogram, in milliseconds, each
// interpolated inside its bucket.
func quantiles(h *[latencyBuckets]uint64) Latency {
	var total uint64
	for _, c := range h {
		total += c
	}
	l := Latency{Count: total}
	if total == 0 {
		return l
	}
	qs := []float64{0.50, 0.95, 0.99}
	out := make([]*float64, len(qs))
	var seen uint64
	qi := 0
	for i, c := range h {
		if c == 0 {
			continue
		}
		for qi < len(qs) && float64(seen+c) >= qs[qi]*float64(total) {
			lo, hi := latencyBounds(i)
			frac := (qs[qi]*float64(total) - float64(seen)) / float64(c)
			v := math.Round((lo + (hi-lo)*frac)) / 1000 // µs to ms, to the µs
			out[qi] = &v
			qi++
		}
		seen += c
	}
	l.P50, l.P95, l.P99 = out[0], out[1], out[2]
	return l
}
