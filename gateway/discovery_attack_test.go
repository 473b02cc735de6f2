package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// While the gateway's NATS connection is down a look cannot ask anyone:
// the publish of $SRV.INFO only fills the reconnect buffer. Such a look
// must keep the last result, as docs/migration.md says, and not report every
// route as served by nobody.
func TestDiscoveryKeepsLastResultWhileNATSDown(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	microWorker(t, ns, "users", "1.0.0", microEndpoint{name: "get", subject: "users.*.get"})
	logs := &syncBuffer{}
	gw := startGatewayLogging(t, ns, discoveryConfig(legacy.URL), logs)
	before := waitResponders(t, gw, "get-user", 1)

	ns.Shutdown()
	ns.WaitForShutdown()
	natstest.Eventually(t, 10*time.Second, "the gateway sees NATS down", func() bool { return !gw.conn.nc.IsConnected() })
	// A look has run since (the interval is 1s): it kept the result or
	// replaced it.
	natstest.Eventually(t, 15*time.Second, "a look while NATS is down", func() bool {
		return strings.Contains(logs.String(), "keeping the last result") ||
			!routesStatus(t, gw)["get-user"].Responders.CheckedAt.Equal(before.Responders.CheckedAt)
	})
	r := routesStatus(t, gw)["get-user"].Responders
	if r == nil || r.Count != 1 || !r.CheckedAt.Equal(before.Responders.CheckedAt) {
		t.Errorf("NATS down: responders %+v, want the last look's (count 1 at %v)", r, before.Responders.CheckedAt)
	}
	if got := testutil.ToFloat64(gw.metrics.RouteResponders.WithLabelValues("get-user")); got != 1 {
		t.Errorf("NATS down: natsgate_route_responders{route=get-user} = %v, want the last look's 1", got)
	}
}

// A claim's metadata is whatever a service wrote: a suggested route entry
// built from it either passes the config check or its note says it does
// not, so no one pastes an entry that breaks the config unwarned.
func TestDiscoveredSuggestionValidatesOrSaysWhy(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	microWorker(t, ns, "hostile", "1.0.0",
		microEndpoint{name: "badname", subject: "h.badname", metadata: map[string]string{ClaimRoute: "bad name!"}},
		microEndpoint{name: "badpath", subject: "h.badpath", metadata: map[string]string{ClaimMethod: "get", ClaimPath: "no-slash"}},
		microEndpoint{name: "badmethod", subject: "h.badmethod", metadata: map[string]string{ClaimMethod: "fetch", ClaimPath: "/h/m"}},
		microEndpoint{name: "good", subject: "h.*.get", metadata: map[string]string{ClaimMethod: "GET", ClaimPath: "/h/{id}"}})
	gw := startGateway(t, ns, discoveryConfig(legacy.URL))
	var claims []DiscoveredClaim
	natstest.Eventually(t, 15*time.Second, "the four claims listed", func() bool {
		resp, body := do(t, "GET", gw.AdminURL+"/admin/discovered", nil, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /admin/discovered: %d %s", resp.StatusCode, body)
		}
		var out struct{ Claims []DiscoveredClaim }
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatal(err)
		}
		claims = out.Claims
		return len(claims) == 4
	})
	for _, c := range claims {
		s := c.Suggested
		cfg := discoveryConfig(legacy.URL) + fmt.Sprintf("  - {name: %q, method: %q, path: %q, nats: {subject: %q, pattern: %s}}\n",
			s.Name, s.Method, s.Path, s.NATS.Subject, s.NATS.Pattern)
		_, err := routes.Load("with-suggestion.yaml", []byte(cfg), func(string) (string, bool) { return "", false })
		switch {
		case err == nil && c.Endpoint != "good":
			t.Errorf("%s: suggestion %+v validates; the test expected it not to", c.Endpoint, s)
		case err == nil && s.Note != "":
			t.Errorf("%s: suggestion %+v validates but has a note %q", c.Endpoint, s, s.Note)
		case err != nil && !strings.Contains(s.Note, "does not validate"):
			t.Errorf("%s: suggestion %+v fails the config check (%v) and its note %q does not say so", c.Endpoint, s, err, s.Note)
		}
	}
}
