package gateway

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
)

// watchWait bounds every wait on the cutover watcher. Its checks run every
// couple of seconds and its retries back off to 5s, so this only catches a
// watcher that never notices.
const watchWait = 20 * time.Second

// testBucket opens the gateway's cutover bucket from a client of the
// test's own, as an operator with the nats CLI would.
func testBucket(t *testing.T, ns *server.Server) (jetstream.JetStream, func() jetstream.KeyValue) {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	return js, func() jetstream.KeyValue {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, routes.DefaultCutoverBucket)
		if err != nil {
			t.Fatalf("opening the bucket: %v", err)
		}
		return kv
	}
}

// stageOf is what the gateway serves a route at now.
func stageOf(gw *testGateway, route string) RouteStatus {
	for _, rs := range gw.Routes() {
		if rs.Name == route {
			return rs
		}
	}
	return RouteStatus{}
}

// cutoverWritable is cutover_writable from GET /admin/routes.
func cutoverWritable(t *testing.T, gw *testGateway) bool {
	t.Helper()
	resp, body := do(t, "GET", gw.AdminURL+"/admin/routes", nil, nil)
	var v struct {
		Writable *bool `json:"cutover_writable"`
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &v) != nil || v.Writable == nil {
		t.Fatalf("GET /admin/routes: %d %s", resp.StatusCode, body)
	}
	return *v.Writable
}

func kvPut(t *testing.T, kv jetstream.KeyValue, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
		t.Fatalf("kv put %s: %v", key, err)
	}
}

// TestCutoverBucketDeletedOrRecreatedIsWatchedAgain deletes the bucket
// under a running gateway twice: once recreated at once by an operator
// (empty, so the override that vanished means the config's stage again,
// and a value written there applies), once left deleted (the gateway
// creates it again). Each time a PUT afterwards is stored and applied.
func TestCutoverBucketDeletedOrRecreatedIsWatchedAgain(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	natsWorker(t, ns)
	log := &syncBuffer{}
	gw := startGatewayLogging(t, ns, cutoverConfig(legacy.URL, "legacy", ""), log)
	js, bucket := testBucket(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if resp, body := putCutover(t, gw.AdminURL, "get-user", `{"cutover":"nats"}`); resp.StatusCode != 200 {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	// Deleted and created again empty, as `nats kv rm` then `nats kv add` do.
	if err := js.DeleteKeyValue(ctx, routes.DefaultCutoverBucket); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: routes.DefaultCutoverBucket, History: 16}); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, watchWait, "the gateway to drop the override that vanished with the old bucket", func() bool {
		st := stageOf(gw, "get-user")
		return st.Stage == routes.Legacy && !st.Overridden
	})
	if l := log.String(); !strings.Contains(l, "deleted and created again") {
		t.Fatalf("nothing logged about the recreated bucket:\n%s", l)
	}
	kvPut(t, bucket(), "get-user", `{"cutover":"canary","canary_percent":40,"by":"ops"}`)
	natstest.Eventually(t, watchWait, "a value written into the new bucket to apply", func() bool {
		st := stageOf(gw, "get-user")
		return st.Stage == routes.Canary && st.CanaryPercent == 40
	})
	if resp, body := putCutover(t, gw.AdminURL, "get-user", `{"cutover":"nats"}`); resp.StatusCode != 200 {
		t.Fatalf("PUT after the bucket was recreated: %d %s", resp.StatusCode, body)
	}
	if _, got := backendOf(t, gw.URL+"/users/1", nil); got != "nats" {
		t.Fatalf("after the PUT the route is served by %s, want nats", got)
	}

	// Deleted and left so: the gateway creates it again, and the override
	// that went with it no longer applies.
	if err := js.DeleteKeyValue(ctx, routes.DefaultCutoverBucket); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, watchWait, "the gateway to recreate the bucket and drop the vanished override", func() bool {
		kv, err := js.KeyValue(ctx, routes.DefaultCutoverBucket)
		st := stageOf(gw, "get-user")
		return err == nil && kv != nil && st.Stage == routes.Legacy && !st.Overridden
	})
	natstest.Eventually(t, watchWait, "a PUT to succeed on the recreated bucket", func() bool {
		resp, _ := putCutover(t, gw.AdminURL, "get-user", `{"cutover":"canary","canary_percent":25}`)
		return resp.StatusCode == 200
	})
	if l := log.String(); !strings.Contains(l, "the bucket was deleted\"") {
		t.Fatalf("nothing logged about the deleted bucket:\n%s", l)
	}
	e, err := bucket().Get(ctx, "get-user")
	if err != nil || !strings.Contains(string(e.Value()), `"canary_percent":25`) {
		t.Fatalf("the PUT is not in the bucket: %v", err)
	}
	if st := stageOf(gw, "get-user"); st.Stage != routes.Canary || st.CanaryPercent != 25 || !cutoverWritable(t, gw) {
		t.Fatalf("after the PUT: stage %s %d%%, writable %v; want canary 25%%, writable", st.Stage, st.CanaryPercent, cutoverWritable(t, gw))
	}
}

// TestCutoverWatchWaitsForJetStream starts a gateway on a nats-server
// without JetStream, then restarts that server on the same port with
// JetStream: until then the admin API says it cannot store overrides
// (cutover_writable false, PUT 503), after it the watcher opens the
// bucket by itself and admin writes work.
func TestCutoverWatchWaitsForJetStream(t *testing.T) {
	opts := natstest.Options(t)
	opts.JetStream = false
	plain := natstest.RunServerWith(t, opts)
	legacy := startLegacy(t)
	gw := startGateway(t, plain, cutoverConfig(legacy.URL, "legacy", ""))

	if cutoverWritable(t, gw) {
		t.Fatal("cutover_writable is true without JetStream")
	}
	resp, body := putCutover(t, gw.AdminURL, "get-user", `{"cutover":"nats"}`)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, "cutover_store") {
		t.Fatalf("PUT without JetStream: %d %s, want a 503 cutover_store problem", resp.StatusCode, body)
	}

	port := plain.Addr().(*net.TCPAddr).Port
	plain.Shutdown()
	plain.WaitForShutdown()
	opts = natstest.Options(t)
	opts.Port = port
	ns := natstest.RunServerWith(t, opts)
	natsWorker(t, ns)

	natstest.Eventually(t, watchWait, "the watcher to open the bucket once JetStream is there", func() bool {
		return cutoverWritable(t, gw)
	})
	if resp, body := putCutover(t, gw.AdminURL, "get-user", `{"cutover":"nats"}`); resp.StatusCode != 200 {
		t.Fatalf("PUT with JetStream: %d %s", resp.StatusCode, body)
	}
	if _, got := backendOf(t, gw.URL+"/users/1", nil); got != "nats" {
		t.Fatalf("after the PUT the route is served by %s, want nats", got)
	}
	// And the watch is live: a value written by someone else applies.
	_, bucket := testBucket(t, ns)
	kvPut(t, bucket(), "get-user", `{"cutover":"shadow"}`)
	natstest.Eventually(t, watchWait, "a value written into the bucket to apply", func() bool {
		return stageOf(gw, "get-user").Stage == routes.Shadow
	})
}

// TestCutoverBucketValueAcceptedExactlyWhenAdminAccepts writes values
// straight into the bucket, after a good override set through the admin
// API. A value the admin API would refuse means the config's stage, with
// a warning naming the key and why, in the running replica and in one
// started afterwards alike; a value it would accept applies in both.
func TestCutoverBucketValueAcceptedExactlyWhenAdminAccepts(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	natsWorker(t, ns)
	cfg := cutoverConfig(legacy.URL, "legacy", "  - name: only-nats\n    method: GET\n    path: /n\n    nats: {subject: n}\n    cutover: nats\n")
	log := &syncBuffer{}
	a := startGatewayLogging(t, ns, cfg, log)
	_, bucket := testBucket(t, ns)
	kv := bucket()

	cases := []struct {
		name, route, value string
		ok                 bool
		want               RouteStatus // stage, percent, overridden
		mention            string      // in the warning
	}{
		{"canary_percent 500", "get-user", `{"cutover":"canary","canary_percent":500}`, false, RouteStatus{Stage: routes.Legacy}, "canary_percent"},
		{"canary_percent negative", "get-user", `{"cutover":"canary","canary_percent":-1}`, false, RouteStatus{Stage: routes.Legacy}, "canary_percent"},
		{"unknown stage", "get-user", `{"cutover":"blue"}`, false, RouteStatus{Stage: routes.Legacy}, "blue"},
		{"no stage", "get-user", `{"canary_percent":10}`, false, RouteStatus{Stage: routes.Legacy}, "cutover"},
		{"unknown field", "get-user", `{"cutover":"nats","stage":"nats"}`, false, RouteStatus{Stage: routes.Legacy}, "stage"},
		{"not JSON", "get-user", `nats please`, false, RouteStatus{Stage: routes.Legacy}, "invalid character"},
		{"trailing data", "get-user", `{"cutover":"nats"} {"cutover":"legacy"}`, false, RouteStatus{Stage: routes.Legacy}, "after"},
		{"stage the route cannot run", "only-nats", `{"cutover":"legacy"}`, false, RouteStatus{Stage: routes.NATS}, "upstream"},
		{"nats", "get-user", `{"cutover":"nats"}`, true, RouteStatus{Stage: routes.NATS, Overridden: true}, ""},
		{"canary 100", "get-user", `{"cutover":"canary","canary_percent":100}`, true, RouteStatus{Stage: routes.Canary, CanaryPercent: 100, Overridden: true}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			good := `{"cutover":"canary","canary_percent":20}`
			if tc.route == "only-nats" {
				good = `{"cutover":"nats","canary_percent":30}`
			}
			if resp, body := putCutover(t, a.AdminURL, tc.route, good); resp.StatusCode != 200 {
				t.Fatalf("PUT the good override: %d %s", resp.StatusCode, body)
			}
			logged := len(log.String())
			kvPut(t, kv, tc.route, tc.value)
			same := func(st RouteStatus) bool {
				return st.Stage == tc.want.Stage && st.CanaryPercent == tc.want.CanaryPercent && st.Overridden == tc.want.Overridden
			}
			natstest.Eventually(t, watchWait, "the running replica to serve "+string(tc.want.Stage), func() bool {
				return same(stageOf(a, tc.route))
			})
			if !tc.ok {
				natstest.Eventually(t, watchWait, "a warning naming the key and why", func() bool {
					for _, line := range strings.Split(log.String()[logged:], "\n") {
						if strings.Contains(line, "WARN") && strings.Contains(line, tc.route) && strings.Contains(line, tc.mention) {
							return true
						}
					}
					return false
				})
			}
			b := startGateway(t, ns, cfg)
			if got, want := stageOf(b, tc.route), stageOf(a, tc.route); !same(got) {
				t.Fatalf("a fresh replica serves %s %d%% (overridden %v), the running one %s %d%% (overridden %v)",
					got.Stage, got.CanaryPercent, got.Overridden, want.Stage, want.CanaryPercent, want.Overridden)
			}
			status := 400
			if tc.ok {
				status = 200
			}
			if resp, body := putCutover(t, a.AdminURL, tc.route, tc.value); resp.StatusCode != status {
				t.Fatalf("the admin API answers %d %s to the same value; the bucket's rule is %d", resp.StatusCode, body, status)
			}
		})
	}
}
