package gateway

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// The fleet history: the last fifteen minutes, per route, in the stats
// window's five-second slots, summed over every replica. The dashboard
// draws it and the rollout controller judges its gates on it. Each replica
// builds its own copy from what it hears: every fleet message carries the
// sender's last closed slot, sent again each second until the next one
// closes, and a slot counts each replica once. A slot is read once it is
// settled, when every live replica has had a second to send it; a replica
// that restarts refills it from then on.
const (
	historySlots = int(routes.MaxGateWindow / statsSlot)
	// historySettle is how long after a slot closes it is read: one fleet
	// interval for every replica to publish it, and a margin.
	historySettle = fleetInterval + 500*time.Millisecond
	// historyEvents bounds the marks kept per route for the time axis.
	historyEvents = 64
	// HistoryStep is one point of GET /admin/history: two slots.
	HistoryStep = 2 * statsSlot
)

func init() {
	if routes.RolloutResolution != statsSlot {
		panic("gateway: routes.RolloutResolution must be the stats slot")
	}
}

// history is one replica's copy of the fleet's last fifteen minutes.
type history struct {
	mu     sync.Mutex
	slots  [historySlots]histSlot
	events map[string][]HistoryEvent
	now    func() time.Time
}

type histSlot struct {
	epoch  int64               // as stats.epoch; 0: unused
	from   map[string]struct{} // replicas counted, by id ("" is this one)
	routes map[string]*histRoute
}

// histRoute is one route's counts in one slot: what gates and charts read.
type histRoute struct {
	req    [slotBackends]uint64
	errs   [slotBackends]uint64
	shadow [shadowCount]uint64
	lat    [2][latencyBuckets]uint32 // edge latency: NATS, legacy
}

func newHistory(now func() time.Time) *history {
	if now == nil {
		now = time.Now
	}
	return &history{events: map[string][]HistoryEvent{}, now: now}
}

// epochOf is the slot a time falls in, numbered as stats.epoch does.
func epochOf(t time.Time) int64 { return t.UnixNano()/int64(statsSlot) + 1 }

// slotStart is when slot e began.
func slotStart(e int64) time.Time { return time.Unix(0, (e-1)*int64(statsSlot)) }

// settled is the newest slot every replica has had time to send.
func (h *history) settled() int64 { return epochOf(h.now().Add(-historySettle)) - 1 }

// add counts one replica's closed slot e, once: the same slot sent again
// by the same replica, a slot older than the history, or one from the
// future (a clock far ahead) is left out.
func (h *history) add(replica string, e int64, rs []fleetRoute) {
	cur := epochOf(h.now())
	if e <= cur-int64(historySlots) || e > cur {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	sl := &h.slots[e%int64(historySlots)]
	if sl.epoch != e {
		if sl.epoch > e {
			return
		}
		*sl = histSlot{epoch: e, from: map[string]struct{}{}, routes: map[string]*histRoute{}}
	}
	if _, ok := sl.from[replica]; ok {
		return
	}
	sl.from[replica] = struct{}{}
	for i := range rs {
		fr := &rs[i]
		hr := sl.routes[fr.Name]
		if hr == nil {
			hr = &histRoute{}
			sl.routes[fr.Name] = hr
		}
		for b := range min(len(fr.Req), slotBackends) {
			hr.req[b] += fr.Req[b]
		}
		for b := range min(len(fr.Err), slotBackends) {
			hr.errs[b] += fr.Err[b]
		}
		for j := range min(len(fr.Shadow), shadowCount) {
			hr.shadow[j] += fr.Shadow[j]
		}
		for j, name := range [2]string{seriesNames[seriesEdgeNATS], seriesNames[seriesEdgeLegacy]} {
			pairs := fr.Lat[name]
			for k := 0; k+1 < len(pairs); k += 2 {
				hr.lat[j][pairs[k]] += uint32(min(pairs[k+1], 1<<32-1))
			}
		}
	}
}

// sum adds up a route's slots from..to (inclusive) into a window, and says
// how many of those slots the history holds.
func (h *history) sum(route string, from, to int64) (w *routeWindow, slots int) {
	w = &routeWindow{}
	return w, h.sumInto(w, route, from, to)
}

// sumInto is sum into a window the caller provides (and has zeroed): a
// window is ten KiB, and a chart reads ninety of them per route.
func (h *history) sumInto(w *routeWindow, route string, from, to int64) (slots int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for e := max(from, to-int64(historySlots)+1); e <= to; e++ {
		sl := &h.slots[e%int64(historySlots)]
		if sl.epoch != e {
			continue
		}
		slots++
		hr := sl.routes[route]
		if hr == nil {
			continue
		}
		hr.addTo(w)
	}
	w.secs = float64(slots) * statsSlot.Seconds()
	return slots
}

func (hr *histRoute) addTo(w *routeWindow) {
	for b := range hr.req {
		w.req[b] += hr.req[b]
		w.errs[b] += hr.errs[b]
	}
	for j := range hr.shadow {
		w.shadow[j] += hr.shadow[j]
	}
	for j, series := range [2]int{seriesEdgeNATS, seriesEdgeLegacy} {
		for k, c := range hr.lat[j] {
			w.lat[series][k] += uint64(c)
		}
	}
}

// HistoryEvent is a mark on a chart's time axis: a stage change or a
// rollout decision.
type HistoryEvent struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // "stage" or "rollout"
	Text string    `json:"text"`
}

// mark records an event on a route's time axis.
func (h *history) mark(route, kind, text string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ev := append(h.events[route], HistoryEvent{At: h.now().UTC(), Kind: kind, Text: text})
	if len(ev) > historyEvents {
		ev = slices.Delete(ev, 0, len(ev)-historyEvents)
	}
	h.events[route] = ev
}

// HistoryPoint is one HistoryStep of a route, by backend; a backend that
// answered nothing in it is left out.
type HistoryPoint struct {
	// T is when the point begins, in Unix milliseconds.
	T       int64                    `json:"t"`
	Backend map[string]HistoryValues `json:"backends"`
	// Shadow comparisons in the step, while the route was shadowed.
	Match    uint64 `json:"shadow_match,omitempty"`
	Mismatch uint64 `json:"shadow_mismatch,omitempty"`
}

// HistoryValues are one backend's numbers in one point.
type HistoryValues struct {
	Rate   float64  `json:"rate"` // requests per second
	Errors uint64   `json:"errors"`
	P50    *float64 `json:"p50_ms"`
	P99    *float64 `json:"p99_ms"`
}

// RouteHistory is one route's chart: its points, oldest first, and marks.
type RouteHistory struct {
	Name  string       `json:"name"`
	Stage routes.Stage `json:"stage"`
	// Percent is the canary share, with stage canary.
	Percent *int           `json:"canary_percent,omitempty"`
	Points  []HistoryPoint `json:"points"`
	Events  []HistoryEvent `json:"events"`
}

// HistorySnapshot is what GET /admin/history serves.
type HistorySnapshot struct {
	// StepSeconds is the length of a point.
	StepSeconds float64 `json:"step_seconds"`
	// From and To bound the points, in Unix milliseconds.
	From   int64          `json:"from"`
	To     int64          `json:"to"`
	Routes []RouteHistory `json:"routes"`
}

// route renders one route's points: settled slots in pairs aligned to
// HistoryStep, over the whole fifteen minutes (a step the history does not
// hold yet has no backends).
func (h *history) route(name string, stage routes.Stage) RouteHistory {
	per := int64(HistoryStep / statsSlot)
	last := h.settled()
	last -= last % per // the last slot of the newest whole step settled
	first := last - int64(historySlots) + 1
	rh := RouteHistory{Name: name, Stage: stage, Points: []HistoryPoint{}, Events: []HistoryEvent{}}
	w := &routeWindow{}
	for e := first; e+per-1 <= last; e += per {
		*w = routeWindow{}
		n := h.sumInto(w, name, e, e+per-1)
		p := HistoryPoint{T: slotStart(e).UnixMilli(), Backend: map[string]HistoryValues{}}
		if n > 0 {
			secs := float64(per) * statsSlot.Seconds()
			for b, series := range map[int]int{slotNATS: seriesEdgeNATS, slotLegacy: seriesEdgeLegacy} {
				if w.req[b] == 0 {
					continue
				}
				q := quantiles(&w.lat[series])
				p.Backend[backendNames[b]] = HistoryValues{Rate: round3(float64(w.req[b]) / secs), Errors: w.errs[b], P50: q.P50, P99: q.P99}
			}
			p.Match, p.Mismatch = w.shadow[shadowMatch], w.shadow[shadowMismatch]
		}
		rh.Points = append(rh.Points, p)
	}
	since := slotStart(first)
	h.mu.Lock()
	for _, ev := range h.events[name] {
		if !ev.At.Before(since) {
			rh.Events = append(rh.Events, ev)
		}
	}
	h.mu.Unlock()
	return rh
}

// forget drops the marks of routes no longer served; their slots age out.
func (h *history) forget(keep map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name := range h.events {
		if !keep[name] {
			delete(h.events, name)
		}
	}
}

// History is the fleet's last fifteen minutes, route by route, in config
// order.
func (s *Server) History() HistorySnapshot { return s.historyOf("") }

// historyOf is History for one route, or every route when only is "".
func (s *Server) historyOf(only string) HistorySnapshot {
	c := s.table.Load()
	out := HistorySnapshot{StepSeconds: HistoryStep.Seconds(), Routes: make([]RouteHistory, 0, len(c.table.Routes))}
	for _, rt := range c.table.Routes {
		if only != "" && rt.Name != only {
			continue
		}
		rh := s.history.route(rt.Name, routes.Stage(appliedStage(c, rt)))
		if h := c.handlers[rt.Name]; h != nil && rh.Stage == routes.Canary {
			if st := h.stage.Load(); st != nil {
				p := st.percent
				rh.Percent = &p
			}
		}
		out.Routes = append(out.Routes, rh)
	}
	if len(out.Routes) > 0 && len(out.Routes[0].Points) > 0 {
		pts := out.Routes[0].Points
		out.From, out.To = pts[0].T, pts[len(pts)-1].T+HistoryStep.Milliseconds()
	}
	return out
}

func (s *Server) getHistory(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("route")
	if name != "" && s.routeOr404(w, r, name) == nil {
		return
	}
	writeJSON(w, http.StatusOK, s.historyOf(name))
}

// closedSlot is this replica's slot e as a fleet message carries it: the
// routes that answered in it, with their counts and edge latency.
func (s *Server) closedSlot(e int64) []fleetRoute {
	c := s.table.Load()
	var out []fleetRoute
	for _, rt := range c.table.Routes {
		w := s.stats.slotWindow(rt.Name, e)
		if w == nil {
			continue
		}
		for _, j := range []int{seriesNATSHop, seriesWorker, seriesUpstream} {
			w.lat[j] = [latencyBuckets]uint64{}
		}
		out = append(out, encodeRoute(rt.Name, appliedStage(c, rt), w))
	}
	return out
}

// historyFeed adds this replica's own closed slots to the history every
// second, and keeps the newest for the fleet message to carry.
type historyFeed struct {
	mu     sync.Mutex
	epoch  int64
	routes []fleetRoute
	stop   chan struct{}
	done   chan struct{}
}

func (s *Server) startHistory() {
	f := &historyFeed{stop: make(chan struct{}), done: make(chan struct{})}
	s.feed = f
	go func() {
		defer close(f.done)
		t := time.NewTicker(fleetInterval)
		defer t.Stop()
		for {
			s.feedHistory()
			select {
			case <-f.stop:
				return
			case <-t.C:
			}
		}
	}()
}

func (s *Server) stopHistory() {
	if f := s.feed; f != nil {
		select {
		case <-f.stop:
		default:
			close(f.stop)
			<-f.done
		}
	}
}

// feedHistory reads this replica's last closed slot once, into the
// history and for the fleet message.
func (s *Server) feedHistory() {
	f := s.feed
	e := epochOf(s.history.now()) - 1
	f.mu.Lock()
	fresh := f.epoch != e
	f.mu.Unlock()
	if !fresh {
		return
	}
	rs := s.closedSlot(e)
	s.history.add("", e, rs)
	f.mu.Lock()
	if e > f.epoch { // the fleet's publish reads it too; keep the newer
		f.epoch, f.routes = e, rs
	}
	f.mu.Unlock()
}

// last is the newest closed slot read, for the fleet message.
func (f *historyFeed) last() (int64, []fleetRoute) {
	if f == nil {
		return 0, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.epoch, f.routes
}
