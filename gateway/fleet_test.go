package gateway

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fleetConfig is a config with one route on subject, for replica id.
func fleetConfig(id, subject, extra string) string {
	return fmt.Sprintf(`
fleet:
  replica_id: %s
routes:
  - name: get
    method: GET
    path: /get
    nats: {subject: %s, timeout: 5s}
%s`, id, subject, extra)
}

// getStats reads /admin/stats with a query (say "?scope=replica").
func getStats(t testing.TB, gw *testGateway, query string) StatsSnapshot {
	t.Helper()
	resp, body := do(t, "GET", gw.AdminURL+"/admin/stats"+query, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/admin/stats%s: %d %s", query, resp.StatusCode, body)
	}
	var snap StatsSnapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatalf("/admin/stats%s: %v\n%s", query, err, body)
	}
	return snap
}

func getFleet(t testing.TB, gw *testGateway) FleetStatus {
	t.Helper()
	resp, body := do(t, "GET", gw.AdminURL+"/admin/fleet", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/admin/fleet: %d %s", resp.StatusCode, body)
	}
	var st FleetStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/admin/fleet: %v\n%s", err, body)
	}
	return st
}

// waitFor polls cond until it holds, or fails the test after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: still waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFleetListening waits until the server has gw's subscription to the
// fleet's stats. A replica flushes it at start, but gives up after a
// second, which a loaded machine can take: a message another connection
// publishes before the server has the subscription reaches nobody, and a
// test that sends it once would wait for nothing.
func waitFleetListening(t testing.TB, gw *testGateway) {
	t.Helper()
	waitFor(t, 15*time.Second, "the server to have "+gw.fleet.id+"'s fleet subscription", func() bool {
		return gw.NS.GlobalAccount().SubscriptionInterest(gw.fleet.prefix + "probe")
	})
}

// sendGets sends n GET /get to a gateway, each answered 200.
func sendGets(t testing.TB, gw *testGateway, n int) {
	t.Helper()
	for i := range n {
		if resp, body := do(t, "GET", gw.URL+"/get", nil, nil); resp.StatusCode != 200 {
			t.Fatalf("GET /get #%d: %d %s", i, resp.StatusCode, body)
		}
	}
}

func echo(t testing.TB, ns *server.Server, subject string, delay time.Duration) {
	worker := natstest.Connect(t, ns)
	respond(t, worker, subject, func(m *nats.Msg) *nats.Msg {
		time.Sleep(delay)
		return &nats.Msg{Data: []byte("ok")}
	})
}

// Traffic sent only to replica A is in replica B's /admin/stats, counted
// once; ?scope=replica is B alone.
func TestFleetStatsIncludeOtherReplicasTraffic(t *testing.T) {
	ns := natstest.RunServer(t)
	echo(t, ns, "get", 0)
	a := startGateway(t, ns, fleetConfig("a", "get", ""))
	b := startGateway(t, ns, fleetConfig("b", "get", ""))
	sendGets(t, a, 10)

	var snap StatsSnapshot
	waitFor(t, 15*time.Second, "B's fleet stats to hold A's 10 requests", func() bool {
		snap = getStats(t, b, "")
		return snap.Replicas == 2 && snap.Routes[0].Requests == 10
	})
	if snap.Scope != "fleet" {
		t.Errorf("scope %q, want fleet", snap.Scope)
	}
	r := snap.Routes[0]
	if n := r.Backends["nats"]; n.Requests != 10 || n.Latency.Count != 10 || n.Latency.P99 == nil || r.Rate <= 0 {
		t.Errorf("B's fleet view of get: %+v, want 10 nats requests with latencies and a rate", r)
	}
	if got := testutil.ToFloat64(b.metrics.FleetReplicas); got != 2 {
		t.Errorf("natsgate_fleet_replicas on B = %g, want 2", got)
	}
	own := getStats(t, b, "?scope=replica")
	if own.Scope != "replica" || own.Replicas != 1 || own.Routes[0].Requests != 0 {
		t.Errorf("B ?scope=replica: scope %q, %d replicas, %d requests; want replica, 1, 0", own.Scope, own.Replicas, own.Routes[0].Requests)
	}
	// A's own traffic is not counted twice in its fleet view.
	if av := getStats(t, a, "?scope=fleet"); av.Routes[0].Requests != 10 || av.Replicas != 2 {
		t.Errorf("A's fleet view: %d requests over %d replicas, want 10 over 2", av.Routes[0].Requests, av.Replicas)
	}
	if resp, body := do(t, "GET", b.AdminURL+"/admin/stats?scope=galaxy", nil, nil); resp.StatusCode != 400 || !strings.Contains(body, "scope") {
		t.Errorf("?scope=galaxy: %d %s, want a 400 problem", resp.StatusCode, body)
	}
}

// The fleet's quantiles come from the summed buckets: with A fast and B
// slow, half the requests each, the fleet's p99 is B's, not an average.
func TestFleetPercentilesFromMergedBuckets(t *testing.T) {
	const slow = 150 * time.Millisecond
	ns := natstest.RunServer(t)
	echo(t, ns, "fast", 0)
	echo(t, ns, "slow", slow)
	a := startGateway(t, ns, fleetConfig("a", "fast", ""))
	b := startGateway(t, ns, fleetConfig("b", "slow", ""))
	sendGets(t, a, 20)
	sendGets(t, b, 20)

	var fleetP99 float64
	waitFor(t, 15*time.Second, "A's fleet stats to hold 40 requests", func() bool {
		l := getStats(t, a, "").Routes[0].Backends["nats"].Latency
		if l.Count != 40 || l.P99 == nil {
			return false
		}
		fleetP99 = *l.P99
		return true
	})
	aP99 := *getStats(t, a, "?scope=replica").Routes[0].Backends["nats"].Latency.P99
	bP99 := *getStats(t, b, "?scope=replica").Routes[0].Backends["nats"].Latency.P99
	slowMS := float64(slow.Milliseconds())
	if aP99 >= slowMS/3 || bP99 < slowMS*0.9 {
		t.Fatalf("replica p99s: A %g ms, B %g ms; want A fast and B about %g ms", aP99, bP99, slowMS)
	}
	if fleetP99 < slowMS*0.9 {
		t.Errorf("fleet p99 %g ms, want B's bucket (about %g ms); the average of the replicas' would be %g", fleetP99, slowMS, (aP99+bP99)/2)
	}
}

// A replica that stops is dropped from the others' view once not heard
// for 5s, and its traffic with it.
func TestFleetStoppedReplicaDropsOut(t *testing.T) {
	ns := natstest.RunServer(t)
	echo(t, ns, "get", 0)
	a := startGateway(t, ns, fleetConfig("a", "get", ""))
	b := startGateway(t, ns, fleetConfig("b", "get", ""))
	sendGets(t, a, 3)
	waitFor(t, 15*time.Second, "B to see A's requests", func() bool {
		s := getStats(t, b, "")
		return s.Replicas == 2 && s.Routes[0].Requests == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "B to drop A", func() bool {
		s := getStats(t, b, "")
		return s.Replicas == 1 && s.Routes[0].Requests == 0
	})
	if st := getFleet(t, b); len(st.Replicas) != 1 || st.Replicas[0].ID != "b" {
		t.Errorf("/admin/fleet replicas %+v, want only b", st.Replicas)
	}
	if got := testutil.ToFloat64(b.metrics.FleetReplicas); got != 1 {
		t.Errorf("natsgate_fleet_replicas on B = %g, want 1", got)
	}
}

// /admin/fleet names the replica whose route config differs from the
// majority's, and the one that applies a different stage.
func TestFleetDrift(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t).URL
	body := func(id, timeout string) string {
		return fmt.Sprintf(`
fleet: {replica_id: %s}
upstreams:
  old: {url: %q}
routes:
  - name: get
    method: GET
    path: /get
    upstream: old
    cutover: nats
    nats: {subject: get, timeout: %s}
`, id, legacy, timeout)
	}
	a := startGateway(t, ns, body("a", "5s"))
	b := startGateway(t, ns, body("b", "5s"))
	_ = startGateway(t, ns, body("c", "2s"))

	var st FleetStatus
	waitFor(t, 15*time.Second, "a to see c drift in config", func() bool {
		st = getFleet(t, a)
		return len(st.Replicas) == 3 && len(st.Drift) == 1 && st.Drift[0].ID == "c"
	})
	if !strings.Contains(st.Drift[0].Reason, "config hash") {
		t.Errorf("c's drift reason %q, want it to name the config hash", st.Drift[0].Reason)
	}
	hashes := map[string]string{}
	for _, r := range st.Replicas {
		hashes[r.ID] = r.ConfigHash
		if r.Leader != (r.ID == st.Leader) || r.Version == "" || r.Stages["get"] != "nats" || r.LastSeen.IsZero() {
			t.Errorf("replica %+v: want leader only if it is %q, a version, stage nats, a last_seen", r, st.Leader)
		}
	}
	if hashes["a"] != hashes["b"] || hashes["a"] == hashes["c"] || hashes["a"] == "" {
		t.Errorf("config hashes %v: want a = b != c", hashes)
	}

	// b applies legacy where the others apply nats (as a replica whose
	// cutover watcher missed an override would).
	bh := b.table.Load().handlers["get"]
	bh.applyStage(b.Server, &Override{Cutover: routes.Legacy})
	waitFor(t, 15*time.Second, "a to see b drift in stage", func() bool {
		st = getFleet(t, a)
		for _, d := range st.Drift {
			if d.ID == "b" {
				return strings.Contains(d.Reason, "route get: stage legacy, the majority's is nats")
			}
		}
		return false
	})
	if len(st.Drift) != 2 {
		t.Errorf("drift %+v, want b (stage) and c (config)", st.Drift)
	}
}

// With fleet.enabled false a replica publishes nothing and /admin/stats is
// its own. A replica with the fleet on, on another prefix, shows that the
// test would see messages if there were any.
func TestFleetDisabledPublishesNothing(t *testing.T) {
	ns := natstest.RunServer(t)
	echo(t, ns, "get", 0)
	watch := natstest.Connect(t, ns)
	var off, control atomic.Int64
	for subj, n := range map[string]*atomic.Int64{"natsgate.fleet.>": &off, "control.fleet.>": &control} {
		sub, err := watch.Subscribe(subj, func(*nats.Msg) { n.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, ns, `
fleet: {enabled: false, replica_id: off}
routes:
  - name: get
    method: GET
    path: /get
    nats: {subject: get}
`)
	startGateway(t, ns, `
fleet: {replica_id: control, subject_prefix: control.fleet}
routes:
  - name: get
    method: GET
    path: /get
    nats: {subject: get}
`)
	sendGets(t, gw, 5)
	waitFor(t, 15*time.Second, "the control replica's third message", func() bool { return control.Load() >= 3 })
	_ = watch.Flush()
	if n := off.Load(); n != 0 {
		t.Errorf("%d messages on natsgate.fleet.> from a replica with fleet.enabled false, want none", n)
	}
	if s := getStats(t, gw, ""); s.Scope != "replica" || s.Replicas != 1 || s.Routes[0].Requests != 5 {
		t.Errorf("/admin/stats with the fleet off: scope %q, %d replicas, %d requests; want replica, 1, 5", s.Scope, s.Replicas, s.Routes[0].Requests)
	}
	if st := getFleet(t, gw); len(st.Replicas) != 1 || st.Replicas[0].ID != "off" || len(st.Drift) != 0 {
		t.Errorf("/admin/fleet with the fleet off: %+v, want this replica alone", st)
	}
}

// hostileFleetMessages are stats messages no replica sends: each must be
// ignored whole.
var hostileFleetMessages = []struct{ name, subjectID, data string }{
	{"not JSON", "x", `not json at all`},
	{"empty", "x", ``},
	{"JSON null", "x", `null`},
	{"an array", "x", `[1,2,3]`},
	{"no id", "x", `{"seconds":10,"routes":[]}`},
	{"id of another subject", "x", `{"id":"y","seconds":10,"routes":[{"name":"get","stage":"nats","req":[5,0,0]}]}`},
	{"id with a dot", "x", `{"id":"x.y","seconds":10,"routes":[]}`},
	{"zero seconds", "x", `{"id":"x","seconds":0,"routes":[{"name":"get","stage":"nats","req":[5,0,0]}]}`},
	{"negative count", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":[-5,0,0]}]}`},
	{"huge count", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":[99999999999999999,0,0]}]}`},
	{"count not a number", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":["5"]}]}`},
	{"too many backends", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":[1,1,1,1]}]}`},
	{"more errors than requests", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":[1,0,0],"err":[2,0,0]}]}`},
	{"bucket out of range", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":[1,0,0],"lat":{"edge_nats":[240,1]}}]}`},
	{"odd pairs", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":[1,0,0],"lat":{"edge_nats":[3]}}]}`},
	{"unknown series", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":[1,0,0],"lat":{"edge_x":[3,1]}}]}`},
	{"unknown stage", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"moon","req":[1,0,0]}]}`},
	{"a route twice", "x", `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":[1,0,0]},{"name":"get","stage":"nats","req":[1,0,0]}]}`},
	{"route without a name", "x", `{"id":"x","seconds":10,"routes":[{"stage":"nats","req":[1,0,0]}]}`},
	{"too large", "x", `{"id":"x","seconds":10,"version":"` + strings.Repeat("v", fleetMaxMessage) + `","routes":[]}`},
	{"deep nesting", "x", strings.Repeat("[", 100000) + strings.Repeat("]", 100000)},
	{"closed routes without a slot", "x", `{"id":"x","seconds":10,"routes":[],"closed":[{"name":"get","stage":"nats","req":[1,0,0]}]}`},
	{"negative slot", "x", `{"id":"x","seconds":10,"routes":[],"slot":-3,"closed":[]}`},
	{"closed route twice", "x", `{"id":"x","seconds":10,"routes":[],"slot":9,"closed":[{"name":"get","stage":"nats","req":[1,0,0]},{"name":"get","stage":"nats","req":[1,0,0]}]}`},
}

// deflated compresses a message as a replica sends it.
func deflated(t testing.TB, data []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestSpeed)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A replica ignores every message it cannot decode: it neither counts it
// nor lists its sender, and goes on serving. A good message after them
// (sent on the same connection, so delivered after them) is counted.
func TestFleetIgnoresHostileMessages(t *testing.T) {
	ns := natstest.RunServer(t)
	echo(t, ns, "get", 0)
	b := startGateway(t, ns, fleetConfig("b", "get", ""))
	waitFleetListening(t, b) // the good message is sent once
	pub := natstest.Connect(t, ns)
	for _, m := range hostileFleetMessages {
		if err := pub.Publish("natsgate.fleet.stats."+m.subjectID, []byte(m.data)); err != nil && len(m.data) < fleetMaxMessage {
			t.Fatalf("%s: %v", m.name, err)
		}
	}
	good := `{"id":"good","version":"v1","config_hash":"h","seconds":30,"routes":[{"name":"get","stage":"nats","req":[7,0,0],"lat":{"edge_nats":[40,7]}}]}`
	// Compressed ones: a bomb that inflates past the limit (a valid message
	// padded with spaces), bytes that are not deflate, an unknown encoding.
	bomb := `{"id":"x","seconds":10,"routes":[{"name":"get","stage":"nats","req":[5,0,0]}]}` + strings.Repeat(" ", 64*fleetMaxMessage)
	for _, m := range []struct {
		enc  string
		data []byte
	}{
		{"deflate", deflated(t, []byte(bomb))},
		{"deflate", []byte("not deflate at all")},
		{"gzip", deflated(t, []byte(strings.Replace(good, "good", "x", 1)))},
	} {
		msg := &nats.Msg{Subject: "natsgate.fleet.stats.x", Header: nats.Header{"Content-Encoding": {m.enc}}, Data: m.data}
		if err := pub.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.PublishMsg(&nats.Msg{Subject: "natsgate.fleet.stats.good", Header: nats.Header{"Content-Encoding": {"deflate"}}, Data: deflated(t, []byte(good))}); err != nil {
		t.Fatal(err)
	}
	var snap StatsSnapshot
	waitFor(t, 15*time.Second, "the good message to be counted", func() bool {
		snap = getStats(t, b, "")
		return snap.Replicas == 2
	})
	if r := snap.Routes[0]; r.Requests != 7 || r.Backends["nats"].Latency.Count != 7 {
		t.Errorf("fleet view of get: %d requests, %d latencies; want only the good message's 7", r.Requests, r.Backends["nats"].Latency.Count)
	}
	st := getFleet(t, b)
	if len(st.Replicas) != 2 || st.Replicas[1].ID != "good" {
		t.Errorf("replicas %+v, want b and good", st.Replicas)
	}
	sendGets(t, b, 1) // still serving
}

// TestDecodeFleetMessage refuses each hostile message and reads back what
// a replica encodes.
func TestDecodeFleetMessage(t *testing.T) {
	for _, m := range hostileFleetMessages {
		t.Run(m.name, func(t *testing.T) {
			msg, err := decodeFleetMessage([]byte(m.data))
			if err == nil && msg.ID == m.subjectID {
				t.Fatalf("accepted: %+v", msg)
			}
		})
	}
	s, _ := newTestStats()
	s.request("get", &exchange{backend: "nats", status: 503, nats: time.Millisecond, worker: 500 * time.Microsecond, upstream: -1}, 2*time.Millisecond)
	w := s.window("get")
	b, err := json.Marshal(&fleetMessage{ID: "a", Version: "v", ConfigHash: "h", Seconds: w.secs, Routes: []fleetRoute{encodeRoute("get", "nats", w)}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := decodeFleetMessage(b)
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	var back routeWindow
	back.add(&msg.Routes[0], msg.Seconds)
	if back.req != w.req || back.errs != w.errs || back.lat != w.lat {
		t.Errorf("round trip of %s lost counts", b)
	}
}

// FuzzDecodeFleetMessage: no input crashes the decoder, and whatever it
// accepts merges into a window without going out of its buckets.
func FuzzDecodeFleetMessage(f *testing.F) {
	for _, m := range hostileFleetMessages {
		if len(m.data) < 4096 {
			f.Add([]byte(m.data))
		}
	}
	f.Add([]byte(`{"id":"good","seconds":30,"routes":[{"name":"get","stage":"canary","req":[7,1,0],"err":[1,0,0],"shadow":[1,2,3,4],"lat":{"edge_nats":[40,7],"worker":[0,1,239,2]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := decodeFleetMessage(data)
		if err != nil {
			return
		}
		var w routeWindow
		for i := range msg.Routes {
			w.add(&msg.Routes[i], msg.Seconds)
		}
		_ = w.render("get")
	})
}

// TestFleetMessageSize measures the message of a replica with 36 busy
// routes (latencies spread over a few octaves on three series) and keeps
// it well under what a receiver accepts.
func TestFleetMessageSize(t *testing.T) {
	s, _ := newTestStats()
	var table routes.Table
	for r := range 36 {
		name := fmt.Sprintf("route-%02d", r)
		table.Routes = append(table.Routes, &routes.Route{Name: name, Cutover: routes.NATS})
		for i := range 3000 {
			// 0.5ms to 4ms edge, a hop a little shorter, a worker shorter yet.
			d := 500*time.Microsecond + time.Duration(r)*40*time.Microsecond + time.Duration((i*7+r)%97)*36*time.Microsecond
			st := 200
			if i%500 == 0 {
				st = 502
			}
			s.request(name, &exchange{backend: "nats", status: st, nats: d * 8 / 10, worker: d / 2, upstream: -1}, d)
		}
	}
	m := &fleetMessage{ID: "web-3:8080", Version: "(devel)", ConfigHash: routeTableHash(&table), Seconds: 60}
	idle := &fleetMessage{ID: "web-3:8080", Version: "(devel)", ConfigHash: m.ConfigHash, Seconds: 60}
	for _, rt := range table.Routes {
		m.Routes = append(m.Routes, encodeRoute(rt.Name, "nats", s.window(rt.Name)))
		idle.Routes = append(idle.Routes, encodeRoute(rt.Name, "nats", &routeWindow{}))
	}
	busy, _ := json.Marshal(m)
	quiet, _ := json.Marshal(idle)
	sent := len(deflated(t, busy))
	t.Logf("36 routes: %d bytes busy (%d sent, deflated), %d bytes idle (%d sent)", len(busy), sent, len(quiet), len(deflated(t, quiet)))
	if len(busy) > fleetMaxMessage/4 {
		t.Errorf("a busy message is %d bytes, want well under the %d a replica accepts", len(busy), fleetMaxMessage)
	}
	if sent > 8<<10 {
		t.Errorf("a busy message is sent as %d bytes, want a few KiB", sent)
	}
	if _, err := decodeFleetMessage(busy); err != nil {
		t.Errorf("a replica refuses the busy message: %v", err)
	}
}
