package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// The progress report: where a migration stands, route by route, over the
// fleet history's last fifteen minutes (steadier than the last minute for
// judging progress). GET /admin/report serves it, `natsgate report` prints
// it and the dashboard's header shows its summary line.
//
// Its definitions, also in docs/migration.md ("Progress report"):
//   - a route's NATS share is the requests the NATS backend answered over
//     all a backend answered (a fallback counts as legacy; answers natsgate
//     gave itself, a bad parameter or a body too large, count for neither);
//   - a route's shadow is matching with at least reportMinCompared
//     comparisons in the window and a match rate of at least its plan's
//     min_match_rate, or 0.99 without a plan; mismatching with as many
//     comparisons and a lower rate;
//   - a route is ready to move when it is not at nats yet, has a NATS side,
//     and its shadow, if it was shadowed in the window, is matching; a
//     request route also needs responders found (a publish or jetstream
//     route needs none: its subject may have a stream, or nobody, behind
//     it);
//   - a route is blocked when it is not at nats yet and discovery found no
//     responders for it (request routes), or its shadow is mismatching;
//   - a route can be neither: no data yet, too few comparisons, no look by
//     discovery yet, or nothing to move to (no NATS side).
const (
	// reportMinCompared is the least shadow comparisons a verdict on a
	// route's shadow needs.
	reportMinCompared = 20
	// reportMatchRate is the match rate a route without a plan must reach.
	reportMatchRate = routes.DefaultGateMinMatchRate
	// reportStoreWait bounds reading the rollout records for one report.
	reportStoreWait = 2 * time.Second
)

// Report is what GET /admin/report serves.
type Report struct {
	GeneratedAt time.Time `json:"generated_at"`
	// WindowSeconds is how much of the last fifteen minutes the fleet
	// history holds: less for a gateway younger than that.
	WindowSeconds float64       `json:"window_seconds"`
	Summary       ReportSummary `json:"summary"`
	Routes        []RouteReport `json:"routes"`
}

// ReportSummary is the whole migration in a few numbers.
type ReportSummary struct {
	Routes  int           `json:"routes"`
	ByStage ReportByStage `json:"by_stage"`
	// NATSTrafficShare is the NATS share of every route's answers
	// together; 0 without traffic.
	NATSTrafficShare float64 `json:"nats_traffic_share"`
	// ShadowMatchRate is matches over comparisons of every route
	// together; null when nothing was compared.
	ShadowMatchRate *float64 `json:"shadow_match_rate"`
	// Ready names the routes ready to move, in config order.
	Ready   []string       `json:"ready"`
	Blocked []BlockedRoute `json:"blocked"`
	// WithoutResponders counts request routes, at any stage, for which
	// discovery found no micro service.
	WithoutResponders int `json:"without_responders"`
	// Text is the summary in one line, as the dashboard's header and
	// `natsgate report` show it.
	Text string `json:"text"`
}

// ReportByStage counts routes by stage.
type ReportByStage struct {
	Legacy int `json:"legacy"`
	Shadow int `json:"shadow"`
	Canary int `json:"canary"`
	NATS   int `json:"nats"`
}

// BlockedRoute is a route that cannot move on, and why.
type BlockedRoute struct {
	Route string `json:"route"`
	Why   string `json:"why"`
}

// RouteReport is one route's progress.
type RouteReport struct {
	Name          string       `json:"name"`
	Method        string       `json:"method"`
	Path          string       `json:"path"`
	Stage         routes.Stage `json:"stage"`
	CanaryPercent int          `json:"canary_percent"`
	// Rollout is the route's plan as the fleet runs it; null without one.
	Rollout *ReportRollout `json:"rollout"`
	// Responders is the micro service instances discovery found; null
	// before a look completes, with discovery off, or without a NATS side.
	Responders *int `json:"responders"`
	// NATSShare is the NATS share of the route's answers; 0 without any.
	NATSShare float64 `json:"nats_share"`
	// ShadowMatchRate is null when nothing was compared in the window.
	ShadowMatchRate *float64 `json:"shadow_match_rate"`
	ShadowCompared  uint64   `json:"shadow_compared"`
	// Legacy and NATS are null for a backend that answered nothing.
	Legacy *ReportBackend `json:"legacy"`
	NATS   *ReportBackend `json:"nats"`
	// P99Ratio is NATS p99 over legacy p99, when both have answered.
	P99Ratio *float64 `json:"p99_ratio"`
	Ready    bool     `json:"ready"`
	// Blocked says why the route cannot move on; "" when it can.
	Blocked string `json:"blocked"`
}

// ReportRollout is a route's plan's state and step (1-based; 0 while idle).
type ReportRollout struct {
	State string `json:"state"`
	Step  int    `json:"step"`
	Steps int    `json:"steps"`
	// Error says why the state could not be read (then State is
	// "unknown").
	Error string `json:"error,omitempty"`
}

// ReportBackend is one backend's answers to a route over the window.
type ReportBackend struct {
	Requests uint64   `json:"requests"`
	P50      *float64 `json:"p50_ms"`
	P99      *float64 `json:"p99_ms"`
	// ErrorRate is the share of 5xx answers.
	ErrorRate float64 `json:"error_rate"`
}

// Report builds the progress report over the fleet history's last
// fifteen settled minutes.
func (s *Server) Report(ctx context.Context) Report {
	c := s.table.Load()
	to := s.history.settled()
	from := to - int64(historySlots) + 1
	out := Report{GeneratedAt: time.Now().UTC(), Routes: make([]RouteReport, 0, len(c.table.Routes))}
	sum := &out.Summary
	sum.Routes, sum.Ready, sum.Blocked = len(c.table.Routes), []string{}, []BlockedRoute{}
	var natsReq, answered, match, compared uint64
	sctx, cancel := context.WithTimeout(ctx, reportStoreWait)
	defer cancel()
	w := &routeWindow{} // one window, ten KiB, reused route after route
	for _, rt := range c.table.Routes {
		*w = routeWindow{}
		slots := s.history.sumInto(w, rt.Name, from, to)
		out.WindowSeconds = max(out.WindowSeconds, float64(slots)*statsSlot.Seconds())
		rr := s.routeReport(sctx, c, rt, w)
		switch rr.Stage {
		case routes.Legacy:
			sum.ByStage.Legacy++
		case routes.Shadow:
			sum.ByStage.Shadow++
		case routes.Canary:
			sum.ByStage.Canary++
		case routes.NATS:
			sum.ByStage.NATS++
		}
		natsReq += w.req[slotNATS]
		answered += w.req[slotNATS] + w.req[slotLegacy]
		match += w.shadow[shadowMatch]
		compared += w.shadow[shadowMatch] + w.shadow[shadowMismatch]
		if rr.Ready {
			sum.Ready = append(sum.Ready, rt.Name)
		}
		if rr.Blocked != "" {
			sum.Blocked = append(sum.Blocked, BlockedRoute{Route: rt.Name, Why: rr.Blocked})
		}
		if rr.Responders != nil && *rr.Responders == 0 && rt.Pattern == routes.Request {
			sum.WithoutResponders++
		}
		out.Routes = append(out.Routes, rr)
	}
	sum.NATSTrafficShare = ratio(natsReq, answered)
	if compared > 0 {
		r := ratio(match, compared)
		sum.ShadowMatchRate = &r
	}
	sum.Text = summaryText(sum, answered > 0)
	return out
}

// routeReport is one route's line of the report, from its window.
func (s *Server) routeReport(ctx context.Context, c *compiled, rt *routes.Route, w *routeWindow) RouteReport {
	rr := RouteReport{Name: rt.Name, Method: rt.Method, Path: rt.Path, Stage: routes.Stage(appliedStage(c, rt))}
	if h := c.handlers[rt.Name]; h != nil && rr.Stage == routes.Canary {
		if st := h.stage.Load(); st != nil {
			rr.CanaryPercent = st.percent
		}
	}
	if rt.Rollout != nil {
		rr.Rollout = s.reportRollout(ctx, rt)
	}
	var resp *Responders
	if rt.HasNATS() {
		if resp = s.responders(rt.Name); resp != nil {
			n := resp.Count
			rr.Responders = &n
		}
	}
	rr.NATSShare = ratio(w.req[slotNATS], w.req[slotNATS]+w.req[slotLegacy])
	rr.Legacy = reportBackend(w, slotLegacy, seriesEdgeLegacy)
	rr.NATS = reportBackend(w, slotNATS, seriesEdgeNATS)
	if rr.Legacy != nil && rr.NATS != nil && rr.Legacy.P99 != nil && rr.NATS.P99 != nil && *rr.Legacy.P99 > 0 {
		r := round3(*rr.NATS.P99 / *rr.Legacy.P99)
		rr.P99Ratio = &r
	}
	rr.ShadowCompared = w.shadow[shadowMatch] + w.shadow[shadowMismatch]
	var rate float64
	if rr.ShadowCompared > 0 {
		rate = ratio(w.shadow[shadowMatch], rr.ShadowCompared)
		rr.ShadowMatchRate = &rate
	}

	if rr.Stage == routes.NATS || !rt.HasNATS() {
		return rr // at the end of the way, or with nowhere to go
	}
	want := reportMatchRate
	if rt.Rollout != nil {
		want = rt.Rollout.Gates.MinMatchRate
	}
	judged := rr.ShadowCompared >= reportMinCompared
	var why []string
	needResponders := rt.Pattern == routes.Request
	if needResponders && resp != nil && resp.Count == 0 {
		why = append(why, "no responders: discovery found no micro service answering "+rt.Subject.String())
	}
	if judged && rate < want {
		why = append(why, fmt.Sprintf("shadow mismatching: %s of %d comparisons match, want %s",
			percentText(rate), rr.ShadowCompared, percentText(want)))
	}
	rr.Blocked = strings.Join(why, "; ")
	respondersOK := !needResponders || resp != nil && resp.Count > 0
	shadowOK := rr.ShadowCompared == 0 || judged && rate >= want
	rr.Ready = rr.Blocked == "" && respondersOK && shadowOK
	return rr
}

// reportRollout reads a route's rollout record; a store that cannot be
// read makes the state "unknown", not the report fail.
func (s *Server) reportRollout(ctx context.Context, rt *routes.Route) *ReportRollout {
	ro := &ReportRollout{Steps: len(rt.Rollout.Steps)}
	rec, _, err := s.rollouts.load(ctx, rt.Name)
	if err != nil {
		ro.State, ro.Error = "unknown", err.Error()
		return ro
	}
	ro.State = rec.State
	if rec.State != RolloutIdle {
		ro.Step = min(rec.Step, ro.Steps-1) + 1
	}
	return ro
}

// reportBackend is one backend's figures, or nil if it answered nothing.
func reportBackend(w *routeWindow, b, series int) *ReportBackend {
	if w.req[b] == 0 {
		return nil
	}
	q := quantiles(&w.lat[series])
	return &ReportBackend{Requests: w.req[b], P50: q.P50, P99: q.P99, ErrorRate: ratio(w.errs[b], w.req[b])}
}

// summaryText is the summary in one line: "14 of 40 routes on NATS, 38 %
// of traffic; 5 in shadow, 99.7 % matching; 3 without responders".
func summaryText(sum *ReportSummary, traffic bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d routes on NATS, ", sum.ByStage.NATS, sum.Routes)
	if traffic {
		fmt.Fprintf(&b, "%s of traffic", percentText(sum.NATSTrafficShare))
	} else {
		b.WriteString("no traffic in the window")
	}
	fmt.Fprintf(&b, "; %d in shadow", sum.ByStage.Shadow)
	if sum.ShadowMatchRate != nil {
		fmt.Fprintf(&b, ", %s matching", percentText(*sum.ShadowMatchRate))
	}
	fmt.Fprintf(&b, "; %d without responders", sum.WithoutResponders)
	return b.String()
}

// percentText prints a share as a percentage to a tenth: "38 %", "99.7 %".
func percentText(v float64) string {
	t := strconv.FormatFloat(v*100, 'f', 1, 64)
	return strings.TrimSuffix(t, ".0") + " %"
}

func (s *Server) getReport(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Report(r.Context()))
}

// countStages sets natsgate_routes from the stages of the routes served
// now: at start, at each reload and at each stage change. The lock keeps
// a count read before a change from being written after it.
func (s *Server) countStages() {
	s.stageCountMu.Lock()
	defer s.stageCountMu.Unlock()
	c := s.table.Load()
	if c == nil {
		return
	}
	by := map[string]int{}
	for _, rt := range c.table.Routes {
		by[appliedStage(c, rt)]++
	}
	s.metrics.SetRoutes(by)
}
