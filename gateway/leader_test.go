package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// leaderConfig is fleetConfig with a leader TTL.
func leaderConfig(id string, ttl time.Duration) string {
	return fmt.Sprintf(`
fleet:
  replica_id: %s
  leader_ttl: %s
routes:
  - name: get
    method: GET
    path: /get
    nats: {subject: get, timeout: 5s}
`, id, ttl)
}

// startReplicas starts one gateway per id on ns, all with leader TTL ttl.
func startReplicas(t *testing.T, ns *server.Server, ttl time.Duration, ids ...string) []*testGateway {
	t.Helper()
	gws := make([]*testGateway, len(ids))
	for i, id := range ids {
		gws[i] = startGateway(t, ns, leaderConfig(id, ttl))
	}
	return gws
}

// leaders are the replicas among gws that say they lead.
func leaders(gws []*testGateway) []*testGateway {
	var out []*testGateway
	for _, gw := range gws {
		if gw.IsLeader() {
			out = append(out, gw)
		}
	}
	return out
}

// waitLeader waits for exactly one of gws to lead, and returns it.
func waitLeader(t *testing.T, d time.Duration, gws []*testGateway) *testGateway {
	t.Helper()
	var l *testGateway
	waitFor(t, d, "one replica to lead", func() bool {
		ls := leaders(gws)
		if len(ls) > 1 {
			t.Fatalf("%d replicas lead at once", len(ls))
		}
		if len(ls) == 1 {
			l = ls[0]
		}
		return l != nil
	})
	return l
}

// without is gws less one.
func without(gws []*testGateway, gone *testGateway) []*testGateway {
	var out []*testGateway
	for _, gw := range gws {
		if gw != gone {
			out = append(out, gw)
		}
	}
	return out
}

// leaderBucket opens the election bucket from a client of its own.
func leaderBucket(t *testing.T, ns *server.Server) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "natsgate_leader")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// Of three replicas exactly one leads, and never two at once: polled
// for a few seconds, many TTLs of 1s, with renewals going on.
func TestLeaderExactlyOne(t *testing.T) {
	ns := natstest.RunServer(t)
	gws := startReplicas(t, ns, time.Second, "a", "b", "c")
	l := waitLeader(t, 15*time.Second, gws)
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if ls := leaders(gws); len(ls) > 1 {
			t.Fatalf("%d replicas lead at once", len(ls))
		}
	}
	var sum float64
	for _, gw := range gws {
		v := testutil.ToFloat64(gw.metrics.FleetLeader)
		if want := map[bool]float64{true: 1, false: 0}[gw.IsLeader()]; v != want {
			t.Errorf("natsgate_fleet_leader = %g on a replica whose IsLeader is %v", v, gw.IsLeader())
		}
		sum += v
	}
	if sum != 1 {
		t.Errorf("natsgate_fleet_leader sums to %g over the replicas, want 1", sum)
	}
	e, err := leaderBucket(t, ns).Get(context.Background(), "leader")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(e.Value()), l.cfg.Fleet.ReplicaID; got != want && l.IsLeader() {
		t.Errorf("the key holds %q, the leader is %q", got, want)
	}
}

// A leader stopped cleanly deletes its key, and another replica leads at
// its next attempt: well within one TTL, far sooner than the key could
// have expired.
func TestLeaderCleanStopHandsOver(t *testing.T) {
	// The others campaign every third of the TTL: one is due within 10s,
	// the bound is 15s, and an expired key would take 20s at the least,
	// so a loaded machine still tells a hand-over from an expiry.
	const ttl = 30 * time.Second
	ns := natstest.RunServer(t)
	gws := startReplicas(t, ns, ttl, "a", "b", "c")
	l := waitLeader(t, 15*time.Second, gws)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped := time.Now()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if l.IsLeader() {
		t.Error("a stopped replica still says it leads")
	}
	// Its last renewal was at most a third of the TTL before the stop, so
	// an expired key would take two thirds of it at the least.
	next := waitLeader(t, ttl/2, without(gws, l))
	took := time.Since(stopped)
	t.Logf("%s leads %v after %s began to stop", next.cfg.Fleet.ReplicaID, took, l.cfg.Fleet.ReplicaID)
	if took > ttl/2 {
		t.Errorf("another replica led %v after the leader stopped: the key was not handed back", took)
	}
	if next.cfg.Fleet.ReplicaID == l.cfg.Fleet.ReplicaID {
		t.Fatal("the stopped replica's id leads")
	}
}

// A leader that stops renewing without a word (its loop stopped, or its
// NATS connection cut) loses the lead when its key expires: another
// replica leads within two TTLs, and the old one no longer says it leads.
func TestLeaderDeadLeaderReplaced(t *testing.T) {
	const ttl = time.Second
	for _, tc := range []struct {
		name string
		kill func(*testGateway)
	}{
		{"renewals stopped", func(gw *testGateway) {
			gw.leader.release = false
			gw.stopLeader()
		}},
		{"connection closed", func(gw *testGateway) { gw.conn.nc.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := natstest.RunServer(t)
			gws := startReplicas(t, ns, ttl, "a", "b", "c")
			l := waitLeader(t, 15*time.Second, gws)
			rest := without(gws, l)
			tc.kill(l)
			killed := time.Now()
			// It stops at nine tenths of a TTL after its last renewal;
			// the bound only catches a lead that never lapses.
			waitFor(t, 5*ttl, "the dead leader to stop saying it leads", func() bool { return !l.IsLeader() })
			// Two TTLs is the promise; the bound is generous for a
			// loaded machine, and still fails if the key never expires.
			next := waitLeader(t, 5*2*ttl, rest)
			t.Logf("%s leads %v after %s died", next.cfg.Fleet.ReplicaID, time.Since(killed), l.cfg.Fleet.ReplicaID)
			for end := time.Now().Add(2 * ttl); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				if ls := leaders(gws); len(ls) != 1 {
					t.Fatalf("%d replicas lead after the takeover, want 1", len(ls))
				}
			}
		})
	}
}

// Every replica's /admin/fleet names the same leader, and marks it, and
// only it, leader in its list of replicas.
func TestLeaderNamedInFleetStatus(t *testing.T) {
	ns := natstest.RunServer(t)
	gws := startReplicas(t, ns, time.Second, "a", "b", "c")
	l := waitLeader(t, 15*time.Second, gws)
	want := l.cfg.Fleet.ReplicaID
	for _, gw := range gws {
		waitFor(t, 15*time.Second, gw.cfg.Fleet.ReplicaID+"'s /admin/fleet to name "+want, func() bool {
			st := getFleet(t, gw)
			if st.Leader != want || len(st.Replicas) != 3 {
				return false
			}
			for _, r := range st.Replicas {
				if r.Leader != (r.ID == want) {
					return false
				}
			}
			return true
		})
	}
}

// Without JetStream no replica leads, /admin/fleet names none, and the
// gateways serve on.
func TestLeaderNoneWithoutJetStream(t *testing.T) {
	opts := natstest.Options(t)
	opts.JetStream = false
	ns := natstest.RunServerWith(t, opts)
	gws := startReplicas(t, ns, time.Second, "a", "b")
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if ls := leaders(gws); len(ls) > 0 {
			t.Fatalf("%d replicas lead without JetStream", len(ls))
		}
	}
	for _, gw := range gws {
		if st := getFleet(t, gw); st.Leader != "" {
			t.Errorf("/admin/fleet names leader %q without JetStream", st.Leader)
		}
		if v := testutil.ToFloat64(gw.metrics.FleetLeader); v != 0 {
			t.Errorf("natsgate_fleet_leader = %g without JetStream", v)
		}
	}
}
