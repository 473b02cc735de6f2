package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// microWorker runs a NATS micro service, name and version, on a
// connection of its own, with endpoints by name: subject and metadata.
func microWorker(t *testing.T, ns *server.Server, name, version string, endpoints ...microEndpoint) {
	t.Helper()
	nc := natstest.Connect(t, ns)
	svc, err := micro.AddService(nc, micro.Config{Name: name, Version: version, QueueGroup: "workers"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	for _, e := range endpoints {
		err := svc.AddEndpoint(e.name, micro.HandlerFunc(func(r micro.Request) { _ = r.Respond([]byte(`{"ok":true}`)) }),
			micro.WithEndpointSubject(e.subject), micro.WithEndpointMetadata(e.metadata))
		if err != nil {
			t.Fatal(err)
		}
	}
	// The endpoints' subscriptions reach the server asynchronously; a
	// look sent before they land would not see this worker.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

type microEndpoint struct {
	name, subject string
	metadata      map[string]string
}

// discoveryConfig has a route served by micro services (get-user), one
// served by a plain subscriber (plain), one nobody serves (nobody), and a
// publish route nobody listens to (events).
func discoveryConfig(legacyURL string) string {
	return fmt.Sprintf(`
log: {format: json, level: info}
admin: {token: secret}
discovery: {interval: 1s}
upstreams:
  old: {url: %q}
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get"}
    upstream: old
  - name: plain
    method: GET
    path: /plain
    nats: {subject: plain.get}
    upstream: old
  - name: nobody
    method: GET
    path: /reports/{id}
    nats: {subject: "reports.{id}.get"}
    upstream: old
  - name: events
    method: POST
    path: /events
    nats: {subject: events.new, pattern: publish}
    upstream: old
`, legacyURL)
}

// routesStatus reads GET /admin/routes.
func routesStatus(t *testing.T, gw *testGateway) map[string]RouteStatus {
	t.Helper()
	resp, body := do(t, "GET", gw.AdminURL+"/admin/routes", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /admin/routes: %d %s", resp.StatusCode, body)
	}
	var out struct{ Routes []RouteStatus }
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	m := map[string]RouteStatus{}
	for _, r := range out.Routes {
		m[r.Name] = r
	}
	return m
}

// waitResponders polls /admin/routes until route shows count responders.
func waitResponders(t *testing.T, gw *testGateway, route string, count int) RouteStatus {
	t.Helper()
	var rs RouteStatus
	natstest.Eventually(t, 15*time.Second, fmt.Sprintf("%s shows %d responders", route, count), func() bool {
		rs = routesStatus(t, gw)[route]
		return rs.Responders != nil && rs.Responders.Count == count
	})
	return rs
}

func TestDiscoveryReportsMicroResponders(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	microWorker(t, ns, "users", "1.0.0", microEndpoint{name: "get", subject: "users.*.get"})
	microWorker(t, ns, "users", "1.0.0", microEndpoint{name: "get", subject: "users.*.get"})
	microWorker(t, ns, "catchall", "2.1.0", microEndpoint{name: "all", subject: "users.>"},
		microEndpoint{name: "one", subject: "users.7.get"}) // covers one rendering only: not a responder
	microWorker(t, ns, "other", "1.0.0", microEndpoint{name: "x", subject: "orders.*.get"})
	respond(t, natstest.Connect(t, ns), "plain.get", func(*nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("hi")} })
	gw := startGateway(t, ns, discoveryConfig(legacy.URL))

	rs := waitResponders(t, gw, "get-user", 3)
	r := rs.Responders
	if r.Kind != "micro" || r.CheckedAt.IsZero() || time.Since(r.CheckedAt) > time.Minute {
		t.Errorf("responders kind %q checked at %v, want micro, just now", r.Kind, r.CheckedAt)
	}
	want := []ResponderService{
		{Name: "catchall", Version: "2.1.0", Instances: 1, Endpoint: "all", Subject: "users.>"},
		{Name: "users", Version: "1.0.0", Instances: 2, Endpoint: "get", Subject: "users.*.get"},
	}
	if fmt.Sprint(r.Services) != fmt.Sprint(want) {
		t.Errorf("services %+v, want %+v", r.Services, want)
	}
	all := routesStatus(t, gw)
	for _, name := range []string{"plain", "nobody", "events"} {
		if r := all[name].Responders; r == nil || r.Count != 0 || len(r.Services) != 0 || r.Kind != "micro" {
			t.Errorf("%s: responders %+v, want a completed look with count 0", name, r)
		}
	}
	if got := testutil.ToFloat64(gw.metrics.RouteResponders.WithLabelValues("get-user")); got != 3 {
		t.Errorf("natsgate_route_responders{route=get-user} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(gw.metrics.RouteResponders.WithLabelValues("nobody")); got != 0 {
		t.Errorf("natsgate_route_responders{route=nobody} = %v, want 0", got)
	}

	// A worker that joins is seen at the next look.
	microWorker(t, ns, "late", "0.1.0", microEndpoint{name: "r", subject: "reports.*.get"})
	waitResponders(t, gw, "nobody", 1)
}

func TestDiscoveryOffShowsNoResponders(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	microWorker(t, ns, "users", "1.0.0", microEndpoint{name: "get", subject: "users.*.get"})
	gw := startGateway(t, ns, strings.Replace(discoveryConfig(legacy.URL), "discovery: {interval: 1s}", "discovery: {enabled: false}", 1))
	if gw.discovery != nil {
		t.Fatal("discovery runs with discovery.enabled false")
	}
	if r := routesStatus(t, gw)["get-user"].Responders; r != nil {
		t.Errorf("discovery off, responders %+v, want none", r)
	}
	if resp, body := putCutover(t, gw.AdminURL, "nobody", `{"cutover":"nats"}`); resp.StatusCode != 200 {
		t.Errorf("discovery off, PUT nats: %d %s, want 200", resp.StatusCode, body)
	}
}

func TestCutoverRefusedWithoutResponders(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	microWorker(t, ns, "users", "1.0.0", microEndpoint{name: "get", subject: "users.*.get"})
	logs := &syncBuffer{}
	gw := startGatewayLogging(t, ns, discoveryConfig(legacy.URL), logs)
	waitResponders(t, gw, "get-user", 1)
	waitResponders(t, gw, "nobody", 0)

	tests := []struct {
		name, route, body string
		status            int
		forced            bool
	}{
		{"canary, nobody serves", "nobody", `{"cutover":"canary","canary_percent":10}`, 409, false},
		{"nats, nobody serves", "nobody", `{"cutover":"nats"}`, 409, false},
		{"nats, only a plain subscriber", "plain", `{"cutover":"nats"}`, 409, false},
		{"shadow needs no responder", "nobody", `{"cutover":"shadow"}`, 200, false},
		{"legacy needs no responder", "nobody", `{"cutover":"legacy"}`, 200, false},
		{"nats, forced", "nobody", `{"cutover":"nats","force":true}`, 200, true},
		{"canary, served", "get-user", `{"cutover":"canary","canary_percent":10}`, 200, false},
		{"nats, served, force changes nothing", "get-user", `{"cutover":"nats","force":true}`, 200, false},
		{"a publish route needs no responder", "events", `{"cutover":"nats"}`, 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("PUT", gw.AdminURL+"/admin/routes/"+tt.route+"/cutover", strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer secret")
			req.Header.Set("X-Request-Id", "req-"+strings.ReplaceAll(tt.name, " ", "-"))
			req.Header.Set("X-Natsgate-Actor", "ops "+tt.name)
			resp, body := send(t, req)
			if resp.StatusCode != tt.status {
				t.Fatalf("PUT %s: %d %s, want %d", tt.body, resp.StatusCode, body, tt.status)
			}
			if tt.status == 409 {
				var p problem
				if err := json.Unmarshal([]byte(body), &p); err != nil {
					t.Fatal(err)
				}
				subj := routesStatus(t, gw)[tt.route].Subject
				if p.Kind != "no_responders" || p.Route == nil || *p.Route != tt.route || p.RequestID != req.Header.Get("X-Request-Id") ||
					!strings.Contains(p.Detail, subj) || !strings.Contains(p.Detail, `"force": true`) ||
					resp.Header.Get("Content-Type") != "application/problem+json" {
					t.Errorf("problem %s, want kind no_responders naming the route, the request id and the subject %s", body, subj)
				}
				return
			}
			line := auditLine(t, logs, "ops "+tt.name)
			if line["forced"] != tt.forced {
				t.Errorf("audit line %v: forced %v, want %v", line, line["forced"], tt.forced)
			}
		})
	}
}

// auditLine finds the cutover audit line by actor in the JSON log.
func auditLine(t *testing.T, logs *syncBuffer, by string) map[string]any {
	t.Helper()
	for _, l := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["by"] == by && strings.HasPrefix(fmt.Sprint(m["msg"]), "audit:") {
			return m
		}
	}
	t.Fatalf("no audit line by %q in the log:\n%s", by, logs.String())
	return nil
}

func TestRolloutStartRefusedWithoutResponders(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := jsonLegacy(t)
	rolloutWorker(t, ns, nil) // a plain subscriber: discovery cannot see it
	logs := &syncBuffer{}
	cfg := "log: {format: json, level: info}\ndiscovery: {interval: 1s}\n" + rolloutConfig("a", legacy.URL, "      steps: [{stage: shadow}, {stage: nats}]")
	gw := startGatewayLogging(t, ns, cfg, logs)
	waitResponders(t, gw, "get", 0)

	put := func(body string) (int, string) {
		req, _ := http.NewRequest("PUT", gw.AdminURL+"/admin/routes/get/rollout", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+rolloutToken)
		req.Header.Set("X-Natsgate-Actor", "ops")
		resp, b := send(t, req)
		return resp.StatusCode, b
	}
	code, body := put(`{"action":"start"}`)
	if code != 409 || !strings.Contains(body, `"kind":"no_responders"`) || !strings.Contains(body, "get") {
		t.Fatalf("start on a route nobody is seen serving: %d %s, want 409 no_responders", code, body)
	}
	if code, body := put(`{"action":"start","force":true}`); code != 200 || !strings.Contains(body, `"state": "running"`) {
		t.Fatalf("start forced: %d %s, want 200 running", code, body)
	}
	natstest.Eventually(t, 15*time.Second, "a forced audit line", func() bool {
		return strings.Contains(logs.String(), `"msg":"audit: rollout start"`) && strings.Contains(logs.String(), `"forced":true`)
	})
	// Pause and abort are never refused.
	if code, body := put(`{"action":"abort"}`); code != 200 {
		t.Fatalf("abort: %d %s, want 200", code, body)
	}
}

func TestDiscoveredClaimsNotRouted(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	microWorker(t, ns, "users", "1.0.0",
		microEndpoint{name: "get", subject: "users.*.get", metadata: map[string]string{ClaimRoute: "get-user"}},                       // routed
		microEndpoint{name: "list", subject: "users.list", metadata: map[string]string{ClaimMethod: "get", ClaimPath: "/users/{id}"}}) // routed by method and path
	for range 2 {
		microWorker(t, ns, "orders", "3.0.0",
			microEndpoint{name: "get-order", subject: "orders.*.get", metadata: map[string]string{ClaimMethod: "GET", ClaimPath: "/orders/{id}"}},
			microEndpoint{name: "cancel", subject: "orders.cancel", metadata: map[string]string{ClaimRoute: "cancel-order"}},
			microEndpoint{name: "quiet", subject: "orders.quiet"}) // claims nothing
	}
	gw := startGateway(t, ns, discoveryConfig(legacy.URL))

	type listing struct {
		Kind      string
		Enabled   bool
		CheckedAt *time.Time `json:"checked_at"`
		Claims    []DiscoveredClaim
	}
	var got listing
	natstest.Eventually(t, 15*time.Second, "the claims listed", func() bool {
		resp, body := do(t, "GET", gw.AdminURL+"/admin/discovered", nil, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /admin/discovered: %d %s", resp.StatusCode, body)
		}
		got = listing{}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		return len(got.Claims) == 2 && got.Claims[0].Instances == 2 && got.Claims[1].Instances == 2
	})
	if got.Kind != "micro" || !got.Enabled || got.CheckedAt == nil {
		t.Errorf("listing kind %q enabled %v checked_at %v, want micro, true, set", got.Kind, got.Enabled, got.CheckedAt)
	}
	cancel, get := got.Claims[0], got.Claims[1]
	if cancel.Endpoint != "cancel" || cancel.Route != "cancel-order" || cancel.Service != "orders" || cancel.Version != "3.0.0" ||
		!strings.Contains(cancel.Reason, "cancel-order") ||
		cancel.Suggested.Name != "cancel-order" || cancel.Suggested.NATS.Subject != "orders.cancel" || cancel.Suggested.NATS.Pattern != "request" {
		t.Errorf("cancel claim %+v", cancel)
	}
	if get.Endpoint != "get-order" || get.Method != "GET" || get.Path != "/orders/{id}" || !strings.Contains(get.Reason, "GET /orders/{id}") ||
		get.Suggested.Method != "GET" || get.Suggested.Path != "/orders/{id}" || get.Suggested.NATS.Subject != "orders.{id}.get" || get.Suggested.Note != "" {
		t.Errorf("get-order claim %+v", get)
	}
	// The suggestion is a route the config accepts and that the claiming
	// endpoint covers.
	sug := get.Suggested
	cfg := discoveryConfig(legacy.URL) + fmt.Sprintf("  - {name: %s, method: %s, path: %q, nats: {subject: %q, pattern: %s}}\n",
		sug.Name, sug.Method, sug.Path, sug.NATS.Subject, sug.NATS.Pattern)
	gw2 := startGateway(t, ns, cfg)
	waitResponders(t, gw2, "get-order", 2)
}

// A worker started after the last look is not refused until the next one:
// a refusal looks again first.
func TestCutoverLooksAgainBeforeRefusing(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	logs := &syncBuffer{}
	gw := startGatewayLogging(t, ns, strings.Replace(discoveryConfig(legacy.URL), "interval: 1s", "interval: 1h", 1), logs)
	waitResponders(t, gw, "nobody", 0)
	microWorker(t, ns, "reports", "1.0.0", microEndpoint{name: "get", subject: "reports.*.get"})
	req, _ := http.NewRequest("PUT", gw.AdminURL+"/admin/routes/nobody/cutover", strings.NewReader(`{"cutover":"nats"}`))
	req.Header.Set("Authorization", "Bearer secret")
	req.Header.Set("X-Natsgate-Actor", "ops")
	if resp, body := send(t, req); resp.StatusCode != 200 {
		t.Fatalf("PUT nats with a worker started since the last look: %d %s, want 200", resp.StatusCode, body)
	}
	if line := auditLine(t, logs, "ops"); line["forced"] != false {
		t.Errorf("audit line %v, want forced false", line)
	}
	if r := routesStatus(t, gw)["nobody"].Responders; r == nil || r.Count != 1 {
		t.Errorf("responders after the fresh look: %+v, want count 1", r)
	}
}
