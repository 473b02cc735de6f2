package routes_test

import (
	"errors"
	"flag"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/natsgate/natsgate/routes"
)

var update = flag.Bool("update", false, "rewrite the .golden files from the current output")

// TestFormatGolden compiles each testdata/*.yaml and compares the route
// table natsgate routes prints with the .golden file next to it. Run
// `go test ./routes -run TestFormatGolden -update` after a deliberate change.
func TestFormatGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.yaml (%v)", err)
	}
	vars := map[string]string{"LEGACY_URL": "http://legacy.internal:8080/api"}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			tb, err := routes.Load(file, data, env(vars))
			if err != nil {
				t.Fatal(err)
			}
			got := tb.Format(nil)
			golden := file[:len(file)-len(".yaml")] + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Format() differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

// Format shows the stage the caller says is live, not the configured one.
func TestFormatStageOverride(t *testing.T) {
	tb, err := routes.Load("s.yaml", []byte("upstreams:\n  old: {url: http://old}\nroutes:\n  - name: r1\n    path: /a\n    upstream: old\n    nats: {subject: a}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if tb.Routes[0].Cutover != routes.Legacy {
		t.Fatalf("cutover = %s, want legacy by default with an upstream", tb.Routes[0].Cutover)
	}
	out := tb.Format(func(*routes.Route) routes.Stage { return routes.Canary })
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("Format printed %d lines, want a header and one route:\n%s", len(lines), out)
	}
	if !slices.Contains(strings.Fields(lines[1]), "canary") || slices.Contains(strings.Fields(lines[1]), "legacy") {
		t.Errorf("route line %q does not show the overriding stage", lines[1])
	}
}

// FormatWith adds a RESPONDERS column after SUBJECT, and Format leaves it
// out.
func TestFormatWithResponders(t *testing.T) {
	tb, err := routes.Load("s.yaml", []byte("routes:\n  - name: r1\n    path: /a\n    nats: {subject: a.b}\n  - name: r2\n    path: /b\n    nats: {subject: c}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	out := tb.FormatWith(nil, func(r *routes.Route) string {
		if r.Name == "r1" {
			return "2"
		}
		return "-"
	})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := [][]string{
		{"ROUTE", "METHOD", "PATH", "STAGE", "PATTERN", "SUBJECT", "RESPONDERS", "UPSTREAM"},
		{"r1", "*", "/a", "nats", "request", "a.b", "2", "-"},
		{"r2", "*", "/b", "nats", "request", "c", "-", "-"},
	}
	if len(lines) != len(want) {
		t.Fatalf("FormatWith printed %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); !slices.Equal(got, w) {
			t.Errorf("line %d: %q, want the fields %q", i, lines[i], w)
		}
	}
	if strings.Contains(tb.Format(nil), "RESPONDERS") {
		t.Errorf("Format shows a RESPONDERS column:\n%s", tb.Format(nil))
	}
}

// Compile reports problems for a Config built in code too, without a file.
func TestCompileWithoutFile(t *testing.T) {
	_, err := routes.Compile(&routes.Config{Routes: []routes.RouteConfig{{Name: "r1", Path: "/a", NATS: &routes.RouteNATS{Subject: "a.*"}}}})
	if !errors.Is(err, routes.ErrInvalidConfig) {
		t.Fatalf("got %v, want ErrInvalidConfig", err)
	}
	var fe *routes.FieldError
	if !errors.As(err, &fe) || fe.Route != "r1" || fe.Field != "nats.subject" {
		t.Errorf("got %#v", fe)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(route("path: /users/{id}", "nats: {subject: 'users.{id}.get', timeout: 2s}")))
	f.Add([]byte("routes:\n  - name: a\n    path: /a\n    nats: &n {subject: a}\n  - name: b\n    path: /b\n    nats:\n      <<: *n\n"))
	f.Add([]byte("nats:\n  url: ${NATS_URL}\nroutes: []\n"))
	f.Add([]byte(planRoute("steps:", "  - {stage: shadow, until: {requests: 1000, match_rate: 0.999}}",
		"  - {stage: canary, percent: 5, hold: 5m}", "  - {stage: nats}",
		"gates: {window: 1m, min_requests: 200, max_error_rate_delta: 0.005, max_p99_ratio: 1.2, min_match_rate: 0.995}",
		"on_failure: previous")))
	f.Add([]byte("fleet: {enabled: false, rollout_bucket: x}\n" + planRoute("steps: [{stage: canary, percent: 50}, {stage: canary, percent: 5}]", "gates: {window: 7s}")))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := routes.Load("fuzz.yaml", data, env(map[string]string{"NATS_URL": "nats://127.0.0.1:4222", "X": "${X}"}))
		if err != nil {
			if !errors.Is(err, routes.ErrInvalidConfig) {
				t.Fatalf("error does not wrap ErrInvalidConfig: %v", err)
			}
			if tb != nil {
				t.Fatalf("Load returned a table with an error")
			}
			return
		}
		if len(tb.Routes) == 0 {
			t.Fatalf("a table without routes loaded")
		}
		for _, r := range tb.Routes {
			checkRollout(t, r)
		}
		_ = tb.Format(nil)
	})
}

// FuzzCompileRoute drives Compile with arbitrary field values in a
// well-formed file: whatever it accepts, the gateway can serve.
func FuzzCompileRoute(f *testing.F) {
	f.Add("get-user", "GET", "/users/{id}", "users.{id}.get", "request", "2s", "1MiB", "", 0, "", "", 0.0)
	f.Add("files", "*", "/files/*", "files.{*}", "publish", "1m", "0", "", 0, "", "", 0.0)
	f.Add("re", "PUT", "/a/{id:[0-9]+}/{b}", "a.{id}-{b}", "jetstream", "0s", "64KiB", "", 0, "", "", 0.0)
	f.Add("x", "get", "/a/{id}/{id}", "a.{id}", "", "", "", "", 0, "", "", 0.0)
	f.Add("y", "POST", "/{a}{b}", "{a}.{b}", "request", "5", "1XB", "", 0, "", "", 0.0)
	f.Add("plan", "GET", "/p/{id}", "p.{id}", "request", "1s", "0", "shadow", 0, "5s", "20s", 0.99)
	f.Add("plan-canary", "GET", "/c", "c", "request", "", "", "canary", 10, "0s", "1m", 1.2)
	f.Add("plan-publish", "POST", "/e", "e", "publish", "", "", "shadow", 0, "", "7s", 0.5)
	f.Add("plan-legacy", "GET", "/l", "l", "", "", "", "legacy", 200, "-1s", "16m", -1.0)
	f.Fuzz(func(t *testing.T, name, method, path, subject, pattern, timeout, maxBody, stage string, percent int, hold, window string, rate float64) {
		yaml := "upstreams:\n  legacy: {url: http://127.0.0.1:1}\n" +
			"routes:\n  - name: " + strconv.Quote(name) +
			"\n    method: " + strconv.Quote(method) +
			"\n    path: " + strconv.Quote(path) +
			"\n    max_body: " + strconv.Quote(maxBody) +
			"\n    nats:\n      subject: " + strconv.Quote(subject) +
			"\n      pattern: " + strconv.Quote(pattern) +
			"\n      timeout: " + strconv.Quote(timeout) + "\n"
		// With a stage, the route gets an upstream and a plan whose first
		// step is that stage, then nats.
		if stage != "" {
			step := "{stage: " + strconv.Quote(stage) + ", hold: " + strconv.Quote(hold)
			if percent != 0 {
				step += ", percent: " + strconv.Itoa(percent)
			}
			if stage == "shadow" {
				step += ", until: {match_rate: " + strconv.FormatFloat(rate, 'g', -1, 64) + "}"
			}
			yaml += "    upstream: legacy\n    rollout:\n      steps: [" + step + "}, {stage: nats}]\n" +
				"      gates: {window: " + strconv.Quote(window) + ", max_p99_ratio: " + strconv.FormatFloat(1+rate, 'g', -1, 64) +
				", min_match_rate: " + strconv.FormatFloat(rate, 'g', -1, 64) + "}\n"
		}
		tb, err := routes.Load("fuzz.yaml", []byte(yaml), noEnv)
		if err != nil {
			if !errors.Is(err, routes.ErrInvalidConfig) {
				t.Fatalf("error does not wrap ErrInvalidConfig: %v", err)
			}
			return
		}
		r := tb.Routes[0]
		if r.Timeout <= 0 || r.MaxBody < 0 || r.Subject == nil {
			t.Fatalf("compiled route %+v", r)
		}
		if (stage != "") != (r.Rollout != nil) {
			t.Fatalf("stage %q compiled to rollout %+v", stage, r.Rollout)
		}
		checkRollout(t, r)
		values := make([]string, len(r.Params))
		for i := range values {
			values[i] = "v"
		}
		for _, p := range r.Subject.Params() {
			if !slices.Contains(r.Params, p) {
				t.Fatalf("subject uses {%s}, path params %q", p, r.Params)
			}
		}
		out, err := r.Subject.Render(r.Params, values, 0)
		if err != nil {
			t.Fatalf("render %q: %v", r.Subject, err)
		}
		if got, want := strings.Count(out, ".")+1, strings.Count(r.Subject.String(), ".")+1; got != want {
			t.Fatalf("%q rendered %q", r.Subject, out)
		}
		mux := chi.NewRouter()
		noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
		if r.Method == "*" {
			mux.Handle(r.Path, noop)
		} else {
			mux.Method(r.Method, r.Path, noop)
		}
	})
}

// checkRollout fails unless a compiled route's plan, if it has one, is one
// the controller can run: every rule of the schema holds of it.
func checkRollout(t *testing.T, r *routes.Route) {
	t.Helper()
	p := r.Rollout
	if p == nil {
		return
	}
	if r.Upstream == nil || r.Subject == nil {
		t.Fatalf("route %s has a plan without both sides", r.Name)
	}
	if len(p.Steps) < 1 || len(p.Steps) > routes.MaxRolloutSteps {
		t.Fatalf("route %s: plan of %d steps", r.Name, len(p.Steps))
	}
	order := map[routes.Stage]int{routes.Shadow: 1, routes.Canary: 2, routes.NATS: 3}
	for i, s := range p.Steps {
		if order[s.Stage] == 0 || r.CheckStage(s.Stage) != nil {
			t.Fatalf("route %s: step %d at stage %q", r.Name, i, s.Stage)
		}
		if (s.Stage == routes.Canary) != (s.Percent >= 1 && s.Percent <= 100) || s.Percent < 0 || s.Percent > 100 {
			t.Fatalf("route %s: step %d: %s at %d%%", r.Name, i, s.Stage, s.Percent)
		}
		if s.Hold < 0 {
			t.Fatalf("route %s: step %d holds %v", r.Name, i, s.Hold)
		}
		if u := s.Until; u != nil && (u.MatchRate < 0 || u.MatchRate > 1 || (u.MatchRate > 0 && s.Stage != routes.Shadow)) {
			t.Fatalf("route %s: step %d until %+v", r.Name, i, *u)
		}
		if i > 0 {
			prev := p.Steps[i-1]
			if order[s.Stage] < order[prev.Stage] || (s.Stage == routes.Canary && prev.Stage == routes.Canary && s.Percent < prev.Percent) {
				t.Fatalf("route %s: step %d (%s %d%%) goes back from %s %d%%", r.Name, i, s.Stage, s.Percent, prev.Stage, prev.Percent)
			}
		}
	}
	g := p.Gates
	if g.Window < routes.RolloutResolution || g.Window > routes.MaxGateWindow || g.Window%routes.RolloutResolution != 0 ||
		g.MinRequests < 1 || !(g.MaxErrorRateDelta >= 0 && g.MaxErrorRateDelta <= 1) ||
		!(g.MaxP99Ratio >= 1) || math.IsInf(g.MaxP99Ratio, 1) || !(g.MinMatchRate >= 0 && g.MinMatchRate <= 1) {
		t.Fatalf("route %s: gates %+v", r.Name, g)
	}
	if p.OnFailure != routes.RollBackLegacy && p.OnFailure != routes.RollBackPrevious {
		t.Fatalf("route %s: on_failure %q", r.Name, p.OnFailure)
	}
}
