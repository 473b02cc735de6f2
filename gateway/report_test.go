package gateway

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// routesGauge reads natsgate_routes, stage by stage, as "legacy=1 shadow=0 …".
func routesGauge(gw *testGateway) string {
	var out []string
	for _, st := range []string{"legacy", "shadow", "canary", "nats"} {
		out = append(out, st+"="+strconv.Itoa(int(testutil.ToFloat64(gw.metrics.Routes.WithLabelValues(st)))))
	}
	return strings.Join(out, " ")
}

// natsgate_routes{stage} counts the served routes at each stage, every
// stage exported from 0: at start, after a cutover PUT moves one, after
// its DELETE, and after a reload adds a route.
func TestRoutesGaugeFollowsStages(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	cfg := cutoverConfig(legacy.URL, "legacy", `  - name: only-nats
    method: GET
    path: /only
    nats: {subject: only.get}
`)
	gw := startGateway(t, ns, cfg)
	check := func(when string, l, sh, c, n int) {
		t.Helper()
		want := fmt.Sprintf("legacy=%d shadow=%d canary=%d nats=%d", l, sh, c, n)
		var got string
		natstest.Eventually(t, 5*time.Second, "natsgate_routes "+when+": "+want, func() bool {
			got = routesGauge(gw)
			return got == want
		})
	}
	check("at start", 1, 0, 0, 1)

	req := func(method, body string) {
		t.Helper()
		r, _ := do(t, method, gw.AdminURL+"/admin/routes/get-user/cutover", strings.NewReader(body),
			map[string][]string{"Authorization": {"Bearer secret"}})
		if r.StatusCode != 200 {
			t.Fatalf("%s cutover: %d", method, r.StatusCode)
		}
	}
	req("PUT", `{"cutover":"canary","canary_percent":20}`)
	check("after the PUT to canary", 0, 0, 1, 1)
	req("DELETE", "")
	check("after the DELETE", 1, 0, 0, 1)

	parsed, err := routes.Parse("test.yaml", []byte(cfg+`  - name: shadowed
    method: GET
    path: /shadowed
    nats: {subject: shadowed.get}
    upstream: legacy
    cutover: shadow
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	parsed.NATS.URL = ns.ClientURL()
	table, err := routes.Compile(parsed)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Reload(table); err != nil {
		t.Fatal(err)
	}
	check("after a reload added a shadowed route", 1, 1, 0, 1)
}
