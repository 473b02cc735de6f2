package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/routes"
)

// The rollout controller moves a route through its plan's steps on the
// fleet's numbers. Its state, one record per route, lives in the
// fleet.rollout_bucket key-value bucket, so it survives restarts of every
// replica, and only the elected leader changes it on its own: each second
// it reads every record, judges the gates on the fleet history, and
// writes the next state by compare-and-set on the revision it read, so a
// step is taken once even when two replicas briefly both believe they
// lead. Stages are written through the cutover bucket like any change,
// after the record that calls for them: a record whose stage is not yet
// applied (the leader died between the two writes) is applied by whoever
// leads next.
const (
	rolloutTick = time.Second
	// rolloutFollow is how many rounds a replica that does not lead lets
	// pass between reads.
	rolloutFollow = 5
	// rolloutHistory bounds the decisions a record keeps.
	rolloutHistory = 100
	// rolloutBy names the controller in the cutover bucket's audit fields.
	rolloutBy = "rollout"
)

// Rollout states.
const (
	RolloutIdle       = "idle"
	RolloutRunning    = "running"
	RolloutPaused     = "paused"
	RolloutDone       = "done"
	RolloutRolledBack = "rolled_back"
	RolloutAborted    = "aborted"
)

// Rollout decisions, as history entries and natsgate_rollout_decisions_total.
const (
	decisionStart    = "start"
	decisionAdvance  = "advance"
	decisionDone     = "done"
	decisionRollback = "rollback"
	decisionPause    = "pause"
	decisionResume   = "resume"
	decisionAbort    = "abort"
)

var rolloutDecisions = []string{decisionStart, decisionAdvance, decisionDone, decisionRollback, decisionPause, decisionResume, decisionAbort}

// rolloutRecord is one route's stored rollout state.
type rolloutRecord struct {
	State string `json:"state"`
	// Step is the index of the plan's current step.
	Step int `json:"step"`
	// Since is when the step (or, out of running, the state) began.
	Since time.Time `json:"since"`
	// Target is the stage the state calls for, and Applied whether it has
	// been written to the cutover bucket.
	Target  stageTarget `json:"target"`
	Applied bool        `json:"applied"`
	// Plan is a hash of the plan the record follows; a reload that
	// changes the plan pauses a running rollout.
	Plan string `json:"plan"`
	// Baseline is the legacy side's numbers as last measured, for the
	// gates once legacy no longer answers enough requests to judge.
	Baseline *rolloutBaseline  `json:"baseline,omitempty"`
	History  []RolloutDecision `json:"history"`
}

// stageTarget is a stage and, for canary, its share.
type stageTarget struct {
	Stage   routes.Stage `json:"stage"`
	Percent int          `json:"percent,omitempty"`
}

func (t stageTarget) String() string {
	if t.Stage == routes.Canary {
		return fmt.Sprintf("canary %d%%", t.Percent)
	}
	return string(t.Stage)
}

func stepTarget(st routes.RolloutStep) stageTarget {
	return stageTarget{Stage: st.Stage, Percent: st.Percent}
}

type rolloutBaseline struct {
	ErrorRate float64 `json:"error_rate"`
	P99ms     float64 `json:"p99_ms"`
}

// RolloutDecision is one entry of a rollout's history.
type RolloutDecision struct {
	At       time.Time `json:"at"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Decision string    `json:"decision"`
	Reason   string    `json:"reason,omitempty"`
	By       string    `json:"by"`
}

// GateStatus is one gate as last judged: Value and OK are null when the
// window holds too few requests for a verdict.
type GateStatus struct {
	Name  string   `json:"name"`
	Value *float64 `json:"value"`
	Limit float64  `json:"limit"`
	OK    *bool    `json:"ok"`
}

// RolloutStatus is what GET /admin/routes/{name}/rollout answers.
type RolloutStatus struct {
	Route string `json:"route"`
	State string `json:"state"`
	// Step is the current step, from 1; 0 when idle.
	Step    int          `json:"step"`
	Steps   int          `json:"steps"`
	Stage   routes.Stage `json:"stage"`
	Percent int          `json:"percent"`
	Since   *time.Time   `json:"since,omitempty"`
	// Leader is the replica that acts on the plan.
	Leader  string            `json:"leader"`
	Gates   []GateStatus      `json:"gates"`
	History []RolloutDecision `json:"history"`
}

// planHash identifies a plan, so a record can tell it still follows the
// config's.
func planHash(p *routes.Rollout) string {
	b, _ := json.Marshal(p)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// rollouts is this replica's side of the controller.
type rollouts struct {
	s      *Server
	bucket string

	mu sync.Mutex
	kv jetstream.KeyValue
	// marked is, per route, the time of the newest decision put on the
	// route's chart.
	marked map[string]time.Time
	// unrunnable is, per route, the revision of the last record warned
	// about for a stage the route cannot run (see cannotRun).
	unrunnable map[string]uint64

	started    bool // Start ran; set before the round goroutine
	stop, done chan struct{}
}

// ErrRolloutStore is returned when rollout state cannot be read or
// written: JetStream is off, or NATS is down.
var ErrRolloutStore = errors.New("the rollout store is unavailable")

// errRolloutConflict is a compare-and-set that lost to another writer.
var errRolloutConflict = errors.New("the rollout changed meanwhile")

func newRollouts(s *Server) *rollouts {
	r := &rollouts{s: s, bucket: s.cfg.Fleet.RolloutBucket, marked: map[string]time.Time{}, unrunnable: map[string]uint64{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if r.bucket == "" {
		r.bucket = routes.DefaultFleetRolloutBucket
	}
	return r
}

// startRollouts runs the controller's rounds, after startLeader.
func (s *Server) startRollouts() {
	s.rollouts.started = true
	go s.rollouts.run()
}

func (s *Server) stopRollouts() {
	r := s.rollouts
	if !r.started {
		return
	}
	select {
	case <-r.stop:
	default:
		close(r.stop)
		<-r.done
	}
}

func (r *rollouts) run() {
	defer close(r.done)
	t := time.NewTicker(rolloutTick)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		// The leader reads every record each second; the others only keep
		// their gauge and chart marks, every rolloutFollow, so a large
		// fleet does not read the bucket once per replica a second.
		if !r.planned() || !r.s.IsLeader() && n%rolloutFollow != 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), rolloutTick)
		r.tick(ctx)
		cancel()
	}
}

// planned reports whether any served route has a plan.
func (r *rollouts) planned() bool {
	for _, rt := range r.s.table.Load().table.Routes {
		if rt.Rollout != nil {
			return true
		}
	}
	return false
}

// store opens the bucket on first use, creating it if missing.
func (r *rollouts) store(ctx context.Context) (jetstream.KeyValue, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kv != nil {
		return r.kv, nil
	}
	js := r.s.conn.js
	if js == nil || !r.s.conn.nc.IsConnected() {
		return nil, ErrRolloutStore
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      r.bucket,
		Description: "natsgate rollout state, one key per route with a plan",
		History:     5,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRolloutStore, err)
	}
	r.kv = kv
	return kv, nil
}

// load reads a route's record; a route never started is idle, at
// revision 0.
func (r *rollouts) load(ctx context.Context, route string) (*rolloutRecord, uint64, error) {
	kv, err := r.store(ctx)
	if err != nil {
		return nil, 0, err
	}
	e, err := kv.Get(ctx, route)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return &rolloutRecord{State: RolloutIdle}, 0, nil
	case err != nil:
		r.forgetStore()
		return nil, 0, fmt.Errorf("%w: %v", ErrRolloutStore, err)
	}
	var rec rolloutRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil || !validRolloutState(rec.State) || rec.Step < 0 {
		// A value no replica wrote: treated as idle, and overwritten by the
		// next start. A negative step would index the plan out of range
		// and crash every replica that leads; a step past the last is a
		// plan that changed, and pauses.
		r.s.log.Warn("rollout: ignoring an unreadable record", "bucket", r.bucket, "key", route, "revision", e.Revision())
		return &rolloutRecord{State: RolloutIdle}, e.Revision(), nil
	}
	return &rec, e.Revision(), nil
}

func validRolloutState(s string) bool {
	switch s {
	case RolloutIdle, RolloutRunning, RolloutPaused, RolloutDone, RolloutRolledBack, RolloutAborted:
		return true
	}
	return false
}

// save writes a record by compare-and-set on rev (0: the key must not
// exist, or was deleted).
func (r *rollouts) save(ctx context.Context, route string, rec *rolloutRecord, rev uint64) (uint64, error) {
	kv, err := r.store(ctx)
	if err != nil {
		return 0, err
	}
	if n := len(rec.History); n > rolloutHistory {
		rec.History = rec.History[n-rolloutHistory:]
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = kv.Create(ctx, route, b)
	} else {
		nrev, err = kv.Update(ctx, route, b, rev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return 0, errRolloutConflict
	case err != nil:
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, errRolloutConflict
		}
		r.forgetStore()
		return 0, fmt.Errorf("%w: %v", ErrRolloutStore, err)
	}
	return nrev, nil
}

// forgetStore drops the bucket handle after an error, so the next call
// opens the bucket again, creating it if it was deleted behind natsgate's
// back (its records are lost with it: every planned route reads idle). A
// deleted bucket shows only as errors such as no responders, so any error
// does.
func (r *rollouts) forgetStore() {
	r.mu.Lock()
	r.kv = nil
	r.mu.Unlock()
}

// decided counts and logs a decision once it is stored.
func (r *rollouts) decided(route string, d RolloutDecision) {
	r.s.metrics.RolloutDecisions.WithLabelValues(route, d.Decision).Inc()
	lvl := slog.LevelInfo
	if d.Decision == decisionRollback {
		lvl = slog.LevelWarn
	}
	r.s.log.Log(context.Background(), lvl, "rollout: "+d.Decision, "route", route, "from", d.From, "to", d.To, "reason", d.Reason, "by", d.By)
}

// tick is one round over every route with a plan: every replica keeps
// its step gauge and chart marks; the leader acts.
func (r *rollouts) tick(ctx context.Context) {
	c := r.s.table.Load()
	leads := r.s.IsLeader()
	for _, rt := range c.table.Routes {
		if rt.Rollout == nil {
			continue
		}
		rec, rev, err := r.load(ctx, rt.Name)
		if err != nil {
			r.s.log.Debug("rollout: reading state", "route", rt.Name, "error", err)
			continue
		}
		if leads {
			next := *rec
			next.History = slices.Clone(rec.History)
			switch err := r.act(ctx, rt, &next, rev); {
			case err == nil:
				rec = &next
			case !errors.Is(err, errRolloutConflict):
				r.s.log.Warn("rollout: acting on the plan", "route", rt.Name, "error", err)
			}
		}
		r.observe(rt.Name, rec) // what is stored, not a decision that lost
	}
}

// observe sets the step gauge and puts decisions not yet marked on the
// route's chart.
func (r *rollouts) observe(route string, rec *rolloutRecord) {
	step := 0
	if rec.State == RolloutRunning || rec.State == RolloutPaused {
		step = rec.Step + 1
	}
	r.s.metrics.RolloutStep.WithLabelValues(route).Set(float64(step))
	for _, d := range rolloutDecisions { // exported from 0, so increase() sees the first
		r.s.metrics.RolloutDecisions.WithLabelValues(route, d)
	}
	// A decision dated past markAhead from now is left off the chart: it
	// was written behind the replicas' back or by a clock far ahead, and
	// taken as the newest marked it would keep every decision after it
	// off until its date.
	horizon := time.Now().Add(markAhead)
	r.mu.Lock()
	last := r.marked[route]
	for _, d := range rec.History {
		if d.At.After(last) && !d.At.After(horizon) {
			r.s.history.mark(route, "rollout", d.Decision+" → "+d.To)
			last = d.At
		}
	}
	r.marked[route] = last
	r.mu.Unlock()
}

// markAhead is how far ahead of this replica's clock a decision's time
// may be and still be marked: more than replicas' clocks drift apart.
const markAhead = time.Minute

// applyTarget writes the stage rec calls for and marks it applied,
// returning the record's new revision. The record may have been read long
// ago, by a leader that stalled meanwhile: it is confirmed to be still the
// latest, by compare-and-set, before the stage is written, or a stale
// writer would put back a stage the rollout has left.
func (r *rollouts) applyTarget(ctx context.Context, rt *routes.Route, rec *rolloutRecord, rev uint64) (uint64, error) {
	nrev, err := r.save(ctx, rt.Name, rec, rev)
	if err != nil {
		return rev, err
	}
	if err := r.apply(ctx, rt, rec.Target); err != nil {
		return nrev, err
	}
	rec.Applied = true
	return r.save(ctx, rt.Name, rec, nrev)
}

// runnable says why a route cannot run a stage, or nil when it can.
// Every stage a plan names can run on its route (the config checks it at
// load); a record written behind the replicas' back may name any.
func runnable(rt *routes.Route, t stageTarget) error {
	p := t.Percent
	_, err := checkOverride(rt, string(t.Stage), &p)
	return err
}

// cannotRun deals with a record whose target the route cannot run:
// writing it would fail every round, so a running rollout is paused,
// saying why (resume starts the step over at the plan's stage), and
// one in another state is left as it is, warned about once.
func (r *rollouts) cannotRun(ctx context.Context, rt *routes.Route, rec *rolloutRecord, rev uint64, now time.Time, why error) error {
	if rec.State != RolloutRunning {
		r.mu.Lock()
		warned := r.unrunnable[rt.Name] == rev
		r.unrunnable[rt.Name] = rev
		r.mu.Unlock()
		if !warned {
			r.s.log.Warn("rollout: the stored record's stage cannot run on the route; left as it is", "route", rt.Name, "state", rec.State, "stage", rec.Target.String(), "error", why)
		}
		return nil
	}
	d := RolloutDecision{At: now, From: rec.Target.String(), To: rec.Target.String(), Decision: decisionPause, By: rolloutBy,
		Reason: "the stage the record names cannot run on this route: " + why.Error()}
	rec.State, rec.Since = RolloutPaused, now
	rec.History = append(rec.History, d)
	if _, err := r.save(ctx, rt.Name, rec, rev); err != nil {
		return err
	}
	r.decided(rt.Name, d)
	return nil
}

// act is the leader's round for one route.
func (r *rollouts) act(ctx context.Context, rt *routes.Route, rec *rolloutRecord, rev uint64) error {
	plan := rt.Rollout
	now := time.Now().UTC()
	if !rec.Applied && rec.State != RolloutIdle && rec.State != RolloutPaused {
		if err := runnable(rt, rec.Target); err != nil {
			return r.cannotRun(ctx, rt, rec, rev, now, err)
		}
		var err error
		if rev, err = r.applyTarget(ctx, rt, rec, rev); err != nil {
			return err
		}
	}
	if rec.State != RolloutRunning {
		return nil
	}
	var d RolloutDecision
	from := rec.Target.String()
	pause := func(reason string) {
		d = RolloutDecision{Decision: decisionPause, To: rec.Target.String(), Reason: reason}
		rec.State = RolloutPaused
	}
	j := r.s.judge(rt, rec, now)
	step := plan.Steps[min(rec.Step, len(plan.Steps)-1)]
	switch cur, err := r.currentStage(ctx, rt); {
	case err != nil:
		return err
	case rec.Plan != planHash(plan) || rec.Step >= len(plan.Steps):
		pause("the route's plan changed in the config")
	case cur != rec.Target:
		pause("the stage was changed outside the rollout, to " + cur.String())
	case j.failed != nil:
		to := stageTarget{Stage: routes.Legacy}
		if plan.OnFailure == routes.RollBackPrevious && rec.Step > 0 {
			to = stepTarget(plan.Steps[rec.Step-1])
		}
		g := j.failed
		d = RolloutDecision{Decision: decisionRollback, To: to.String(),
			Reason: fmt.Sprintf("gate %s: %s, limit %s, over %s", g.Name, fmtGate(*g.Value), fmtGate(g.Limit), j.window)}
		rec.State, rec.Target, rec.Applied = RolloutRolledBack, to, false
	case !j.passed || now.Sub(rec.Since) < step.Hold || !j.untilMet:
		return nil
	case rec.Step == len(plan.Steps)-1:
		d = RolloutDecision{Decision: decisionDone, To: rec.Target.String(), Reason: j.summary()}
		rec.State = RolloutDone
	default:
		next := stepTarget(plan.Steps[rec.Step+1])
		d = RolloutDecision{Decision: decisionAdvance, To: next.String(), Reason: j.summary()}
		rec.Step++
		rec.Target, rec.Applied = next, false
	}
	if j.baseline != nil {
		rec.Baseline = j.baseline
	}
	d.At, d.From, d.By = now, from, rolloutBy
	rec.Since = now
	rec.History = append(rec.History, d)
	nrev, err := r.save(ctx, rt.Name, rec, rev)
	if err != nil {
		return err
	}
	r.decided(rt.Name, d)
	if !rec.Applied {
		if err := r.apply(ctx, rt, rec.Target); err != nil {
			return err // the next round, or the next leader, applies it
		}
		rec.Applied = true
		_, err = r.save(ctx, rt.Name, rec, nrev)
	}
	return err
}

// apply writes a stage to the cutover bucket, as the controller.
func (r *rollouts) apply(ctx context.Context, rt *routes.Route, t stageTarget) error {
	p := t.Percent
	o, err := checkOverride(rt, string(t.Stage), &p)
	if err != nil {
		return err
	}
	o.By, o.At = rolloutBy, time.Now().UTC()
	return r.s.putOverride(ctx, rt.Name, o)
}

// currentStage reads the stage the cutover bucket holds for a route, or
// the config's without an override: the bucket, not this replica's copy,
// so a leader just elected judges what every replica will run.
func (r *rollouts) currentStage(ctx context.Context, rt *routes.Route) (stageTarget, error) {
	kv := r.s.cutovers.store()
	if kv == nil {
		return stageTarget{}, ErrCutoverStore
	}
	cfg := stageTarget{Stage: rt.Cutover, Percent: rt.CanaryPercent}
	e, err := kv.Get(ctx, rt.Name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return normal(cfg), nil
	case err != nil:
		return stageTarget{}, fmt.Errorf("%w: %v", ErrCutoverStore, err)
	}
	o, err := decodeOverride(rt, e.Value())
	if err != nil {
		return normal(cfg), nil
	}
	return normal(stageTarget{Stage: o.Cutover, Percent: o.CanaryPercent}), nil
}

// normal drops the share of a stage other than canary, where it means
// nothing.
func normal(t stageTarget) stageTarget {
	if t.Stage != routes.Canary {
		t.Percent = 0
	}
	return t
}

// judgement is the gates' verdict on one step.
type judgement struct {
	gates    []GateStatus
	failed   *GateStatus // the first gate that failed, if any
	passed   bool        // every gate judged and passing
	untilMet bool
	window   time.Duration // the window judged
	requests uint64        // requests in it
	baseline *rolloutBaseline
}

func (j *judgement) summary() string {
	s := fmt.Sprintf("gates passed over %s (%d requests)", j.window, j.requests)
	for _, g := range j.gates {
		s += fmt.Sprintf("; %s %s", g.Name, fmtGate(*g.Value))
	}
	return s
}

func fmtGate(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

// judge reads the gates of a route's current step on the fleet history:
// the settled slots of the gate window that began after the step did.
func (s *Server) judge(rt *routes.Route, rec *rolloutRecord, now time.Time) judgement {
	plan := rt.Rollout
	g := plan.Gates
	step := plan.Steps[min(rec.Step, len(plan.Steps)-1)]
	to := s.judgedSlot()
	stepFrom := epochOf(rec.Since) + 1
	from := max(to-int64(g.Window/statsSlot)+1, stepFrom)
	var j judgement
	w, n := s.history.sum(rt.Name, from, to)
	j.window = time.Duration(n) * statsSlot
	for b := range w.req {
		j.requests += w.req[b]
	}
	legacyReq, natsReq := w.req[slotLegacy], w.req[slotNATS]
	var base *rolloutBaseline
	if legacyReq >= g.MinRequests {
		base = &rolloutBaseline{ErrorRate: float64(w.errs[slotLegacy]) / float64(legacyReq)}
		if q := quantiles(&w.lat[seriesEdgeLegacy]); q.P99 != nil {
			base.P99ms = *q.P99
		}
		j.baseline = base
	} else if rec.Baseline != nil {
		base = rec.Baseline
	}
	add := func(name string, value float64, limit float64, judged, ok bool) {
		gs := GateStatus{Name: name, Limit: limit}
		if judged {
			gs.Value, gs.OK = &value, &ok
		}
		j.gates = append(j.gates, gs)
	}
	switch step.Stage {
	case routes.Shadow:
		compared := w.shadow[shadowMatch] + w.shadow[shadowMismatch]
		rate := ratioOf(w.shadow[shadowMatch], compared)
		add("min_match_rate", rate, g.MinMatchRate, compared >= g.MinRequests, rate >= g.MinMatchRate)
	default:
		judged := natsReq >= g.MinRequests
		natsRate := ratioOf(w.errs[slotNATS], natsReq)
		legacyRate := 0.0
		if base != nil {
			legacyRate = base.ErrorRate
		}
		delta := natsRate - legacyRate
		add("max_error_rate_delta", delta, g.MaxErrorRateDelta, judged, delta <= g.MaxErrorRateDelta)
		var ratio float64
		p99 := quantiles(&w.lat[seriesEdgeNATS]).P99
		canRatio := judged && p99 != nil && base != nil && base.P99ms > 0
		if canRatio {
			ratio = *p99 / base.P99ms
		}
		add("max_p99_ratio", ratio, g.MaxP99Ratio, canRatio, ratio <= g.MaxP99Ratio)
	}
	j.passed = true
	for i := range j.gates {
		gs := &j.gates[i]
		switch {
		case gs.OK == nil:
			j.passed = false
		case !*gs.OK:
			j.passed = false
			if j.failed == nil {
				j.failed = gs
			}
		}
	}
	j.untilMet = true
	if u := step.Until; u != nil {
		sw, _ := s.history.sum(rt.Name, stepFrom, to)
		var total uint64
		for b := range sw.req {
			total += sw.req[b]
		}
		compared := sw.shadow[shadowMatch] + sw.shadow[shadowMismatch]
		if total < u.Requests || u.MatchRate > 0 && (compared == 0 || ratioOf(sw.shadow[shadowMatch], compared) < u.MatchRate) {
			j.untilMet = false
		}
	}
	return j
}

// judgedSlot is the newest slot the gates judge: the newest settled one,
// unless a live replica has not sent it yet (frozen, or its host stalled
// past the settling time), then the one before, so a decision is not
// taken on part of the fleet's evidence while the rest is on its way. A
// replica more than one slot behind (a clock far back, or a forged
// message) is not waited for, nor one gone quiet for fleetStale, so none
// holds the rollout back for long.
func (s *Server) judgedSlot() int64 {
	to := s.history.settled()
	if s.fleet == nil {
		return to
	}
	for _, p := range s.fleet.live() {
		if p.msg.Slot == to-1 {
			return to - 1
		}
	}
	return to
}

// ratioOf is a/b, 0 when b is.
func ratioOf(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// status is a route's rollout as the admin API shows it.
func (s *Server) rolloutStatus(rt *routes.Route, rec *rolloutRecord) RolloutStatus {
	st := RolloutStatus{Route: rt.Name, State: rec.State, Steps: len(rt.Rollout.Steps), Leader: s.leaderID(),
		Gates: []GateStatus{}, History: rec.History}
	if st.History == nil {
		st.History = []RolloutDecision{}
	}
	if rec.State == RolloutIdle {
		if h := s.table.Load().handlers[rt.Name]; h != nil {
			if cur := h.stage.Load(); cur != nil {
				st.Stage, st.Percent = cur.stage, cur.percent
			}
		}
		return st
	}
	st.Step = min(rec.Step, len(rt.Rollout.Steps)-1) + 1
	st.Stage, st.Percent = rec.Target.Stage, rec.Target.Percent
	since := rec.Since
	st.Since = &since
	if rec.State == RolloutRunning || rec.State == RolloutPaused {
		st.Gates = s.judge(rt, rec, time.Now()).gates
		for i := range st.Gates {
			if v := st.Gates[i].Value; v != nil {
				r := math.Round(*v*1e4) / 1e4
				st.Gates[i].Value = &r
			}
		}
	}
	return st
}

// changeRollout is an admin action on a route's rollout: start, pause,
// resume or abort, by compare-and-set, retried when another writer won.
func (s *Server) changeRollout(ctx context.Context, rt *routes.Route, action, by string) (*rolloutRecord, error) {
	r := s.rollouts
	for range 5 {
		rec, rev, err := r.load(ctx, rt.Name)
		if err != nil {
			return nil, err
		}
		now := time.Now().UTC()
		d := RolloutDecision{At: now, From: rec.Target.String(), By: by}
		switch action {
		case decisionStart:
			if rec.State == RolloutRunning || rec.State == RolloutPaused {
				return nil, &rolloutConflict{state: rec.State, action: action}
			}
			first := stepTarget(rt.Rollout.Steps[0])
			d.To, d.From = first.String(), ""
			if cur, err := r.currentStage(ctx, rt); err == nil {
				d.From = cur.String()
			}
			*rec = rolloutRecord{State: RolloutRunning, Since: now, Target: first, Plan: planHash(rt.Rollout), History: rec.History}
		case decisionPause:
			if rec.State != RolloutRunning {
				return nil, &rolloutConflict{state: rec.State, action: action}
			}
			d.To = d.From
			rec.State, rec.Since = RolloutPaused, now
		case decisionResume:
			if rec.State != RolloutPaused {
				return nil, &rolloutConflict{state: rec.State, action: action}
			}
			if rec.Plan != planHash(rt.Rollout) || rec.Step >= len(rt.Rollout.Steps) {
				return nil, &rolloutConflict{state: rec.State, action: action, why: "the plan changed since the rollout started; abort it and start again"}
			}
			// The step starts over at its stage, written again in case it
			// was changed while paused.
			rec.Target = stepTarget(rt.Rollout.Steps[rec.Step])
			d.To = rec.Target.String()
			rec.State, rec.Since, rec.Applied = RolloutRunning, now, false
		case decisionAbort:
			if rec.State != RolloutRunning && rec.State != RolloutPaused {
				return nil, &rolloutConflict{state: rec.State, action: action}
			}
			rec.Target = stageTarget{Stage: routes.Legacy}
			d.To = rec.Target.String()
			rec.State, rec.Since, rec.Applied = RolloutAborted, now, false
		}
		d.Decision = action
		rec.History = append(rec.History, d)
		nrev, err := r.save(ctx, rt.Name, rec, rev)
		if errors.Is(err, errRolloutConflict) {
			continue
		} else if err != nil {
			return nil, err
		}
		if action == decisionAbort {
			// The brake takes hold here, not at the leader's next round:
			// the leader may be stalled, or gone with no successor yet.
			// If this loses a race (a start since), the record that won
			// says what to do and the leader does it.
			applied := *rec
			if _, err := r.applyTarget(ctx, rt, &applied, nrev); err == nil {
				rec = &applied
			} else if !errors.Is(err, errRolloutConflict) {
				s.log.Warn("rollout: putting an aborted route back on legacy; the leader will retry", "route", rt.Name, "error", err)
			}
		}
		r.decided(rt.Name, d)
		r.observe(rt.Name, rec)
		return rec, nil
	}
	return nil, errRolloutConflict
}

// rolloutConflict is an action the rollout's state does not allow.
type rolloutConflict struct {
	state, action, why string
}

func (e *rolloutConflict) Error() string {
	if e.why != "" {
		return e.why
	}
	return fmt.Sprintf("cannot %s a rollout that is %s", e.action, e.state)
}

// rolloutRoute finds a route with a plan for an admin call, or answers 404.
func (s *Server) rolloutRoute(w http.ResponseWriter, r *http.Request) *routes.Route {
	name := chi.URLParam(r, "name")
	h := s.routeOr404(w, r, name)
	if h == nil {
		return nil
	}
	if h.rt.Rollout == nil {
		s.adminProblem(w, r, http.StatusNotFound, "no_rollout", name, "the route has no rollout plan in the config")
		return nil
	}
	return h.rt
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request) {
	rt := s.rolloutRoute(w, r)
	if rt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	rec, _, err := s.rollouts.load(ctx, rt.Name)
	if err != nil {
		s.adminProblem(w, r, http.StatusServiceUnavailable, "rollout_store", rt.Name, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.rolloutStatus(rt, rec))
}

type rolloutRequest struct {
	Action string `json:"action"`
	// Force starts a plan although discovery found no micro service
	// serving the route (see noResponders).
	Force bool `json:"force"`
}

func (s *Server) putRollout(w http.ResponseWriter, r *http.Request) {
	rt := s.rolloutRoute(w, r)
	if rt == nil {
		return
	}
	var req rolloutRequest
	err := decodeStrict(io.LimitReader(r.Body, 4096), &req)
	switch {
	case err != nil:
	case req.Action == decisionStart, req.Action == decisionPause, req.Action == decisionResume, req.Action == decisionAbort:
	default:
		err = fmt.Errorf("action %q is not one of start, pause, resume, abort", req.Action)
	}
	if err != nil {
		s.adminProblem(w, r, http.StatusBadRequest, "bad_request", rt.Name, `body: want {"action": "start|pause|resume|abort"}: `+err.Error())
		return
	}
	forced := false
	if req.Action == decisionStart {
		why, refuse := s.noResponders(r.Context(), rt)
		if refuse && !req.Force {
			s.adminProblem(w, r, http.StatusConflict, "no_responders", rt.Name, why)
			return
		}
		forced = refuse
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	rec, err := s.changeRollout(ctx, rt, req.Action, actor(r))
	var conflict *rolloutConflict
	switch {
	case errors.As(err, &conflict):
		s.adminProblem(w, r, http.StatusConflict, "rollout_state", rt.Name, err.Error())
		return
	case errors.Is(err, errRolloutConflict):
		s.adminProblem(w, r, http.StatusConflict, "rollout_busy", rt.Name, "the rollout kept changing while this action was stored; try again")
		return
	case err != nil:
		s.adminProblem(w, r, http.StatusServiceUnavailable, "rollout_store", rt.Name, err.Error())
		return
	}
	s.log.Info("audit: rollout "+req.Action, "route", rt.Name, "by", actor(r), "state", rec.State, "step", rec.Step+1, "forced", forced)
	writeJSON(w, http.StatusOK, s.rolloutStatus(rt, rec))
}
