package routes

import "time"

// A rollout plan moves a route from legacy to nats step by step, on the
// fleet's own numbers: each step holds a stage until its conditions are
// met while every gate keeps passing, and a failing gate rolls the route
// back at once. The elected leader replica judges and acts; the plan is
// compiled here, like every other field, before anything serves.

// Gate bounds.
const (
	// RolloutResolution is the grain of the fleet history that gates and
	// `until` read: windows are whole multiples of it.
	RolloutResolution = 5 * time.Second
	// MaxGateWindow is the longest gate window: the fleet history kept.
	MaxGateWindow = 15 * time.Minute
	// MaxRolloutSteps bounds a plan.
	MaxRolloutSteps = 20
)

// Gate defaults, for a plan that leaves a gate out.
const (
	DefaultGateWindow            = time.Minute
	DefaultGateMinRequests       = 100
	DefaultGateMaxErrorRateDelta = 0.01
	DefaultGateMaxP99Ratio       = 1.5
	DefaultGateMinMatchRate      = 0.99
)

// Rollout is a route's compiled plan.
type Rollout struct {
	Steps []RolloutStep
	Gates Gates
	// OnFailure is where a failing gate sends the route: Legacy, or the
	// stage of the step before the failing one (RollBackPrevious).
	OnFailure RollBack
}

// RollBack is where a rollout goes when a gate fails.
type RollBack string

const (
	// RollBackLegacy puts the route back on its legacy service.
	RollBackLegacy RollBack = "legacy"
	// RollBackPrevious puts the route back at the previous step's stage
	// (legacy when the first step fails).
	RollBackPrevious RollBack = "previous"
)

// RolloutStep is one step of a plan: a stage held until its conditions are
// met. A step with neither Until nor Hold is done at the first verdict of
// passing gates.
type RolloutStep struct {
	Stage Stage
	// Percent is the canary share, 1 to 100; 0 for other stages.
	Percent int
	// Hold is the least time the step lasts; 0 for none.
	Hold time.Duration
	// Until, when set, are counts the step must reach; nil for none.
	Until *Until
}

// Until are a step's conditions on the route's traffic since the step
// began, counted over the fleet.
type Until struct {
	// Requests answered by the route, over every backend; 0 for none.
	Requests uint64
	// MatchRate is the least share of shadow comparisons that matched,
	// 0 for none; only on a shadow step.
	MatchRate float64
}

// Gates are judged on the fleet's stats over Window during every step.
// Fewer than MinRequests requests to a side give no verdict: the step
// neither advances nor rolls back.
type Gates struct {
	Window      time.Duration
	MinRequests uint64
	// MaxErrorRateDelta bounds the NATS side's 5xx share minus legacy's.
	MaxErrorRateDelta float64
	// MaxP99Ratio bounds NATS p99 over legacy p99 (edge latency).
	MaxP99Ratio float64
	// MinMatchRate is the least shadow match rate, judged while in shadow.
	MinMatchRate float64
}
