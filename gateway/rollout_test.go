package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const rolloutToken = "s3cret"

// rolloutConfig is one route, get, served by upstream and the worker on
// subject get, with plan (the YAML under rollout:, indented 6).
func rolloutConfig(id, upstream, plan string) string {
	return fmt.Sprintf(`
admin:
  token: %s
fleet:
  replica_id: %s
  leader_ttl: 2s
upstreams:
  old: {url: %q}
routes:
  - name: get
    method: GET
    path: /get
    upstream: old
    nats: {subject: get, timeout: 5s}
    rollout:
%s
`, rolloutToken, id, upstream, plan)
}

// answer is what both sides of the route answer, so shadow copies match.
const answer = `{"ok":true}`

func jsonLegacy(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(answer))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// worker answers get like the legacy service; fail, when it returns true,
// makes one answer a 500.
func rolloutWorker(t *testing.T, ns *server.Server, fail func() bool) {
	nc := natstest.Connect(t, ns)
	respond(t, nc, "get", func(m *nats.Msg) *nats.Msg {
		out := nats.NewMsg("")
		out.Header.Set("Content-Type", "application/json")
		out.Data = []byte(answer)
		if fail != nil && fail() {
			out.Header.Set(HeaderStatus, "500")
			out.Data = []byte(`{"error":"boom"}`)
		}
		return out
	})
}

// traffic sends GET /get to the replicas in turn, about perSecond a
// second, until stopped or a minute and a half has passed; it counts what
// the clients did not get a 200 for.
type traffic struct {
	stop   chan struct{}
	done   chan struct{}
	sent   atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	first  string // the first failure
}

func sendTraffic(t *testing.T, perSecond int, gws ...*testGateway) *traffic {
	tr := &traffic{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		end := time.After(90 * time.Second)
		for i := 0; ; i++ {
			select {
			case <-tr.stop:
				return
			case <-end:
				return
			case <-tick.C:
			}
			resp, err := http.Get(gws[i%len(gws)].URL + "/get")
			tr.sent.Add(1)
			if err == nil {
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode != 200 {
				tr.failed.Add(1)
				tr.mu.Lock()
				if tr.first == "" {
					tr.first = fmt.Sprint(err, resp)
				}
				tr.mu.Unlock()
			}
		}
	}()
	t.Cleanup(tr.end)
	return tr
}

func (tr *traffic) end() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	<-tr.done
}

func getRollout(t testing.TB, gw *testGateway) RolloutStatus {
	t.Helper()
	resp, body := do(t, "GET", gw.AdminURL+"/admin/routes/get/rollout", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET rollout: %d %s", resp.StatusCode, body)
	}
	var st RolloutStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("GET rollout: %v\n%s", err, body)
	}
	return st
}

// rolloutAction PUTs an action and returns the status code and body.
func rolloutAction(t testing.TB, gw *testGateway, action string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("PUT", gw.AdminURL+"/admin/routes/get/rollout", strings.NewReader(`{"action":"`+action+`"}`))
	req.Header.Set("Authorization", "Bearer "+rolloutToken)
	req.Header.Set("X-Natsgate-Actor", "ops")
	resp, body := send(t, req)
	return resp.StatusCode, body
}

func decisions(st RolloutStatus) []string {
	var out []string
	for _, d := range st.History {
		out = append(out, d.Decision+" "+d.To)
	}
	return out
}

func waitRollout(t *testing.T, gw *testGateway, d time.Duration, state string) RolloutStatus {
	t.Helper()
	var st RolloutStatus
	defer func() {
		if t.Failed() {
			t.Logf("rollout status: %+v", st)
		}
	}()
	waitFor(t, d, "the rollout to be "+state, func() bool {
		st = getRollout(t, gw)
		if st.State != state && st.State != RolloutRunning && st.State != RolloutPaused {
			t.Fatalf("rollout is %s, want %s; history %q", st.State, state, decisions(st))
		}
		return st.State == state
	})
	return st
}

const healthyPlan = `      steps:
        - {stage: shadow, until: {requests: 20, match_rate: 0.9}}
        - {stage: canary, percent: 50}
        - {stage: nats}
      gates: {window: 10s, min_requests: 10, max_p99_ratio: 50, max_error_rate_delta: 0.05, min_match_rate: 0.9}`

// A healthy worker is moved from legacy through shadow and canary to
// nats by the plan alone, each step taken once, with no client request
// failing, and every replica runs the final stage.
func TestRolloutMovesAHealthyRouteToNATS(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	rolloutWorker(t, ns, nil)
	a := startGateway(t, ns, rolloutConfig("a", up.URL, healthyPlan))
	b := startGateway(t, ns, rolloutConfig("b", up.URL, healthyPlan))
	waitLeader(t, 10*time.Second, []*testGateway{a, b})
	if st := getRollout(t, b); st.State != RolloutIdle || st.Stage != "legacy" || st.Steps != 3 {
		t.Fatalf("before start: %+v, want idle at legacy with 3 steps", st)
	}
	tr := sendTraffic(t, 40, a, b)
	if code, body := rolloutAction(t, b, "start"); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	st := waitRollout(t, a, 75*time.Second, RolloutDone)
	tr.end()
	want := []string{"start shadow", "advance canary 50%", "advance nats", "done nats"}
	if got := decisions(st); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("history %q, want %q", got, want)
	}
	if st.History[0].By != "ops" || st.History[1].By != "rollout" {
		t.Errorf("history by %q, %q; want ops, rollout", st.History[0].By, st.History[1].By)
	}
	if n := tr.failed.Load(); n != 0 {
		t.Errorf("%d of %d client requests failed, first: %s", n, tr.sent.Load(), tr.first)
	}
	for _, gw := range []*testGateway{a, b} {
		waitFor(t, 15*time.Second, "nats on "+gw.AdminURL, func() bool { return string(stageOf(gw, "get").Stage) == "nats" })
	}
	var advances float64
	for _, gw := range []*testGateway{a, b} {
		advances += testutil.ToFloat64(gw.metrics.RolloutDecisions.WithLabelValues("get", "advance"))
	}
	if advances != 2 {
		t.Errorf("natsgate_rollout_decisions_total{decision=advance} over the replicas = %g, want 2", advances)
	}
}

// A worker that answers 500 to a fifth of its requests is rolled back to
// legacy within a window, with the failing gate, its value and limit in
// the history.
func TestRolloutRollsBackOnErrors(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	var n atomic.Int64
	rolloutWorker(t, ns, func() bool { return n.Add(1)%5 == 0 })
	plan := `      steps:
        - {stage: canary, percent: 50, hold: 10m}
        - {stage: nats}
      gates: {window: 10s, min_requests: 10, max_error_rate_delta: 0.05, max_p99_ratio: 50}`
	a := startGateway(t, ns, rolloutConfig("a", up.URL, plan))
	waitLeader(t, 10*time.Second, []*testGateway{a})
	sendTraffic(t, 40, a)
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	st := waitRollout(t, a, 30*time.Second, RolloutRolledBack)
	last := st.History[len(st.History)-1]
	if last.Decision != "rollback" || last.To != "legacy" || !strings.Contains(last.Reason, "max_error_rate_delta") || !strings.Contains(last.Reason, "limit 0.05") {
		t.Errorf("last decision %+v, want a rollback to legacy naming max_error_rate_delta and its limit", last)
	}
	waitFor(t, 15*time.Second, "legacy", func() bool { return string(stageOf(a, "get").Stage) == "legacy" })
	// The gauge follows the stored record at the end of the round that
	// wrote the stage.
	waitFor(t, 15*time.Second, "natsgate_rollout_step 0 after the rollback", func() bool {
		return testutil.ToFloat64(a.metrics.RolloutStep.WithLabelValues("get")) == 0
	})
}

// A stage changed by hand while a rollout runs pauses it; resume puts
// the step's stage back.
func TestRolloutPausedByAManualChange(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	rolloutWorker(t, ns, nil)
	plan := `      steps:
        - {stage: canary, percent: 10, hold: 10m}
        - {stage: nats}`
	a := startGateway(t, ns, rolloutConfig("a", up.URL, plan))
	waitLeader(t, 10*time.Second, []*testGateway{a})
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "canary", func() bool { return string(stageOf(a, "get").Stage) == "canary" })
	if got := testutil.ToFloat64(a.metrics.RolloutStep.WithLabelValues("get")); got != 1 {
		t.Errorf("natsgate_rollout_step = %g, want 1", got)
	}
	req, _ := http.NewRequest("PUT", a.AdminURL+"/admin/routes/get/cutover", strings.NewReader(`{"cutover":"legacy"}`))
	req.Header.Set("Authorization", "Bearer "+rolloutToken)
	if resp, body := send(t, req); resp.StatusCode != 200 {
		t.Fatalf("PUT cutover: %d %s", resp.StatusCode, body)
	}
	st := waitRollout(t, a, 10*time.Second, RolloutPaused)
	if last := st.History[len(st.History)-1]; last.Decision != "pause" || !strings.Contains(last.Reason, "outside the rollout") {
		t.Errorf("last decision %+v, want a pause saying the stage changed outside the rollout", last)
	}
	if string(stageOf(a, "get").Stage) != "legacy" {
		t.Errorf("stage %s after the pause, want the manual legacy kept", string(stageOf(a, "get").Stage))
	}
	if code, body := rolloutAction(t, a, "resume"); code != 200 {
		t.Fatalf("resume: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "canary again", func() bool { return string(stageOf(a, "get").Stage) == "canary" })
	if st := getRollout(t, a); st.State != RolloutRunning || st.Step != 1 {
		t.Errorf("after resume: %s at step %d, want running at 1", st.State, st.Step)
	}
	if code, body := rolloutAction(t, a, "abort"); code != 200 {
		t.Fatalf("abort: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "legacy after abort", func() bool { return string(stageOf(a, "get").Stage) == "legacy" })
}

// The admin API refuses what it cannot do with a problem naming the route.
func TestRolloutAdminErrors(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	a := startGateway(t, ns, rolloutConfig("a", up.URL, `      steps: [{stage: nats}]`)+`
  - name: plain
    method: GET
    path: /plain
    nats: {subject: plain}
`)
	for _, tc := range []struct {
		name, method, path, body, token string
		code                            int
		detail                          string
	}{
		{"no plan", "GET", "/admin/routes/plain/rollout", "", "", 404, "no rollout plan"},
		{"no route", "GET", "/admin/routes/nope/rollout", "", "", 404, ""},
		{"no token", "PUT", "/admin/routes/get/rollout", `{"action":"start"}`, "", 401, ""},
		{"bad action", "PUT", "/admin/routes/get/rollout", `{"action":"go"}`, rolloutToken, 400, "is not one of"},
		{"unknown field", "PUT", "/admin/routes/get/rollout", `{"action":"start","x":1}`, rolloutToken, 400, "x"},
		{"pause idle", "PUT", "/admin/routes/get/rollout", `{"action":"pause"}`, rolloutToken, 409, "cannot pause a rollout that is idle"},
		{"resume idle", "PUT", "/admin/routes/get/rollout", `{"action":"resume"}`, rolloutToken, 409, "idle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, a.AdminURL+tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, body := send(t, req)
			if resp.StatusCode != tc.code || !strings.Contains(body, tc.detail) || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s %s: %d %s %s, want %d problem containing %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.code, tc.detail)
			}
		})
	}
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	if code, body := rolloutAction(t, a, "start"); code != 409 || !strings.Contains(body, "cannot start a rollout that is running") {
		t.Errorf("second start: %d %s, want 409", code, body)
	}
}

// The rollout bucket deleted behind the gateway's back is created again:
// the route is idle, and a rollout can start.
func TestRolloutBucketDeletedIsCreatedAgain(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	a := startGateway(t, ns, rolloutConfig("a", up.URL, `      steps: [{stage: canary, percent: 10, hold: 10m}, {stage: nats}]`))
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(context.Background(), "natsgate_rollouts"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the rollout to read idle", func() bool {
		resp, body := do(t, "GET", a.AdminURL+"/admin/routes/get/rollout", nil, nil)
		return resp.StatusCode == 200 && strings.Contains(body, `"state": "idle"`)
	})
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start after the bucket was deleted: %d %s", code, body)
	}
}

// An abort is the operator's brake: the replica that takes it puts the
// route back on legacy before it answers, whether or not it leads and
// whether or not a leader is acting. Here another replica holds the lead
// and never acts (its key is written by the test and does not expire
// within the test), so nothing but the abort itself can move the route.
func TestRolloutAbortIsAppliedByTheReplicaThatTookIt(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	rolloutWorker(t, ns, nil)
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "natsgate_leader", History: 1, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, leaderKey, []byte("a-replica-that-never-acts")); err != nil {
		t.Fatal(err)
	}
	plan := `      steps:
        - {stage: canary, percent: 10, hold: 10m}
        - {stage: nats}`
	cfg := strings.Replace(rolloutConfig("a", up.URL, plan), "leader_ttl: 2s", "leader_ttl: 1h", 1)
	cfg = strings.Replace(cfg, "    upstream: old\n", "    upstream: old\n    cutover: canary\n    canary_percent: 10\n", 1)
	a := startGateway(t, ns, cfg)
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	if code, body := rolloutAction(t, a, "abort"); code != 200 {
		t.Fatalf("abort: %d %s", code, body)
	}
	if got := string(stageOf(a, "get").Stage); got != "legacy" {
		t.Errorf("stage %s once the abort was answered, want legacy", got)
	}
	if st := getRollout(t, a); st.State != RolloutAborted {
		t.Errorf("rollout %s after the abort, want aborted", st.State)
	}
	// A start right after begins from the legacy stage the abort left.
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start again: %d %s", code, body)
	}
	st := getRollout(t, a)
	if last := st.History[len(st.History)-1]; last.Decision != "start" || last.From != "legacy" {
		t.Errorf("the second start %+v, want it from legacy", last)
	}
}

// A decision dated in the future, written into the rollout bucket behind
// the gateway's back (or by a replica whose clock runs far ahead), must not
// keep the decisions after it off the route's chart: the pause taken after
// it is marked.
func TestRolloutMarksSurviveAFutureDatedDecision(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	a := startGateway(t, ns, rolloutConfig("a", up.URL, `      steps: [{stage: canary, percent: 10, hold: 10m}, {stage: nats}]`))
	waitLeader(t, 10*time.Second, []*testGateway{a})
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	forgeRollout(t, ns, func(rec map[string]any) {
		hist, _ := rec["history"].([]any)
		rec["history"] = append(hist, map[string]any{"at": "2100-01-01T00:00:00Z", "from": "canary 10%", "to": "canary 10%", "decision": "advance", "by": "forger"})
	})
	// The pause is decided on the record with the forged decision in it,
	// and marked (or not) in the same pass over its history.
	if code, body := rolloutAction(t, a, "pause"); code != 200 {
		t.Fatalf("pause: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the pause on the chart", func() bool {
		for _, ev := range a.history.route("get", "canary").Events {
			if strings.HasPrefix(ev.Text, "pause") {
				return true
			}
		}
		return false
	})
}

// A running rollout whose stored target the route cannot run (written
// behind the replicas' back: a stage that does not exist) is paused by
// the leader, saying why, once: not tried again and warned about every
// round for ever.
func TestRolloutWithATargetTheRouteCannotRunIsPaused(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	logs := &syncBuffer{}
	a := startGatewayLogging(t, ns, "log: {format: json, level: info}\n"+rolloutConfig("a", up.URL, `      steps: [{stage: canary, percent: 10, hold: 10m}, {stage: nats}]`), logs)
	waitLeader(t, 10*time.Second, []*testGateway{a})
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "canary", func() bool { return string(stageOf(a, "get").Stage) == "canary" })
	forgeRollout(t, ns, func(rec map[string]any) {
		rec["target"], rec["applied"] = map[string]any{"stage": "warp"}, false
	})
	st := waitRollout(t, a, 10*time.Second, RolloutPaused)
	if last := st.History[len(st.History)-1]; last.Decision != "pause" || !strings.Contains(last.Reason, "warp") {
		t.Errorf("last decision %+v, want a pause naming the stage it cannot run", last)
	}
	if got := string(stageOf(a, "get").Stage); got != "canary" {
		t.Errorf("stage %s, want the canary the route ran before the forged target kept", got)
	}
	// A few more rounds: the paused rollout is not acted on again.
	time.Sleep(3 * rolloutTick)
	if n := strings.Count(logs.String(), `"msg":"rollout: acting on the plan"`); n != 0 {
		t.Errorf("%d warnings about acting on the plan, want none once paused:\n%s", n, logs.String())
	}
}

// forgeRollout edits the stored rollout record of route get behind the
// gateways' back, as someone with write access to the bucket would: edit
// changes the record as JSON, and the write is tried again on the record
// as it then stands when a leader wrote it meanwhile.
func forgeRollout(t *testing.T, ns *server.Server, edit func(rec map[string]any)) {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "natsgate_rollouts")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the forged record written", func() bool {
		e, err := kv.Get(ctx, "get")
		if err != nil {
			return false
		}
		var rec map[string]any
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		edit(rec)
		b, _ := json.Marshal(rec)
		_, err = kv.Update(ctx, "get", b, e.Revision())
		return err == nil
	})
}
