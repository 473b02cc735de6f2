package routes_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// planRoute is a config whose one route, r1, has an upstream, a nats side
// and the rollout plan written in lines (indented under "rollout:"). The
// route starts on line 4 and the plan's first line is line 9, which is
// also the line a problem with the plan as a whole names (a mapping stands
// where its first key does).
func planRoute(lines ...string) string {
	return "upstreams:\n  legacy: {url: http://127.0.0.1:1}\nroutes:\n" +
		"  - name: r1\n    path: /a\n    upstream: legacy\n    nats: {subject: a}\n    rollout:\n" +
		"      " + strings.Join(lines, "\n      ") + "\n"
}

// checkLoadError loads text and checks that one of the problems reported
// is want, at its line, printed as file:line: route "name": field: ...
func checkLoadError(t *testing.T, text string, want wantError) {
	t.Helper()
	_, err := routes.Load("gate.yaml", []byte(text), noEnv)
	if err == nil {
		t.Fatalf("Load accepted\n%s", text)
	}
	if !errors.Is(err, routes.ErrInvalidConfig) {
		t.Errorf("errors.Is(err, ErrInvalidConfig) = false for %v", err)
	}
	got := findError(fieldErrors(t, err), want)
	if got == nil {
		t.Fatalf("want an error %v, got:\n%v\nfrom:\n%s", want, err, text)
	}
	if got.File != "gate.yaml" || got.Line != want.line {
		t.Errorf("error at %s:%d, want gate.yaml:%d: %v", got.File, got.Line, want.line, got)
	}
	prefix := fmt.Sprintf("gate.yaml:%d: ", want.line)
	if want.route != "" {
		prefix += fmt.Sprintf("route %q: ", want.route)
	}
	prefix += want.field + ": "
	if s := got.Error(); !strings.HasPrefix(s, prefix) {
		t.Errorf("error reads %q, want it to start with %q", s, prefix)
	}
}

func intp(n int) *int { return &n }

// A plan as written compiles to the Rollout the controller runs, every
// field carried over; gates and on_failure left out take their defaults;
// a gate written as 0 stays 0 rather than taking the default.
func TestRolloutCompiles(t *testing.T) {
	defaultGates := routes.Gates{
		Window:            routes.DefaultGateWindow,
		MinRequests:       routes.DefaultGateMinRequests,
		MaxErrorRateDelta: routes.DefaultGateMaxErrorRateDelta,
		MaxP99Ratio:       routes.DefaultGateMaxP99Ratio,
		MinMatchRate:      routes.DefaultGateMinMatchRate,
	}
	tests := []struct {
		name string
		plan []string
		want routes.Rollout
	}{
		{
			name: "the full plan",
			plan: []string{
				"steps:",
				"  - {stage: shadow, until: {requests: 1000, match_rate: 0.999}}",
				"  - {stage: canary, percent: 5, hold: 5m}",
				"  - {stage: canary, percent: 25, hold: 10m}",
				"  - {stage: canary, percent: 50, hold: 10m}",
				"  - {stage: nats}",
				"gates:",
				"  window: 1m",
				"  min_requests: 200",
				"  max_error_rate_delta: 0.005",
				"  max_p99_ratio: 1.2",
				"  min_match_rate: 0.995",
				"on_failure: previous",
			},
			want: routes.Rollout{
				Steps: []routes.RolloutStep{
					{Stage: routes.Shadow, Until: &routes.Until{Requests: 1000, MatchRate: 0.999}},
					{Stage: routes.Canary, Percent: 5, Hold: 5 * time.Minute},
					{Stage: routes.Canary, Percent: 25, Hold: 10 * time.Minute},
					{Stage: routes.Canary, Percent: 50, Hold: 10 * time.Minute},
					{Stage: routes.NATS},
				},
				Gates:     routes.Gates{Window: time.Minute, MinRequests: 200, MaxErrorRateDelta: 0.005, MaxP99Ratio: 1.2, MinMatchRate: 0.995},
				OnFailure: routes.RollBackPrevious,
			},
		},
		{
			name: "defaults fill",
			plan: []string{"steps: [{stage: nats}]"},
			want: routes.Rollout{Steps: []routes.RolloutStep{{Stage: routes.NATS}}, Gates: defaultGates, OnFailure: routes.RollBackLegacy},
		},
		{
			name: "an empty gates section takes every default",
			plan: []string{"steps: [{stage: canary, percent: 10}]", "gates: {}", "on_failure: legacy"},
			want: routes.Rollout{Steps: []routes.RolloutStep{{Stage: routes.Canary, Percent: 10}}, Gates: defaultGates, OnFailure: routes.RollBackLegacy},
		},
		{
			name: "gates written as their least values stay",
			plan: []string{
				"steps: [{stage: shadow, until: {requests: 1}}, {stage: canary, percent: 100}]",
				"gates: {window: 5s, min_requests: 1, max_error_rate_delta: 0, max_p99_ratio: 1, min_match_rate: 0}",
			},
			want: routes.Rollout{
				Steps:     []routes.RolloutStep{{Stage: routes.Shadow, Until: &routes.Until{Requests: 1}}, {Stage: routes.Canary, Percent: 100}},
				Gates:     routes.Gates{Window: 5 * time.Second, MinRequests: 1, MaxErrorRateDelta: 0, MaxP99Ratio: 1, MinMatchRate: 0},
				OnFailure: routes.RollBackLegacy,
			},
		},
		{
			name: "gates at their greatest values",
			plan: []string{
				"steps: [{stage: shadow, until: {match_rate: 1}, hold: 0s}, {stage: shadow}, {stage: canary, percent: 1}, {stage: canary, percent: 1}, {stage: nats, hold: 1h}]",
				"gates: {window: 15m, max_error_rate_delta: 1, min_match_rate: 1}",
			},
			want: routes.Rollout{
				Steps: []routes.RolloutStep{
					{Stage: routes.Shadow, Until: &routes.Until{MatchRate: 1}},
					{Stage: routes.Shadow},
					{Stage: routes.Canary, Percent: 1},
					{Stage: routes.Canary, Percent: 1},
					{Stage: routes.NATS, Hold: time.Hour},
				},
				Gates: routes.Gates{Window: 15 * time.Minute, MinRequests: routes.DefaultGateMinRequests,
					MaxErrorRateDelta: 1, MaxP99Ratio: routes.DefaultGateMaxP99Ratio, MinMatchRate: 1},
				OnFailure: routes.RollBackLegacy,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, err := routes.Load("plan.yaml", []byte(planRoute(tt.plan...)), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			got := tb.Route("r1").Rollout
			if got == nil {
				t.Fatal("route r1 compiled without its rollout")
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("compiled\n%+v\nwant\n%+v", *got, tt.want)
			}
		})
	}
}

// A route without a plan has none; fleet.rollout_bucket defaults and can
// be set.
func TestRolloutDefaults(t *testing.T) {
	tb, err := routes.Load("min.yaml", []byte("routes:\n  - name: r1\n    path: /a\n    nats: {subject: a}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if r := tb.Route("r1").Rollout; r != nil {
		t.Errorf("a route without a plan compiled with %+v", *r)
	}
	if got := tb.Config.Fleet.RolloutBucket; got != "natsgate_rollouts" {
		t.Errorf("fleet.rollout_bucket = %q, want natsgate_rollouts", got)
	}
	tb, err = routes.Load("set.yaml", []byte("fleet: {rollout_bucket: plans-1}\n"+planRoute("steps: [{stage: nats}]")), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.Config.Fleet.RolloutBucket; got != "plans-1" {
		t.Errorf("fleet.rollout_bucket = %q, want plans-1", got)
	}
}

// Every rule of the plan's schema refuses what breaks it, naming the
// file, the line, the route and the field.
func TestRolloutErrors(t *testing.T) {
	many := "steps:"
	for range routes.MaxRolloutSteps + 1 {
		many += "\n        - {stage: nats}"
	}
	tests := []struct {
		name string
		yaml string
		want wantError
	}{
		// steps
		{"no steps", planRoute("steps: []"), wantError{9, "r1", "rollout.steps", "a plan needs 1 to 20 steps, not none"}},
		{"steps left out", planRoute("on_failure: legacy"), wantError{9, "r1", "rollout.steps", "a plan needs 1 to 20 steps"}},
		{"too many steps", planRoute(many), wantError{10, "r1", "rollout.steps", "at most 20 steps, not 21"}},
		{"a legacy step", planRoute("steps: [{stage: legacy}]"), wantError{9, "r1", "rollout.steps[0].stage", "legacy is not a step: a rollout moves toward nats; on_failure says where it goes back"}},
		{"an unknown stage", planRoute("steps: [{stage: shdow}]"), wantError{9, "r1", "rollout.steps[0].stage", `unknown stage "shdow"`}},
		{"a step without a stage", planRoute("steps:", "  - hold: 5s"), wantError{10, "r1", "rollout.steps[0].stage", "every step needs a stage"}},
		{
			"a stage the route cannot run",
			"upstreams:\n  legacy: {url: http://127.0.0.1:1}\nroutes:\n  - name: r1\n    path: /a\n    upstream: legacy\n" +
				"    nats: {subject: a, pattern: publish}\n    rollout:\n      steps: [{stage: shadow}, {stage: nats}]\n",
			wantError{9, "r1", "rollout.steps[0].stage", "shadow compares answers, so it needs nats.pattern request, not publish"},
		},
		{"a stage going back", planRoute("steps:", "  - {stage: canary, percent: 5}", "  - {stage: shadow}"), wantError{11, "r1", "rollout.steps[1].stage", "shadow after canary goes backwards"}},
		{"nats then canary", planRoute("steps:", "  - {stage: nats}", "  - {stage: canary, percent: 50}"), wantError{11, "r1", "rollout.steps[1].stage", "canary after nats goes backwards"}},
		{"a canary percent falling", planRoute("steps:", "  - {stage: canary, percent: 50}", "  - {stage: canary, percent: 25}"), wantError{11, "r1", "rollout.steps[1].percent", "25 after 50 goes backwards: canary percents never fall"}},
		{"a canary step without a percent", planRoute("steps:", "  - {stage: shadow}", "  - stage: canary", "    hold: 1m"), wantError{11, "r1", "rollout.steps[1].percent", "a canary step needs a percent, 1 to 100"}},
		{"a canary percent of 0", planRoute("steps: [{stage: canary, percent: 0}]"), wantError{9, "r1", "rollout.steps[0].percent", "must be 1 to 100, not 0"}},
		{"a canary percent over 100", planRoute("steps: [{stage: canary, percent: 101}]"), wantError{9, "r1", "rollout.steps[0].percent", "must be 1 to 100, not 101"}},
		{"a percent on a shadow step", planRoute("steps:", "  - stage: shadow", "    percent: 10"), wantError{11, "r1", "rollout.steps[0].percent", "only a canary step has a percent, not a shadow step"}},
		{"a percent on a nats step", planRoute("steps: [{stage: nats, percent: 100}]"), wantError{9, "r1", "rollout.steps[0].percent", "only a canary step has a percent, not a nats step"}},
		{"a negative hold", planRoute("steps: [{stage: nats, hold: -1s}]"), wantError{9, "r1", "rollout.steps[0].hold", `"-1s" is not a duration`}},
		{"a hold that is no duration", planRoute("steps:", "  - stage: nats", "    hold: 5"), wantError{11, "r1", "rollout.steps[0].hold", `"5" is not a duration`}},
		{"until requests of 0", planRoute("steps: [{stage: shadow, until: {requests: 0}}]"), wantError{9, "r1", "rollout.steps[0].until.requests", "must be at least 1, not 0"}},
		{"until requests negative", planRoute("steps:", "  - stage: shadow", "    until:", "      requests: -5"), wantError{12, "r1", "rollout.steps[0].until.requests", "must be at least 1, not -5"}},
		{"until match rate of 0", planRoute("steps: [{stage: shadow, until: {match_rate: 0}}]"), wantError{9, "r1", "rollout.steps[0].until.match_rate", "must be above 0 and at most 1, not 0"}},
		{"until match rate over 1", planRoute("steps: [{stage: shadow, until: {match_rate: 1.01}}]"), wantError{9, "r1", "rollout.steps[0].until.match_rate", "must be above 0 and at most 1, not 1.01"}},
		{"until match rate not a number", planRoute("steps: [{stage: shadow, until: {match_rate: .nan}}]"), wantError{9, "r1", "rollout.steps[0].until.match_rate", "must be above 0 and at most 1, not NaN"}},
		{"until match rate on a canary step", planRoute("steps:", "  - stage: canary", "    percent: 5", "    until: {match_rate: 0.99}"), wantError{12, "r1", "rollout.steps[0].until.match_rate", "only a shadow step compares answers"}},
		{"an empty until", planRoute("steps:", "  - stage: shadow", "    until: {}"), wantError{11, "r1", "rollout.steps[0].until", "an empty until holds nothing"}},
		{"an unknown key in a step", planRoute("steps: [{stage: canary, percnt: 5}]"), wantError{9, "r1", "rollout.steps[0].percnt", `unknown field (did you mean "percent"?)`}},
		{"an unknown key in until", planRoute("steps: [{stage: shadow, until: {request: 5}}]"), wantError{9, "r1", "rollout.steps[0].until.request", `unknown field (did you mean "requests"?)`}},
		{"an unknown key in the plan", planRoute("step: [{stage: nats}]"), wantError{9, "r1", "rollout.step", `unknown field (did you mean "steps"?)`}},
		// the route's sides
		{
			"a route without an upstream",
			"routes:\n  - name: r1\n    path: /a\n    nats: {subject: a}\n    rollout:\n      steps: [{stage: nats}]\n",
			wantError{6, "r1", "rollout", "the route needs an upstream"},
		},
		{
			"a route without nats",
			"upstreams:\n  legacy: {url: http://127.0.0.1:1}\nroutes:\n  - name: r1\n    path: /a\n    upstream: legacy\n    rollout:\n      steps: [{stage: nats}]\n",
			wantError{8, "r1", "rollout", "the route needs a nats section"},
		},
		// gates
		{"a gate window off the resolution", planRoute("steps: [{stage: nats}]", "gates: {window: 7s}"), wantError{10, "r1", "rollout.gates.window", "7s must be a whole multiple of 5s, from 5s to 15m0s"}},
		{"a gate window of 0", planRoute("steps: [{stage: nats}]", "gates:", "  window: 0s"), wantError{11, "r1", "rollout.gates.window", "0s must be a whole multiple of 5s"}},
		{"a gate window over the history", planRoute("steps: [{stage: nats}]", "gates: {window: 15m5s}"), wantError{10, "r1", "rollout.gates.window", "15m5s must be a whole multiple of 5s, from 5s to 15m0s"}},
		{"a gate window under the resolution", planRoute("steps: [{stage: nats}]", "gates: {window: 2500ms}"), wantError{10, "r1", "rollout.gates.window", "2.5s must be"}},
		{"gate min requests of 0", planRoute("steps: [{stage: nats}]", "gates: {min_requests: 0}"), wantError{10, "r1", "rollout.gates.min_requests", "must be at least 1, not 0"}},
		{"a negative error rate delta", planRoute("steps: [{stage: nats}]", "gates: {max_error_rate_delta: -0.01}"), wantError{10, "r1", "rollout.gates.max_error_rate_delta", "must be 0 to 1, not -0.01"}},
		{"an error rate delta over 1", planRoute("steps: [{stage: nats}]", "gates: {max_error_rate_delta: 1.5}"), wantError{10, "r1", "rollout.gates.max_error_rate_delta", "must be 0 to 1, not 1.5"}},
		{"a p99 ratio under 1", planRoute("steps: [{stage: nats}]", "gates: {max_p99_ratio: 0.9}"), wantError{10, "r1", "rollout.gates.max_p99_ratio", "must be at least 1"}},
		{"an infinite p99 ratio", planRoute("steps: [{stage: nats}]", "gates: {max_p99_ratio: .inf}"), wantError{10, "r1", "rollout.gates.max_p99_ratio", "must be at least 1 (and finite), not +Inf"}},
		{"a negative match rate gate", planRoute("steps: [{stage: nats}]", "gates: {min_match_rate: -1}"), wantError{10, "r1", "rollout.gates.min_match_rate", "must be 0 to 1, not -1"}},
		{"a match rate gate over 1", planRoute("steps: [{stage: nats}]", "gates: {min_match_rate: 1.1}"), wantError{10, "r1", "rollout.gates.min_match_rate", "must be 0 to 1, not 1.1"}},
		{"an unknown gate", planRoute("steps: [{stage: nats}]", "gates: {max_p99_rato: 2}"), wantError{10, "r1", "rollout.gates.max_p99_rato", `unknown field (did you mean "max_p99_ratio"?)`}},
		// on_failure
		{"an unknown on_failure", planRoute("steps: [{stage: nats}]", "on_failure: shadow"), wantError{10, "r1", "rollout.on_failure", `unknown "shadow" (use legacy or previous)`}},
		// the fleet
		{"a plan without the fleet", "fleet: {enabled: false}\n" + planRoute("steps: [{stage: nats}]"), wantError{10, "r1", "rollout", "needs the fleet, and fleet.enabled is false"}},
		{"a rollout bucket with a dot", "fleet:\n  rollout_bucket: natsgate.rollouts\n" + planRoute("steps: [{stage: nats}]"), wantError{2, "", "fleet.rollout_bucket", `"natsgate.rollouts" is not a key-value bucket name`}},
		{"the leader bucket as the rollout bucket", "fleet:\n  leader_bucket: shared\n  rollout_bucket: shared\n" + planRoute("steps: [{stage: nats}]"), wantError{3, "", "fleet.rollout_bucket", `"shared" is fleet.leader_bucket too`}},
		{"the cutover bucket as the rollout bucket", "fleet:\n  rollout_bucket: natsgate_cutover\n" + planRoute("steps: [{stage: nats}]"), wantError{2, "", "fleet.rollout_bucket", `"natsgate_cutover" is nats.cutover_bucket too`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkLoadError(t, tt.yaml, tt.want) })
	}
}

// A plan with many problems reports all of them together, in file order,
// and nothing for the fields that are right.
func TestRolloutReportsEveryProblem(t *testing.T) {
	text := planRoute(
		"steps:",
		"  - {stage: legacy}",
		"  - {stage: canary, percent: 30}",
		"  - {stage: canary, percent: 20, hold: 1m}",
		"  - {stage: nats, until: {}}",
		"gates:",
		"  window: 1m",
		"  min_requests: 0",
		"on_failure: back",
	)
	_, err := routes.Load("gate.yaml", []byte(text), noEnv)
	if !errors.Is(err, routes.ErrInvalidConfig) {
		t.Fatalf("want ErrInvalidConfig, got %v", err)
	}
	want := []wantError{
		{10, "r1", "rollout.steps[0].stage", "legacy is not a step"},
		{12, "r1", "rollout.steps[2].percent", "20 after 30 goes backwards"},
		{13, "r1", "rollout.steps[3].until", "an empty until"},
		{16, "r1", "rollout.gates.min_requests", "must be at least 1"},
		{17, "r1", "rollout.on_failure", "unknown"},
	}
	errs := fieldErrors(t, err)
	for _, w := range want {
		got := findError(errs, w)
		if got == nil {
			t.Errorf("missing %v", w)
		} else if got.Line != w.line {
			t.Errorf("%v reported at line %d", w, got.Line)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(errs), len(want), err)
	}
}

// Compile checks a plan built in code too, where a Duration can be
// negative and there is no file to name lines in.
func TestRolloutCompileWithoutFile(t *testing.T) {
	cfg := &routes.Config{
		Upstreams: map[string]routes.UpstreamConfig{"legacy": {URL: "http://127.0.0.1:1"}},
		Routes: []routes.RouteConfig{{Name: "r1", Path: "/a", Upstream: "legacy", NATS: &routes.RouteNATS{Subject: "a"},
			Rollout: &routes.RolloutConfig{Steps: []routes.RolloutStepConfig{
				{Stage: "canary", Percent: intp(5), Hold: routes.Duration(-time.Second)},
			}}}},
	}
	_, err := routes.Compile(cfg)
	if !errors.Is(err, routes.ErrInvalidConfig) {
		t.Fatalf("got %v, want ErrInvalidConfig", err)
	}
	var fe *routes.FieldError
	if !errors.As(err, &fe) || fe.Route != "r1" || fe.Field != "rollout.steps[0].hold" || !strings.Contains(fe.Msg, "must not be negative") {
		t.Errorf("got %v", err)
	}
}
