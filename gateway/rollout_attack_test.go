package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/internal/natstest"
)

// rolloutKV opens the rollout bucket as another NATS client would, to
// write behind the gateway's back; GET rollout creates it first.
func rolloutKV(t *testing.T, gw *testGateway) jetstream.KeyValue {
	t.Helper()
	if resp, body := do(t, "GET", gw.AdminURL+"/admin/routes/get/rollout", nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET rollout: %d %s", resp.StatusCode, body)
	}
	js, err := jetstream.New(natstest.Connect(t, gw.NS))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), "natsgate_rollouts")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// A record written behind the gateway's back with a step no plan has
// (negative, or past the last) neither crashes the leader nor the admin
// API: the leader keeps leading and answering, and the route's rollout
// reads as something an operator can act on.
func TestRolloutRecordWithStepOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		name, state string
		step        int
		want        string // the state GET then reports
	}{
		{"negative running", RolloutRunning, -1, RolloutIdle},
		{"negative paused", RolloutPaused, -3, RolloutIdle},
		{"past the last running", RolloutRunning, 7, RolloutPaused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := natstest.RunServer(t)
			up := jsonLegacy(t)
			plan := `      steps: [{stage: canary, percent: 10, hold: 10m}, {stage: nats}]`
			a := startGateway(t, ns, rolloutConfig("a", up.URL, plan))
			waitLeader(t, 10*time.Second, []*testGateway{a})
			kv := rolloutKV(t, a)
			rt := a.table.Load().handlers["get"].rt
			rec := fmt.Sprintf(`{"state":%q,"step":%d,"since":%q,"target":{"stage":"canary","percent":10},"applied":true,"plan":%q,"history":[]}`,
				tc.state, tc.step, time.Now().UTC().Format(time.RFC3339Nano), planHash(rt.Rollout))
			if _, err := kv.Put(context.Background(), "get", []byte(rec)); err != nil {
				t.Fatal(err)
			}
			// The leader reads the record each second: a few rounds.
			deadline := time.Now().Add(4 * time.Second)
			for time.Now().Before(deadline) {
				resp, err := http.Get(a.AdminURL + "/admin/routes/get/rollout")
				if err != nil {
					t.Fatalf("GET rollout after the record was written: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET rollout: %d", resp.StatusCode)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if !a.IsLeader() {
				t.Fatalf("the replica no longer leads after reading the record")
			}
			waitFor(t, 15*time.Second, "the rollout to read "+tc.want, func() bool { return getRollout(t, a).State == tc.want })
			if st := getRollout(t, a); st.Step < 0 || st.Step > st.Steps {
				t.Errorf("GET rollout shows step %d of %d", st.Step, st.Steps)
			}
			for _, action := range []string{"resume", "abort", "start"} {
				code, body := rolloutAction(t, a, action)
				if code != 200 && code != 409 {
					t.Errorf("%s: %d %s, want 200 or a 409 problem", action, code, body)
				}
				if code == 409 && !strings.Contains(body, "rollout") {
					t.Errorf("%s: 409 %s, want a problem naming the rollout", action, body)
				}
			}
			var st RolloutStatus
			_ = json.Unmarshal([]byte(mustGet(t, a.AdminURL+"/admin/routes/get/rollout")), &st)
			if st.State != RolloutRunning || st.Step != 1 {
				t.Errorf("after resume/abort/start: %s at step %d, want running at 1", st.State, st.Step)
			}
		})
	}
}

func mustGet(t *testing.T, url string) string {
	t.Helper()
	resp, body := do(t, "GET", url, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return body
}

// A leader that read a record, then stalled (stopped, or slow past its
// lead) while another replica moved the rollout on, writes no stage from
// the record it read: the stage the newer record applied stays. Here the
// stalled leader holds the record of the start, before its stage was
// applied, and acts on it after the rollout was aborted.
func TestRolloutStaleLeaderAppliesNoStage(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	plan := `      steps: [{stage: canary, percent: 10, hold: 10m}, {stage: nats}]`
	a := startGateway(t, ns, rolloutConfig("a", up.URL, plan))
	waitLeader(t, 10*time.Second, []*testGateway{a})
	kv := rolloutKV(t, a)
	if code, body := rolloutAction(t, a, "start"); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	ctx := context.Background()
	entries, err := kv.History(ctx, "get")
	if err != nil {
		t.Fatal(err)
	}
	var stale rolloutRecord
	var staleRev uint64
	for _, e := range entries {
		var rec rolloutRecord
		if json.Unmarshal(e.Value(), &rec) == nil && rec.State == RolloutRunning && !rec.Applied {
			stale, staleRev = rec, e.Revision()
			break
		}
	}
	if staleRev == 0 {
		t.Fatalf("no record of the start before its stage was applied among %d revisions", len(entries))
	}
	waitFor(t, 10*time.Second, "canary", func() bool { return string(stageOf(a, "get").Stage) == "canary" })
	if code, body := rolloutAction(t, a, "abort"); code != 200 {
		t.Fatalf("abort: %d %s", code, body)
	}
	rt := a.table.Load().handlers["get"].rt
	waitFor(t, 10*time.Second, "the abort's legacy applied", func() bool {
		rec, _, err := a.rollouts.load(ctx, "get")
		return err == nil && rec.State == RolloutAborted && rec.Applied
	})
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = a.rollouts.act(actx, rt, &stale, staleRev)
	if err == nil {
		t.Errorf("acting on a record two revisions old succeeded")
	}
	cur, err := a.rollouts.currentStage(actx, rt)
	if err != nil {
		t.Fatal(err)
	}
	if cur.Stage != "legacy" {
		t.Errorf("the cutover bucket holds %s after the stale round, want the abort's legacy", cur)
	}
}

// Two replicas asked to start the same rollout at the same moment: one
// wins, the other answers 409, and the history holds one start.
func TestRolloutConcurrentStartsOneWins(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	plan := `      steps: [{stage: canary, percent: 10, hold: 10m}, {stage: nats}]`
	a := startGateway(t, ns, rolloutConfig("a", up.URL, plan))
	b := startGateway(t, ns, rolloutConfig("b", up.URL, plan))
	rolloutKV(t, a)
	for round := range 5 {
		codes := make(chan int, 4)
		for _, gw := range []*testGateway{a, b, a, b} {
			go func() {
				code, _ := rolloutAction(t, gw, "start")
				codes <- code
			}()
		}
		var won, refused int
		for range 4 {
			switch <-codes {
			case 200:
				won++
			case 409:
				refused++
			}
		}
		if won != 1 || refused != 3 {
			t.Fatalf("round %d: %d starts won and %d refused, want 1 and 3", round, won, refused)
		}
		if code, body := rolloutAction(t, b, "abort"); code != 200 {
			t.Fatalf("abort: %d %s", code, body)
		}
	}
	st := getRollout(t, a)
	var starts int
	for _, d := range st.History {
		if d.Decision == decisionStart {
			starts++
		}
	}
	if starts != 5 {
		t.Errorf("history %q holds %d starts, want 5", decisions(st), starts)
	}
}

// With NATS gone, GET and PUT rollout answer a problem naming the route
// in bounded time, not a hang.
func TestRolloutAdminWhileNATSIsDown(t *testing.T) {
	ns := natstest.RunServer(t)
	up := jsonLegacy(t)
	a := startGateway(t, ns, rolloutConfig("a", up.URL, `      steps: [{stage: nats}]`))
	rolloutKV(t, a)
	ns.Shutdown()
	for _, method := range []string{"GET", "PUT"} {
		req, _ := http.NewRequest(method, a.AdminURL+"/admin/routes/get/rollout", strings.NewReader(`{"action":"start"}`))
		req.Header.Set("Authorization", "Bearer "+rolloutToken)
		start := time.Now()
		resp, body := send(t, req)
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("%s rollout took %v with NATS down", method, took)
		}
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, `"get"`) {
			t.Errorf("%s rollout with NATS down: %d %s %s, want a 503 problem naming get", method, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}
