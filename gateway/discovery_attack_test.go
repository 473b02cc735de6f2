package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// While the gateway's NATS connection is down a look cannot ask anyone:
// the publish of $SRV.INFO only fills the reconnect buffer. Such a look
// must keep the last result, as the README says, and not report every
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
