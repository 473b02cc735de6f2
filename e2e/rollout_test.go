package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The rollout scenarios: two natsgate replicas on one JetStream
// nats-server, the legacy service and a NATS worker as their own
// processes (sample-worker, the worker playing a good or a bad version
// with --fail-rate and --delay), steady load through both replicas, and a
// plan on get-profile that the elected leader runs on the fleet's
// numbers. Windows and holds are seconds long, so a scenario takes well
// under a minute.

const rolloutToken = "r0llout-t0ken-for-e2e"

// rolloutFleet is one scenario's processes.
type rolloutFleet struct {
	ns       *natsServer
	replicas map[string]*gateway // by fleet.replica_id
	ids      []string            // replica ids, in start order

	mu   sync.Mutex
	live []*gateway // the replicas the load is sent to
}

// rolloutSides are the sample-worker flags of the legacy service and of
// the NATS worker.
type rolloutSides struct {
	legacy, worker []string
}

// startRolloutFleet starts nats-server, the legacy service, the worker
// and replicas a and b, with plan (YAML under rollout:, indented 6) on
// get-profile, and waits until the fleet has a leader.
func startRolloutFleet(t *testing.T, plan string, sides rolloutSides) *rolloutFleet {
	t.Helper()
	f := &rolloutFleet{ns: startNATS(t, natsOptions{jetstream: true}), replicas: map[string]*gateway{}}
	legacyAddr := startLegacy(t, sides.legacy...)
	startWorker(t, f.ns.URL(), "w1", 0, sides.worker...)
	for _, id := range []string{"a", "b"} {
		g := startGateway(t, gatewayConfig{NATSURL: f.ns.URL(), Admin: "  token: " + rolloutToken,
			Body: rolloutRoute(id, legacyAddr, plan)})
		f.replicas[id] = g
		f.ids = append(f.ids, id)
		f.live = append(f.live, g)
	}
	eventually(t, 20*time.Second, "both replicas to name the same leader", func() bool {
		a, errA := readRollout(t, f.replicas["a"])
		b, errB := readRollout(t, f.replicas["b"])
		return errA == nil && errB == nil && a.Leader != "" && a.Leader == b.Leader && f.replicas[a.Leader] != nil
	})
	return f
}

// rolloutRoute is the config body of replica id: the demo's get-profile,
// on legacy at first, whose legacy service and worker answer alike but
// for served_by.
func rolloutRoute(id, legacyAddr, plan string) string {
	return fmt.Sprintf(`fleet:
  replica_id: %s
  leader_ttl: 2s
upstreams:
  legacy: {url: "http://%s", timeout: 5s}
routes:
  - name: get-profile
    method: GET
    path: /profiles/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
    upstream: legacy
    cutover: legacy
    shadow_ignore: [served_by]
    rollout:
%s
`, id, legacyAddr, plan)
}

// startLegacy runs sample-worker --legacy on a free port and returns its
// address once it serves.
func startLegacy(t *testing.T, extra ...string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startProc(t, "legacy service", bin.worker, append([]string{"--legacy", addr}, extra...)...)
	client := newClient(t)
	eventually(t, 10*time.Second, "the legacy service to serve", func() bool {
		if !p.Running() {
			t.Fatalf("the legacy service exited:\n%s", p.Output())
		}
		return httpStatus(client, "http://"+addr+"/version") == 200
	})
	return addr
}

// load sends GET /profiles/{id} to the live replicas in turn, about 15 a
// second from each of 4 clients, for at most 90 s.
func (f *rolloutFleet) load(t *testing.T) *load {
	client := newClient(t)
	l := startLoad(4, 1500, 90*time.Second, func(c, i int) exchange {
		f.mu.Lock()
		g := f.live[(c+i)%len(f.live)]
		f.mu.Unlock()
		ex := do(client, "GET", fmt.Sprintf("%s/profiles/%d", g.URL, 1+(c*1500+i)%1000), "", nil)
		time.Sleep(40 * time.Millisecond)
		return ex
	})
	t.Cleanup(func() { l.Stop() })
	return l
}

// drop takes a replica out of the load, and waits out the requests sent
// to it before.
func (f *rolloutFleet) drop(id string) {
	g := f.replicas[id]
	f.mu.Lock()
	for i, l := range f.live {
		if l == g {
			f.live = append(f.live[:i:i], f.live[i+1:]...)
			break
		}
	}
	f.mu.Unlock()
	time.Sleep(500 * time.Millisecond) // a request takes tens of ms: this only lets them land
}

// rolloutView is GET /admin/routes/{name}/rollout as the test reads it.
type rolloutView struct {
	Route   string `json:"route"`
	State   string `json:"state"`
	Step    int    `json:"step"`
	Steps   int    `json:"steps"`
	Stage   string `json:"stage"`
	Percent int    `json:"percent"`
	// Since is when the current step began, as the record stores it.
	Since  *time.Time `json:"since"`
	Leader string     `json:"leader"`
	Gates  []struct {
		Name  string   `json:"name"`
		Value *float64 `json:"value"`
		Limit float64  `json:"limit"`
		OK    *bool    `json:"ok"`
	} `json:"gates"`
	History []rolloutEntry `json:"history"`
}

type rolloutEntry struct {
	At       time.Time `json:"at"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Decision string    `json:"decision"`
	Reason   string    `json:"reason"`
	By       string    `json:"by"`
}

// decisions is the history as "decision to", in order.
func (v rolloutView) decisions() []string {
	out := []string{}
	for _, d := range v.History {
		out = append(out, d.Decision+" "+d.To)
	}
	return out
}

func (v rolloutView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s step %d/%d at %s (leader %s)", v.State, v.Step, v.Steps, v.Stage, v.Leader)
	for _, g := range v.Gates {
		if g.Value != nil {
			fmt.Fprintf(&b, "; gate %s %g (limit %g)", g.Name, *g.Value, g.Limit)
		} else {
			fmt.Fprintf(&b, "; gate %s no verdict", g.Name)
		}
	}
	for _, d := range v.History {
		fmt.Fprintf(&b, "\n  %s %s: %s → %s by %s: %s", d.At.Format("15:04:05.000"), d.Decision, d.From, d.To, d.By, d.Reason)
	}
	return b.String()
}

func readRollout(t testing.TB, g *gateway) (rolloutView, error) {
	var v rolloutView
	e := do(newClient(t), "GET", g.AdminURL+"/admin/routes/get-profile/rollout", "", nil)
	if e.err != nil || e.status != 200 {
		return v, fmt.Errorf("GET rollout: %v", e)
	}
	return v, json.Unmarshal([]byte(e.body), &v)
}

// waitRollout polls g until the rollout is in state, and fails at once if
// it ends in another.
func waitRollout(t *testing.T, g *gateway, d time.Duration, state string) rolloutView {
	t.Helper()
	var last rolloutView
	eventually(t, d, "the rollout to be "+state, func() bool {
		v, err := readRollout(t, g)
		if err != nil {
			t.Log(err)
			return false
		}
		if v.State != last.State || len(v.History) != len(last.History) {
			t.Logf("rollout: %s", v)
		}
		last = v
		switch v.State {
		case state:
			return true
		case "running", "idle":
			return false
		}
		t.Fatalf("the rollout is %s, want %s: %s", v.State, state, v)
		return false
	})
	return last
}

// rolloutCLI runs `natsgate rollout ACTION get-profile` against g's admin
// API, as an operator would.
func rolloutCLI(t *testing.T, g *gateway, action string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin.natsgate, "rollout", action, "get-profile",
		"--admin", g.AdminURL, "--token", rolloutToken).CombinedOutput()
	if err != nil {
		t.Fatalf("natsgate rollout %s: %v\n%s", action, err, out)
	}
	return string(out)
}

// stageOf is the stage replica g runs get-profile at, from its
// natsgate_cutover_stage.
func stageOf(t testing.TB, g *gateway) string {
	t.Helper()
	client := newClient(t)
	for _, s := range []string{"legacy", "shadow", "canary", "nats"} {
		if v, err := scrapeErr(client, g.AdminURL, "natsgate_cutover_stage", `route="get-profile"`, `stage="`+s+`"`); err == nil && v == 1 {
			return s
		}
	}
	return ""
}

func waitStage(t *testing.T, f *rolloutFleet, stage string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		eventually(t, 10*time.Second, "replica "+id+" at "+stage, func() bool { return stageOf(t, f.replicas[id]) == stage })
	}
}

// failures lists the exchanges that did not get a 200.
func failures(exs []exchange) []exchange {
	var out []exchange
	for _, e := range exs {
		if e.err != nil || e.status != 200 {
			out = append(out, e)
		}
	}
	return out
}

func checkHistory(t *testing.T, v rolloutView, want ...string) {
	t.Helper()
	if got := v.decisions(); strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("history %q, want exactly %q: %s", got, want, v)
	}
}

// The healthy plan's steps and gates: a shadow step until 100 requests
// matched, canary at half, then nats, each judged over 5 s. Both sides
// take 20 ms an answer, so the NATS p99 is legacy's and a bound of 2.5
// only catches a real difference.
const healthyRollout = `      steps:
        - {stage: shadow, until: {requests: 100, match_rate: 0.99}}
        - {stage: canary, percent: 50}
        - {stage: nats}
      gates: {window: 5s, min_requests: 30, max_p99_ratio: 2.5}`

var evenSides = rolloutSides{legacy: []string{"--delay", "20ms"}, worker: []string{"--delay", "20ms"}}

// (a) A healthy worker is moved from legacy through shadow and canary to
// nats by the plan alone, started from the CLI: every client request is
// answered, each step is taken once, and both replicas end at nats.
func TestRolloutMovesAHealthyWorkerToNATS(t *testing.T) {
	f := startRolloutFleet(t, healthyRollout, evenSides)
	l := f.load(t)
	eventually(t, 10*time.Second, "load to flow", func() bool { return l.Count(200) >= 20 })
	out := rolloutCLI(t, f.replicas["b"], "start")
	t.Logf("natsgate rollout start: %s", strings.TrimSpace(out))

	v := waitRollout(t, f.replicas["a"], 60*time.Second, "done")
	waitStage(t, f, "nats", f.ids...)
	// Some answers after the end come from NATS: the route is really there.
	before := len(l.Snapshot())
	eventually(t, 10*time.Second, "answers from NATS after done", func() bool {
		for _, e := range l.Snapshot()[before:] {
			if e.backend == "nats" && e.status == 200 {
				return true
			}
		}
		return false
	})
	exs := l.Stop()

	checkHistory(t, v, "start shadow", "advance canary 50%", "advance nats", "done nats")
	for _, d := range v.History[1:] {
		if d.By != "rollout" {
			t.Errorf("decision %s by %q, want the controller (rollout)", d.Decision, d.By)
		}
	}
	if bad := failures(exs); len(bad) > 0 {
		t.Errorf("%d of %d client requests failed during the rollout; first: %v", len(bad), len(exs), bad[0])
	}
	checkJudgedWholeFleet(t, v, exs)
	// Each decision is counted by the one replica that made it: over the
	// fleet, as many as the history holds.
	client := newClient(t)
	for decision, want := range map[string]float64{"advance": 2, "done": 1, "rollback": 0} {
		var sum float64
		for _, id := range f.ids {
			sum += scrape(t, client, f.replicas[id].AdminURL, "natsgate_rollout_decisions_total", `route="get-profile"`, `decision="`+decision+`"`)
		}
		if sum != want {
			t.Errorf("natsgate_rollout_decisions_total{decision=%q} over the replicas = %g, want %g", decision, sum, want)
		}
	}
	t.Logf("%d requests, rollout took %v: %s", len(exs), v.History[len(v.History)-1].At.Sub(v.History[0].At).Round(time.Millisecond), v)
}

// passedReason is how an advance or done names what it judged: "gates
// passed over WINDOW (N requests)".
var passedReason = regexp.MustCompile(`^gates passed over (\w+) \((\d+) requests\)`)

// Fleet slots as natsgate numbers them: slot e holds what was answered
// in [(e-1)·5s, e·5s) of Unix time, and is read 1.5 s after it closes.
const (
	fleetSlot   = 5 * time.Second
	fleetSettle = 1500 * time.Millisecond
)

// checkJudgedWholeFleet checks that each decision of the controller
// counted the requests that both replicas answered in the window it
// judged, as the clients saw them: a decision on one replica's share of a
// slot is a verdict on half the evidence. The bounds leave room for
// requests that ended by a slot's edge.
func checkJudgedWholeFleet(t *testing.T, v rolloutView, exs []exchange) {
	t.Helper()
	for _, d := range v.History {
		m := passedReason.FindStringSubmatch(d.Reason)
		if d.By != "rollout" || m == nil {
			continue
		}
		window, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatalf("decision %s: reason %q: %v", d.Decision, d.Reason, err)
		}
		judged, _ := strconv.Atoi(m[2])
		settled := d.At.Add(-fleetSettle).UnixNano() / int64(fleetSlot) // the newest settled slot's end, in slots
		to := time.Unix(0, settled*int64(fleetSlot))
		from := to.Add(-window)
		sent := 0
		for _, e := range exs {
			if e.status != 0 && !e.end.Before(from) && e.end.Before(to) {
				sent++
			}
		}
		if float64(judged) < 0.9*float64(sent)-5 || float64(judged) > 1.1*float64(sent)+5 {
			t.Errorf("decision %s at %s judged %d requests over %s..%s; the clients had %d answered then: not the whole fleet's",
				d.Decision, d.At.Format("15:04:05.000"), judged, from.Format("15:04:05"), to.Format("15:04:05"), sent)
		}
	}
}

// gateReason is how a rollback names its gate: "gate NAME: VALUE, limit
// LIMIT, over WINDOW".
var gateReason = regexp.MustCompile(`^gate (\w+): ([0-9.e+-]+), limit ([0-9.e+-]+), over `)

// (b) A bad worker version is rolled back within one window of its
// traffic reaching NATS, by the gate it breaks, which the history names
// with its value and limit; every replica ends at legacy.
func TestRolloutRollsBackABadWorker(t *testing.T) {
	const window = 10 * time.Second
	for _, tc := range []struct {
		name  string
		sides rolloutSides
		gates string
		gate  string
		limit float64
		slow  bool // skipped with -short
	}{
		{
			name:  "errors",
			sides: rolloutSides{worker: []string{"--fail-rate", "0.1"}},
			gates: "{window: 10s, min_requests: 30, max_error_rate_delta: 0.05, max_p99_ratio: 50}",
			gate:  "max_error_rate_delta", limit: 0.05,
		},
		{
			name:  "latency",
			sides: rolloutSides{legacy: []string{"--delay", "10ms"}, worker: []string{"--delay", "30ms"}},
			gates: "{window: 10s, min_requests: 30, max_p99_ratio: 1.3}",
			gate:  "max_p99_ratio", limit: 1.3,
			slow: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.slow && testing.Short() {
				t.Skip("-short: the errors case covers a rollback")
			}
			plan := `      steps:
        - {stage: canary, percent: 50, hold: 10m}
        - {stage: nats}
      gates: ` + tc.gates
			f := startRolloutFleet(t, plan, tc.sides)
			l := f.load(t)
			eventually(t, 10*time.Second, "load to flow", func() bool { return l.Count(200) >= 20 })
			rolloutCLI(t, f.replicas["a"], "start")

			v := waitRollout(t, f.replicas["b"], window+30*time.Second, "rolled_back")
			waitStage(t, f, "legacy", f.ids...)
			l.Stop()
			checkHistory(t, v, "start canary 50%", "rollback legacy")
			if t.Failed() {
				return
			}
			start, back := v.History[0], v.History[1]
			took := back.At.Sub(start.At)
			t.Logf("rolled back %v after the canary began: %s", took.Round(time.Millisecond), back.Reason)
			// One window of whole slots after the step began, the slot it
			// began in, the settling and a round: window + 7.5 s at most on
			// an idle machine; 15 s of margin for a shared one.
			if took > window+15*time.Second {
				t.Errorf("rolled back %v after the canary began, want within the %v window and a margin", took, window)
			}
			m := gateReason.FindStringSubmatch(back.Reason)
			if m == nil {
				t.Fatalf("rollback reason %q does not name a gate, its value and its limit", back.Reason)
			}
			value, _ := strconv.ParseFloat(m[2], 64)
			limit, _ := strconv.ParseFloat(m[3], 64)
			if m[1] != tc.gate || limit != tc.limit || !(value > limit) {
				t.Errorf("rollback reason %q: gate %s at %g over limit %g, want %s over %g", back.Reason, m[1], value, limit, tc.gate, tc.limit)
			}
		})
	}
}

// (c) The leader replica is killed with SIGKILL in the middle of a
// step's hold; the other replica takes the lead and finishes the plan
// where it was: each step exactly once, none skipped, the hold kept.
func TestRolloutSurvivesTheLeadersDeath(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a 20 s hold and a leader takeover")
	}
	const hold = 20 * time.Second
	plan := `      steps:
        - {stage: shadow}
        - {stage: canary, percent: 50, hold: 20s}
        - {stage: nats}
      gates: {window: 5s, min_requests: 30, max_p99_ratio: 2.5}`
	f := startRolloutFleet(t, plan, evenSides)
	l := f.load(t)
	eventually(t, 10*time.Second, "load to flow", func() bool { return l.Count(200) >= 20 })
	rolloutCLI(t, f.replicas["a"], "start")

	var v rolloutView
	eventually(t, 40*time.Second, "the advance to canary", func() bool {
		var err error
		v, err = readRollout(t, f.replicas["a"])
		if err == nil && v.State != "running" {
			t.Fatalf("the rollout is %s before its second step: %s", v.State, v)
		}
		return err == nil && v.Step == 2
	})
	leader := v.Leader
	advanced := v.History[len(v.History)-1].At
	survivor := "a"
	if leader == "a" {
		survivor = "b"
	}
	f.drop(leader)
	f.replicas[leader].Kill()
	if since := time.Since(advanced); since >= hold {
		t.Fatalf("the leader was killed %v into a %v hold, not during it", since, hold)
	}
	t.Logf("killed the leader, replica %s, %v into the canary's hold", leader, time.Since(advanced).Round(time.Millisecond))

	v = waitRollout(t, f.replicas[survivor], 60*time.Second, "done")
	waitStage(t, f, "nats", survivor)
	exs := l.Stop()

	checkHistory(t, v, "start shadow", "advance canary 50%", "advance nats", "done nats")
	if v.Leader != survivor {
		t.Errorf("leader %q at the end, want the survivor %s", v.Leader, survivor)
	}
	if len(v.History) == 4 {
		if held := v.History[2].At.Sub(v.History[1].At); held < hold {
			t.Errorf("the canary step lasted %v across the takeover, want its hold of %v", held, hold)
		}
	}
	t.Logf("%d requests, %d not answered 200 (those in flight to the killed replica may fail): %s", len(exs), len(failures(exs)), v)
}
