package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/gateway"
)

// runRollout runs `natsgate rollout args...` as main does and returns its
// exit code, stdout and stderr.
func runRollout(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"rollout"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// problemLine is how the command reports a problem body: one line on
// stderr, "natsgate rollout: <title>: <detail>".
var problemLine = regexp.MustCompile(`^natsgate rollout: [A-Z][^:\n]*: [^\n]+\n$`)

// waitRolloutAPI polls until status answers, so that the tests that follow
// do not race the gateway's start (the fleet's leader is elected a moment
// after the listeners open). Only an answer that can pass (503, or no
// answer yet) is waited out; any other refusal fails the test at once.
func waitRolloutAPI(t *testing.T, admin, route string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, stderr := runRollout(t, "status", route, "--admin", admin)
		if code == 0 {
			return
		}
		passing := strings.HasPrefix(stderr, "natsgate rollout: Service Unavailable: ") || strings.HasPrefix(stderr, "natsgate rollout: cannot reach ")
		if !passing || time.Now().After(deadline) {
			t.Fatalf("rollout status for %s: exit %d: %s", route, code, stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Bad usage exits 2 with the usage, before anything is dialled.
func TestRolloutUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"nothing", nil, "want an action and a route"},
		{"no route", []string{"status"}, "want an action and a route"},
		{"an unknown action", []string{"promote", "get-profile"}, `unknown action "promote"`},
		{"a third word", []string{"start", "get-profile", "now"}, "want an action and a route"},
		{"an unknown flag", []string{"status", "get-profile", "--adm", "http://127.0.0.1:1"}, "flag provided but not defined: -adm"},
		{"a flag without its value", []string{"status", "get-profile", "--admin"}, "flag needs an argument: -admin"},
		{"an empty route", []string{"status", ""}, "the route name is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runRollout(t, tt.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.HasPrefix(stderr, "natsgate rollout: ") || !strings.Contains(stderr, tt.msg) || !strings.Contains(stderr, "Usage:\n  natsgate rollout status|start|pause|resume|abort ROUTE") {
				t.Errorf("stderr %q, want the problem (%q) and the usage", stderr, tt.msg)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
	code, stdout, _ := runRollout(t, "-h")
	if code != 0 || !strings.Contains(stdout, "Usage:") {
		t.Errorf("-h: exit %d, stdout %q; want 0 and the usage", code, stdout)
	}
}

// A listen address that means every interface is dialled on loopback.
func TestLoopbackFor(t *testing.T) {
	for listen, want := range map[string]string{
		":9090":          "127.0.0.1:9090",
		"0.0.0.0:9090":   "127.0.0.1:9090",
		"[::]:9090":      "[::1]:9090",
		"127.0.0.1:9191": "127.0.0.1:9191",
		"10.1.2.3:9090":  "10.1.2.3:9090",
		"admin.internal": "admin.internal",
		"localhost:9090": "localhost:9090",
	} {
		if got := loopbackFor(listen); got != want {
			t.Errorf("loopbackFor(%q) = %q, want %q", listen, got, want)
		}
	}
}

// An admin API nobody listens on is named in the error, exit 1.
func TestRolloutUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, stdout, stderr := runRollout(t, "status", "get-profile", "--admin", "http://"+addr)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	want := "natsgate rollout: cannot reach the admin API at http://" + addr + "/admin/routes/get-profile/rollout: "
	if !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, "refused") {
		t.Errorf("stderr %q, want it to start with %q and say the connection was refused", stderr, want)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
}

// status reads a real gateway's rollout for the demo's get-profile, with
// the flags before, between and after the action and the route; --json
// prints the admin API's JSON.
func TestRolloutStatus(t *testing.T) {
	d := startTestDemo(t)
	waitRolloutAPI(t, d.admin, "get-profile")
	for _, args := range [][]string{
		{"status", "get-profile", "--admin", d.admin},
		{"status", "--admin", d.admin, "get-profile"},
		{"--admin", d.admin, "status", "get-profile"},
		{"-admin=" + d.admin, "status", "get-profile"},
	} {
		code, stdout, stderr := runRollout(t, args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		// The demo's plan has four steps and nobody has started it.
		if first, _, _ := strings.Cut(stdout, "\n"); !strings.HasPrefix(first, "get-profile: idle, step ") || !strings.Contains(first, "/4") {
			t.Errorf("%q: first line %q, want get-profile idle with 4 steps", args, first)
		}
	}

	code, stdout, stderr := runRollout(t, "status", "get-profile", "--admin", d.admin, "--json")
	if code != 0 {
		t.Fatalf("--json: exit %d: %s", code, stderr)
	}
	var st gateway.RolloutStatus
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("--json printed %q: %v", stdout, err)
	}
	if st.Route != "get-profile" || st.State != "idle" || st.Steps != 4 {
		t.Errorf("--json: %+v, want get-profile idle with 4 steps", st)
	}
}

// start, pause, resume and abort move a real gateway's rollout, each
// printing the new state on one line; the audit history names who did it
// as user@host.
func TestRolloutActions(t *testing.T) {
	t.Setenv("USER", "rollout-tester")
	t.Setenv(gateway.TokenEnv, "")
	d := startTestDemo(t)
	waitRolloutAPI(t, d.admin, "get-profile")
	code, stdout, stderr := runRollout(t, "start", "get-profile", "--admin", d.admin, "--token", d.token)
	if code != 0 || stdout != "get-profile: running, step 1/4: shadow\n" {
		t.Fatalf("start: exit %d, stdout %q, stderr %q; want the first step, shadow", code, stdout, stderr)
	}
	// No traffic reaches the route, so its gate has no verdict yet.
	code, stdout, stderr = runRollout(t, "status", "get-profile", "--admin", d.admin)
	if code != 0 || !strings.Contains(stdout, "\n  since ") || !regexp.MustCompile(`\ngates:\n  min_match_rate +value - +limit 0.99 +no verdict\n`).MatchString(stdout) {
		t.Errorf("status after start: exit %d, stderr %q, printed\n%s\nwant since and the shadow gate without a verdict", code, stderr, stdout)
	}
	for _, step := range []struct{ action, state string }{
		{"pause", "paused"},
		{"resume", "running"},
		{"abort", "aborted"},
	} {
		code, stdout, stderr := runRollout(t, step.action, "get-profile", "--admin", d.admin, "--token", d.token)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", step.action, code, stderr)
		}
		if want := "get-profile: " + step.state + ", step "; !strings.HasPrefix(stdout, want) || strings.Count(stdout, "\n") != 1 {
			t.Errorf("%s printed %q, want one line starting %q", step.action, stdout, want)
		}
	}

	host, _ := os.Hostname()
	code, stdout, stderr = runRollout(t, "status", "get-profile", "--admin", d.admin, "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	var st gateway.RolloutStatus
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("--json printed %q: %v", stdout, err)
	}
	by := 0
	for _, e := range st.History {
		if e.By == "rollout-tester@"+host {
			by++
		}
	}
	if by < 4 {
		t.Errorf("history names rollout-tester@%s in %d decisions, want the 4 actions: %+v", host, by, st.History)
	}
	code, stdout, _ = runRollout(t, "status", "get-profile", "--admin", d.admin)
	if code != 0 || !strings.Contains(stdout, "history:\n") || !strings.Contains(stdout, "(by rollout-tester@"+host+")") {
		t.Errorf("status: exit %d, printed\n%s\nwant the history naming rollout-tester@%s", code, stdout, host)
	}
}

// What the gateway refuses comes back as its problem body's title and
// detail on one line of stderr, exit 1.
func TestRolloutRefused(t *testing.T) {
	t.Setenv(gateway.TokenEnv, "")
	d := startTestDemo(t)
	waitRolloutAPI(t, d.admin, "get-profile")
	tests := []struct {
		name   string
		args   []string
		prefix string
		has    string
	}{
		{"an unknown route", []string{"status", "no-such-route"}, "natsgate rollout: Not Found: ", "no-such-route"},
		{"a wrong token", []string{"start", "get-profile", "--token", "not-the-token"}, "natsgate rollout: Unauthorized: ", "token"},
		{"no token", []string{"start", "get-profile"}, "natsgate rollout: Unauthorized: ", "token"},
		{"a route without a plan", []string{"start", "slow", "--token", d.token}, "natsgate rollout: Not Found: ", "no rollout plan"},
		{"pausing a plan not started", []string{"pause", "get-profile", "--token", d.token}, "natsgate rollout: Conflict: ", "idle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runRollout(t, append(tt.args, "--admin", d.admin)...)
			if code != 1 {
				t.Errorf("exit %d, want 1 (stdout %q)", code, stdout)
			}
			if !problemLine.MatchString(stderr) || !strings.HasPrefix(stderr, tt.prefix) || !strings.Contains(stderr, tt.has) {
				t.Errorf("stderr %q, want one line starting %q that names %q", stderr, tt.prefix, tt.has)
			}
		})
	}
	// Nothing refused moved the plan.
	code, stdout, stderr := runRollout(t, "status", "get-profile", "--admin", d.admin)
	if code != 0 || !strings.HasPrefix(stdout, "get-profile: idle, ") {
		t.Errorf("status after the refusals: exit %d, %q %q; want idle", code, stdout, stderr)
	}
}

// --config reads the admin address (":PORT" and "0.0.0.0:PORT" meaning
// loopback) and the token from a config file; --admin and --token
// override it, and NATSGATE_ADMIN_TOKEN stands in for a token nobody gave.
func TestRolloutConfig(t *testing.T) {
	t.Setenv(gateway.TokenEnv, "")
	d := startTestDemo(t)
	waitRolloutAPI(t, d.admin, "get-profile")
	u, err := url.Parse(d.admin)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(u.Host)
	dir := t.TempDir()
	write := func(name, text string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	routesYAML := "routes:\n  - name: a\n    path: /a\n    nats: {subject: a}\n"
	everywhere := write("everywhere.yaml", "admin:\n  listen: 0.0.0.0:"+port+"\n  token: "+d.token+"\n"+routesYAML)
	portOnly := write("port.yaml", "admin:\n  listen: \":"+port+"\"\n"+routesYAML)
	nowhere := write("nowhere.yaml", "admin:\n  listen: 127.0.0.1:1\n  token: not-the-token\n"+routesYAML)
	broken := write("broken.yaml", "admin:\n  listen: 127.0.0.1:1\n  tokn: x\n"+routesYAML)

	steps := []struct {
		name   string
		env    string // NATSGATE_ADMIN_TOKEN
		args   []string
		code   int
		prefix string // of stdout when code is 0, else of stderr
	}{
		{"status from a config on 0.0.0.0", "", []string{"status", "get-profile", "--config", everywhere}, 0, "get-profile: idle, "},
		{"status from a config on :port", "", []string{"--config", portOnly, "status", "get-profile"}, 0, "get-profile: idle, "},
		{"--token overrides the config's", "", []string{"start", "get-profile", "--config", everywhere, "--token", "not-the-token"}, 1, "natsgate rollout: Unauthorized: "},
		{"no token anywhere", "", []string{"start", "get-profile", "--config", portOnly}, 1, "natsgate rollout: Unauthorized: "},
		{"the token from the config", "", []string{"start", "get-profile", "--config", everywhere}, 0, "get-profile: running, "},
		{"--admin and --token override the config", "", []string{"pause", "get-profile", "--config", nowhere, "--admin", d.admin, "--token", d.token}, 0, "get-profile: paused, "},
		{"the token from the environment", d.token, []string{"resume", "get-profile", "--config", portOnly}, 0, "get-profile: running, "},
		{"the config's token before the environment's", d.token, []string{"abort", "get-profile", "--config", nowhere, "--admin", d.admin}, 1, "natsgate rollout: Unauthorized: "},
		{"a config with a problem", "", []string{"status", "get-profile", "--config", broken}, 1, broken + ":3: admin.tokn: unknown field"},
	}
	for _, s := range steps {
		t.Setenv(gateway.TokenEnv, s.env)
		code, stdout, stderr := runRollout(t, s.args...)
		got := stdout
		if s.code != 0 {
			got = stderr
		}
		if code != s.code || !strings.HasPrefix(got, s.prefix) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d and %q", s.name, code, stdout, stderr, s.code, s.prefix)
		}
	}
}

// status prints each gate's verdict (ok, FAIL, or no verdict while the
// window holds too few requests) and only the last few decisions, reading
// the JSON of the gateway's own RolloutStatus.
func TestPrintRolloutStatus(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	yes, no := true, false
	since := time.Date(2026, 3, 1, 12, 0, 0, 500, time.UTC)
	in := gateway.RolloutStatus{Route: "get-profile", State: "running", Step: 3, Steps: 4, Stage: "canary", Percent: 50, Since: &since, Leader: "web-1:8080",
		Gates: []gateway.GateStatus{
			{Name: "max_error_rate_delta", Value: f(0.002), Limit: 0.005, OK: &yes},
			{Name: "max_p99_ratio", Value: f(1.7), Limit: 1.2, OK: &no},
			{Name: "min_requests", Limit: 50},
		}}
	for i := range 7 {
		in.History = append(in.History, gateway.RolloutDecision{At: since.Add(time.Duration(i) * time.Second), From: "a", To: "b", Decision: "advance", Reason: "gates passed", By: "leader"})
	}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var st gateway.RolloutStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printRolloutStatus(&out, &st, since.Add(90*time.Second))
	want := `get-profile: running, step 3/4: canary 50%
  since 2026-03-01T12:00:00Z (1m30s ago)
  leader web-1:8080
gates:
  max_error_rate_delta   value 0.002      limit 0.005      ok
  max_p99_ratio          value 1.7        limit 1.2        FAIL
  min_requests           value -          limit 50         no verdict
history:
  2026-03-01T12:00:02Z  advance a -> b: gates passed (by leader)
  2026-03-01T12:00:03Z  advance a -> b: gates passed (by leader)
  2026-03-01T12:00:04Z  advance a -> b: gates passed (by leader)
  2026-03-01T12:00:05Z  advance a -> b: gates passed (by leader)
  2026-03-01T12:00:06Z  advance a -> b: gates passed (by leader)
`
	if out.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", out.String(), want)
	}
}
