package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Process-level outages during a rollout: the nats-server hung or
// restarted, every replica killed, the leader frozen, a replica frozen
// while its slots are due, and a fleet started before its nats-server.
// Each runs the rollout scenarios' fleet (e2e/rollout_test.go) on a plan
// whose canary step holds long enough for the outage to fall inside it,
// and checks what the controller kept: each step once, none skipped, the
// hold kept across the outage, and no stage written back in the cutover
// bucket.

// outageHold is the canary step's hold in these scenarios.
const outageHold = 15 * time.Second

// outagePlan is shadow, canary held outageHold, then nats. The gates are
// loose on purpose: the outages below make NATS answers fail or slow,
// which the gates would rightly roll back on, and these tests are about
// what the controller records, not about the gates.
var outagePlan = fmt.Sprintf(`      steps:
        - {stage: shadow}
        - {stage: canary, percent: 50, hold: %s}
        - {stage: nats}
      gates: {window: 5s, min_requests: 20, max_error_rate_delta: 1, max_p99_ratio: 1000, min_match_rate: 0}`, outageHold)

// outageHistory is the only history these scenarios accept.
var outageHistory = []string{"start shadow", "advance canary 50%", "advance nats", "done nats"}

// startOutageRollout starts the fleet and the load, starts the rollout
// and waits until it is in its canary step; it returns the rollout then.
func startOutageRollout(t *testing.T, f *rolloutFleet, l *load) rolloutView {
	t.Helper()
	eventually(t, 10*time.Second, "load to flow", func() bool { return l.Count(200) >= 20 })
	rolloutCLI(t, f.replicas["a"], "start")
	var v rolloutView
	eventually(t, 40*time.Second, "the advance to canary", func() bool {
		var err error
		v, err = readRollout(t, f.replicas["a"])
		if err == nil && v.State != "running" {
			t.Fatalf("the rollout is %s before its canary step: %s", v.State, v)
		}
		return err == nil && v.Step == 2
	})
	return v
}

// finishOutageRollout waits, on replica from, for the outage rollout to
// finish and every replica to serve nats, stops the load and checks the
// run: the history, the canary's hold (within slack), and a cutover
// bucket that never went back. It returns the load's exchanges.
func finishOutageRollout(t *testing.T, f *rolloutFleet, l *load, from *gateway, slack time.Duration) []exchange {
	t.Helper()
	v := waitRollout(t, from, 50*time.Second, "done")
	waitStage(t, f, "nats", f.ids...)
	exs := l.Stop()
	checkHistory(t, v, outageHistory...)
	checkHold(t, v, slack)
	checkStagesForward(t, f.ns)
	t.Logf("%d requests, %d not answered 200 during the outage: %s", len(exs), len(failures(exs)), v)
	return exs
}

// checkHold checks that the canary step lasted its hold and not much
// more: counted from the stored since, not restarted by the outage.
func checkHold(t *testing.T, v rolloutView, slack time.Duration) {
	t.Helper()
	if len(v.History) != len(outageHistory) {
		return // checkHistory said why
	}
	held := v.History[2].At.Sub(v.History[1].At)
	if held < outageHold {
		t.Errorf("the canary step lasted %v, want its hold of %v", held, outageHold)
	}
	if held > outageHold+slack {
		t.Errorf("the canary step lasted %v, want its hold of %v counted from when it began (slack %v): the outage restarted it", held, outageHold, slack)
	}
}

// checkNoHang checks that no client request took much longer than the
// route's timeouts (2 s on NATS, 5 s on legacy): an outage may fail
// requests, but none is left waiting.
func checkNoHang(t *testing.T, exs []exchange, limit time.Duration) {
	t.Helper()
	for _, e := range exs {
		if e.took() > limit {
			t.Errorf("a request took %v, past the %v any answer should take: %v", e.took(), limit, e)
			return
		}
	}
}

// cutoverWrite is one revision of get-profile in the cutover bucket.
type cutoverWrite struct {
	Stage   string
	Percent int
	By      string
	Deleted bool
}

func (w cutoverWrite) String() string {
	if w.Deleted {
		return "deleted"
	}
	if w.Stage == "canary" {
		return fmt.Sprintf("canary %d%% by %s", w.Percent, w.By)
	}
	return w.Stage + " by " + w.By
}

// cutoverHistory reads every kept revision of get-profile in the cutover
// bucket, as `nats kv history` would.
func cutoverHistory(t *testing.T, ns *natsServer) []cutoverWrite {
	t.Helper()
	nc, err := nats.Connect(ns.URL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "natsgate_cutover")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := kv.History(ctx, "get-profile")
	if err != nil {
		t.Fatal(err)
	}
	var out []cutoverWrite
	for _, e := range entries {
		if e.Operation() != jetstream.KeyValuePut {
			out = append(out, cutoverWrite{Deleted: true})
			continue
		}
		var o struct {
			Cutover       string `json:"cutover"`
			CanaryPercent int    `json:"canary_percent"`
			By            string `json:"by"`
		}
		if err := json.Unmarshal(e.Value(), &o); err != nil {
			t.Fatalf("cutover revision %d: %v: %s", e.Revision(), err, e.Value())
		}
		out = append(out, cutoverWrite{Stage: o.Cutover, Percent: o.CanaryPercent, By: o.By})
	}
	return out
}

// checkStagesForward checks the cutover bucket's history for the plan's
// stages in order, each written by the controller, none written back
// after a later one: a stage written twice in a row is harmless (a new
// leader confirming the last one), a step back is a stale leader.
func checkStagesForward(t *testing.T, ns *natsServer) {
	t.Helper()
	ws := cutoverHistory(t, ns)
	order := map[string]int{"shadow": 1, "canary 50%": 2, "nats": 3}
	last := 0
	var seen []string
	for _, w := range ws {
		seen = append(seen, w.String())
		key := w.Stage
		if w.Stage == "canary" {
			key = fmt.Sprintf("canary %d%%", w.Percent)
		}
		n, ok := order[key]
		switch {
		case w.Deleted || !ok:
			t.Errorf("the cutover bucket holds %s, not a stage of the plan", w)
		case w.By != "rollout":
			t.Errorf("the cutover bucket holds %s, want every write by the controller", w)
		case n < last:
			t.Errorf("the cutover bucket went back to %s after a later stage", w)
		}
		last = max(last, n)
	}
	if last != 3 {
		t.Errorf("the cutover bucket never reached nats")
	}
	t.Logf("cutover bucket history of get-profile: %s", strings.Join(seen, ", "))
}

// restart starts replica g's natsgate again on the same config and
// ports, after it was killed, and waits until it is ready.
func (f *rolloutFleet) restart(t *testing.T, g *gateway) {
	t.Helper()
	p := startProc(t, "natsgate", bin.natsgate, "serve", "--config", g.ConfigFile)
	f.mu.Lock()
	g.proc = p
	f.mu.Unlock()
	waitReady(t, g)
}

func waitReady(t *testing.T, g *gateway) {
	t.Helper()
	client := newClient(t)
	eventually(t, 30*time.Second, "natsgate /readyz", func() bool {
		if !g.Running() {
			t.Fatalf("natsgate exited with %d:\n%s", g.code, g.Output())
		}
		return httpStatus(client, g.AdminURL+"/readyz") == 200
	})
}

// stickyLoad is like load, but each client keeps to one replica (client
// c to the c-th of the replicas, in turn), so that a frozen replica holds
// up only its own clients and the others go on.
func (f *rolloutFleet) stickyLoad(t *testing.T) *load {
	client := newClient(t)
	l := startLoad(4, 1500, 90*time.Second, func(c, i int) exchange {
		g := f.replicas[f.ids[c%len(f.ids)]]
		ex := do(client, "GET", fmt.Sprintf("%s/profiles/%d", g.URL, 1+(c*1500+i)%1000), "", nil)
		time.Sleep(40 * time.Millisecond)
		return ex
	})
	t.Cleanup(func() { l.Stop() })
	return l
}

// The nats-server is hung (SIGSTOP) in the canary step for 2.5 leader
// TTLs, then goes on: the lead lapses and is taken again, and the
// rollout carries on from where it was, each step once, none skipped,
// the hold kept. No client request is left waiting past its timeout.
func TestRolloutOutageNATSPaused(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a hung nats-server during a 15 s hold")
	}
	f := startRolloutFleet(t, outagePlan, evenSides)
	l := f.load(t)
	startOutageRollout(t, f, l)
	time.Sleep(3 * time.Second) // into the hold
	f.ns.Pause()
	time.Sleep(5 * time.Second)
	f.ns.Resume()
	t.Log("nats-server paused 5 s and resumed, in the canary's hold")

	exs := finishOutageRollout(t, f, l, f.replicas["a"], 12*time.Second)
	checkNoHang(t, exs, 8*time.Second)
}

// The nats-server is killed in the canary step's hold and started again
// on the same JetStream store: the rollout's record survives it, and the
// step ends its hold counted from the stored since, neither restarted nor
// skipped.
func TestRolloutOutageNATSRestarted(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a nats-server restart during a 15 s hold")
	}
	f := startRolloutFleet(t, outagePlan, evenSides)
	l := f.load(t)
	startOutageRollout(t, f, l)
	time.Sleep(3 * time.Second)
	f.ns.Kill()
	time.Sleep(time.Second)
	f.ns.Start()
	t.Log("nats-server killed and started again on its store, in the canary's hold")

	exs := finishOutageRollout(t, f, l, f.replicas["a"], 12*time.Second)
	checkNoHang(t, exs, 8*time.Second)
}

// Every natsgate replica is killed (SIGKILL) in the canary step's hold
// and started again: the step resumes where it was, not from step 1 and
// not skipped, its hold counted from when it began.
func TestRolloutOutageEveryReplicaKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the whole fleet restarted during a 15 s hold")
	}
	f := startRolloutFleet(t, outagePlan, evenSides)
	l := f.load(t)
	before := startOutageRollout(t, f, l)
	time.Sleep(3 * time.Second)
	killed := time.Now()
	for _, id := range f.ids {
		f.replicas[id].Kill()
	}
	time.Sleep(time.Second)
	for _, id := range f.ids {
		f.restart(t, f.replicas[id])
	}
	down := time.Since(killed)
	t.Logf("every replica killed and started again, in the canary's hold; the fleet was back %v after the kill", down.Round(time.Millisecond))

	// The restarted fleet reads the step's start from the record: the
	// step goes on from when it began, not from the restart.
	if v, err := readRollout(t, f.replicas["b"]); err == nil && v.State == "running" && v.Step == before.Step {
		if v.Since == nil || before.Since == nil || !v.Since.Equal(*before.Since) {
			t.Errorf("the canary step began at %v before the outage and at %v after it: the restart moved it", before.Since, v.Since)
		}
	}
	// No gate can judge before the fleet is back, and sending its slots
	// again takes a window: the hold's slack counts from the kill to the
	// fleet's return as well, since replicas starting on a loaded machine
	// take a while.
	finishOutageRollout(t, f, l, f.replicas["b"], 12*time.Second+down)
}

// The leader is frozen (SIGSTOP) for three TTLs in the canary step's
// hold: the other replica leads meanwhile, and when the old leader wakes
// it acts on nothing it read before: each step once, and the cutover
// bucket never goes back to a stage the rollout has left.
func TestRolloutOutageLeaderFrozen(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a frozen leader during a 15 s hold")
	}
	f := startRolloutFleet(t, outagePlan, evenSides)
	l := f.stickyLoad(t)
	v := startOutageRollout(t, f, l)
	leader := v.Leader
	other := "a"
	if leader == "a" {
		other = "b"
	}
	time.Sleep(2 * time.Second)
	f.replicas[leader].Signal(syscall.SIGSTOP)
	eventually(t, 15*time.Second, "replica "+other+" to lead while "+leader+" is frozen", func() bool {
		v, err := readRollout(t, f.replicas[other])
		return err == nil && v.Leader == other
	})
	time.Sleep(6 * time.Second) // three TTLs frozen in all, at least
	f.replicas[leader].Signal(syscall.SIGCONT)
	t.Logf("leader %s frozen and woken in the canary's hold; %s led meanwhile", leader, other)

	finishOutageRollout(t, f, l, f.replicas[other], 12*time.Second)
}

// The fleet comes back in the wrong order: every replica and the
// nats-server are killed in the canary step's hold. A replica started
// while no nats-server runs exits 1 at once, naming why, for its
// supervisor to start it again (docs/operations.md, Running it). Then the nats-server
// comes back without JetStream for a while, the replicas start on it,
// and only then is the server restarted with JetStream on its store: a
// leader is elected and the rollout goes on from its stored step.
func TestRolloutOutageReplicasStartBeforeJetStream(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a fleet restarted in the wrong order during a 15 s hold")
	}
	f := startRolloutFleet(t, outagePlan, evenSides)
	l := f.load(t)
	startOutageRollout(t, f, l)
	time.Sleep(3 * time.Second)
	for _, id := range f.ids {
		f.replicas[id].Kill()
	}
	f.ns.Kill()

	a := f.replicas["a"]
	p := startProc(t, "natsgate", bin.natsgate, "serve", "--config", a.ConfigFile)
	if code, exited := p.Wait(15 * time.Second); !exited || code != 1 || !strings.Contains(p.Output(), "no servers available") {
		t.Fatalf("natsgate started with no nats-server: exited %v with %d, want 1 at once naming why:\n%s", exited, code, p.Output())
	}

	withJS, err := os.ReadFile(f.ns.conf)
	if err != nil {
		t.Fatal(err)
	}
	noJS := regexp.MustCompile(`(?s)jetstream \{.*?\n\}\n`).ReplaceAll(withJS, nil)
	if string(noJS) == string(withJS) {
		t.Fatalf("no jetstream block to take out of the nats-server config:\n%s", withJS)
	}
	rewrite(t, f.ns.conf, noJS)
	f.ns.Start()
	for _, id := range f.ids {
		g := f.replicas[id]
		p := startProc(t, "natsgate", bin.natsgate, "serve", "--config", g.ConfigFile)
		f.mu.Lock()
		g.proc = p
		f.mu.Unlock()
	}
	time.Sleep(3 * time.Second) // the replicas up, on a NATS without JetStream
	for _, id := range f.ids {
		if !f.replicas[id].Running() {
			t.Fatalf("replica %s exited on a NATS without JetStream:\n%s", id, f.replicas[id].Output())
		}
	}
	f.ns.Kill()
	rewrite(t, f.ns.conf, withJS)
	f.ns.Start()
	for _, id := range f.ids {
		waitReady(t, f.replicas[id])
	}
	t.Log("replicas started before JetStream, in the canary's hold")

	finishOutageRollout(t, f, l, f.replicas["a"], 20*time.Second)
}

// rewrite replaces a file's contents.
func rewrite(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A replica that is not the leader is frozen (SIGSTOP) for 4 s across
// the close of the slot the leader's next decision judges, with traffic
// on both replicas: its slot reaches the others late. The rollout is
// started at a chosen point of the five-second slot cycle so that the
// canary's hold ends, and the leader decides, while the frozen replica's
// share of that slot is still missing. A decision must count the whole
// fleet's slot, not the half it has heard of: it waits for the late share
// rather than judging without it.
func TestRolloutOutageLateSlotsAreWaitedFor(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a frozen replica at the end of a 10 s hold")
	}
	const hold = 10 * time.Second
	plan := fmt.Sprintf(`      steps:
        - {stage: canary, percent: 50, hold: %s}
        - {stage: nats}
      gates: {window: 5s, min_requests: 20, max_error_rate_delta: 1, max_p99_ratio: 1000}`, hold)
	f := startRolloutFleet(t, plan, evenSides)
	l := f.stickyLoad(t)
	eventually(t, 10*time.Second, "load to flow", func() bool { return l.Count(200) >= 20 })
	v, err := readRollout(t, f.replicas["a"])
	if err != nil {
		t.Fatal(err)
	}
	frozen := "a"
	if v.Leader == "a" {
		frozen = "b"
	}
	// Start 2 s into a slot: the hold ends 2 s after the close of the
	// first slot wholly inside the step, just after it settles (1.5 s),
	// and that slot is the one the decision judges.
	now := time.Now()
	time.Sleep(now.Truncate(fleetSlot).Add(fleetSlot + 2*time.Second).Sub(now))
	rolloutCLI(t, f.replicas[v.Leader], "start")
	v, err = readRollout(t, f.replicas[v.Leader])
	if err != nil || len(v.History) == 0 {
		t.Fatalf("the rollout after start: %v %s", err, v)
	}
	started := v.History[len(v.History)-1].At
	judged := started.Add(hold - 1500*time.Millisecond).Truncate(fleetSlot) // the close of the slot judged
	if judged.Before(started.Truncate(fleetSlot).Add(2 * fleetSlot)) {
		t.Fatalf("started at %s, too late in its slot to aim the freeze", started.Format("15:04:05.000"))
	}
	time.Sleep(time.Until(judged.Add(-500 * time.Millisecond)))
	f.replicas[frozen].Signal(syscall.SIGSTOP)
	time.Sleep(4 * time.Second)
	f.replicas[frozen].Signal(syscall.SIGCONT)
	t.Logf("replica %s frozen %s..+4s around the close of the slot judged (%s); the hold ends at %s",
		frozen, judged.Add(-500*time.Millisecond).Format("15:04:05.000"), judged.Format("15:04:05"), started.Add(hold).Format("15:04:05.000"))

	v = waitRollout(t, f.replicas[v.Leader], 40*time.Second, "done")
	exs := l.Stop()
	checkHistory(t, v, "start canary 50%", "advance nats", "done nats")
	checkJudgedWholeFleet(t, v, exs)
	t.Logf("%d requests: %s", len(exs), v)
}
