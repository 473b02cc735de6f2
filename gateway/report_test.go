package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
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
		natstest.Eventually(t, 15*time.Second, "natsgate_routes "+when+": "+want, func() bool {
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

// reportConfig has a route at each stage, one with a plan, one without
// responders, a publish route and one with no NATS side.
func reportConfig(legacyURL string) string {
	return fmt.Sprintf(`
admin: {token: secret}
discovery: {interval: 1s}
fleet: {replica_id: rep}
upstreams:
  old: {url: %q}
routes:
  - name: leg
    method: GET
    path: /leg
    nats: {subject: leg.get}
    upstream: old
  - name: shad
    method: GET
    path: /shad
    nats: {subject: shad.get}
    upstream: old
    cutover: shadow
    rollout:
      steps:
        - {stage: shadow}
        - {stage: nats}
      gates: {min_match_rate: 0.95}
  - name: bad
    method: GET
    path: /bad
    nats: {subject: bad.get}
    upstream: old
    cutover: shadow
  - name: can
    method: GET
    path: /can
    nats: {subject: can.get}
    upstream: old
    cutover: canary
    canary_percent: 50
  - name: nobody
    method: GET
    path: /nobody
    nats: {subject: nobody.get}
    upstream: old
  - name: full
    method: GET
    path: /full
    nats: {subject: full.get}
    upstream: old
    cutover: nats
  - name: events
    method: POST
    path: /events
    nats: {subject: events.new, pattern: publish}
    upstream: old
  - name: plain
    method: GET
    path: /plain
    upstream: old
`, legacyURL)
}

func getReport(t *testing.T, gw *testGateway) Report {
	t.Helper()
	resp, body := do(t, "GET", gw.AdminURL+"/admin/report", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /admin/report: %d %s", resp.StatusCode, body)
	}
	var rep Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/admin/report: %v\n%s", err, body)
	}
	return rep
}

// The report's numbers are what was sent: per route its stage, plan,
// responders, requests and 5xx share by backend, NATS share and shadow
// match rate; and the summary's counts, traffic share, ready and blocked
// routes, over the fleet history's settled slots.
func TestReportCountsWhatWasSent(t *testing.T) {
	ns := natstest.RunServer(t)
	// The legacy service answers {"ok":true} like the workers, except on
	// /bad (so bad's shadow copies mismatch) and /plain?fail (a 500).
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/bad":
			_, _ = w.Write([]byte(`{"ok":"legacy"}`))
		case r.URL.Query().Has("fail"):
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"boom"}`))
		default:
			_, _ = w.Write([]byte(`{"ok":true}`))
		}
	}))
	t.Cleanup(legacy.Close)
	var eps []microEndpoint
	for _, s := range []string{"leg", "shad", "bad", "can", "full"} {
		eps = append(eps, microEndpoint{name: s, subject: s + ".get"})
	}
	microWorker(t, ns, "svc", "1.0.0", eps...)
	gw := startGateway(t, ns, reportConfig(legacy.URL))
	waitResponders(t, gw, "nobody", 0)
	waitResponders(t, gw, "leg", 1)

	sent := map[string]int{"leg": 10, "shad": 25, "bad": 20, "can": 20, "nobody": 5, "full": 10}
	for path, n := range sent {
		for i := range n {
			if resp, body := do(t, "GET", gw.URL+"/"+path, nil, nil); resp.StatusCode != 200 {
				t.Fatalf("GET /%s #%d: %d %s", path, i, resp.StatusCode, body)
			}
		}
	}
	for i := range 4 {
		if resp, body := do(t, "POST", gw.URL+"/events", strings.NewReader(`{}`), nil); resp.StatusCode != 200 {
			t.Fatalf("POST /events #%d: %d %s", i, resp.StatusCode, body)
		}
	}
	for i := range 6 {
		q := ""
		if i < 2 {
			q = "?fail=1"
		}
		if resp, _ := do(t, "GET", gw.URL+"/plain"+q, nil, nil); (resp.StatusCode == 500) != (q != "") {
			t.Fatalf("GET /plain%s #%d: %d", q, i, resp.StatusCode)
		}
	}
	const total = 100 // every request above, each answered by a backend

	// Wait for every request and shadow comparison to be in settled slots.
	var rep Report
	byName := map[string]RouteReport{}
	waitFor(t, 30*time.Second, "the report to hold 100 answers and 45 comparisons", func() bool {
		rep = getReport(t, gw)
		var answered, compared uint64
		for _, rr := range rep.Routes {
			byName[rr.Name] = rr
			for _, b := range []*ReportBackend{rr.Legacy, rr.NATS} {
				if b != nil {
					answered += b.Requests
				}
			}
			compared += rr.ShadowCompared
		}
		return answered >= total && compared >= 45
	})

	reqs := func(b *ReportBackend) uint64 {
		if b == nil {
			return 0
		}
		return b.Requests
	}
	canNATS := reqs(byName["can"].NATS)
	tests := []struct {
		route         string
		stage         routes.Stage
		legacy, nats  uint64
		responders    int // -1: null
		matchRate     float64
		compared      uint64
		ready         bool
		blocked       string // a substring; "" for none
		legacyErrRate float64
	}{
		{"leg", routes.Legacy, 10, 0, 1, -1, 0, true, "", 0},
		{"shad", routes.Shadow, 25, 0, 1, 1, 25, true, "", 0},
		{"bad", routes.Shadow, 20, 0, 1, 0, 20, false, "shadow mismatching: 0 % of 20 comparisons match, want 99 %", 0},
		{"can", routes.Canary, 20 - canNATS, canNATS, 1, -1, 0, true, "", 0},
		{"nobody", routes.Legacy, 5, 0, 0, -1, 0, false, "no responders: discovery found no micro service answering nobody.get", 0},
		{"full", routes.NATS, 0, 10, 1, -1, 0, false, "", 0},
		{"events", routes.Legacy, 4, 0, 0, -1, 0, true, "", 0},
		{"plain", routes.Legacy, 6, 0, -1, -1, 0, false, "", 0.333},
	}
	for _, tt := range tests {
		t.Run(tt.route, func(t *testing.T) {
			rr, ok := byName[tt.route]
			if !ok {
				t.Fatalf("no route %s in the report", tt.route)
			}
			if rr.Stage != tt.stage {
				t.Errorf("stage %s, want %s", rr.Stage, tt.stage)
			}
			if got, want := [2]uint64{reqs(rr.Legacy), reqs(rr.NATS)}, [2]uint64{tt.legacy, tt.nats}; got != want {
				t.Errorf("requests legacy, nats = %v, want %v", got, want)
			}
			if (rr.Legacy == nil) != (tt.legacy == 0) || (rr.NATS == nil) != (tt.nats == 0) {
				t.Errorf("legacy %+v, nats %+v: want null exactly for a backend that answered nothing", rr.Legacy, rr.NATS)
			}
			for name, b := range map[string]*ReportBackend{"legacy": rr.Legacy, "nats": rr.NATS} {
				if b != nil && (b.P50 == nil || b.P99 == nil || *b.P50 > *b.P99) {
					t.Errorf("%s: p50 %v p99 %v, want both, p50 ≤ p99", name, b.P50, b.P99)
				}
			}
			if rr.Legacy != nil && rr.Legacy.ErrorRate != tt.legacyErrRate {
				t.Errorf("legacy error rate %v, want %v", rr.Legacy.ErrorRate, tt.legacyErrRate)
			}
			if want := ratio(tt.nats, tt.legacy+tt.nats); rr.NATSShare != want {
				t.Errorf("nats share %v, want %v", rr.NATSShare, want)
			}
			switch {
			case tt.responders < 0 && rr.Responders != nil:
				t.Errorf("responders %d, want null", *rr.Responders)
			case tt.responders >= 0 && (rr.Responders == nil || *rr.Responders != tt.responders):
				t.Errorf("responders %v, want %d", rr.Responders, tt.responders)
			}
			if rr.ShadowCompared != tt.compared {
				t.Errorf("%d shadow comparisons, want %d", rr.ShadowCompared, tt.compared)
			}
			switch {
			case tt.matchRate < 0 && rr.ShadowMatchRate != nil:
				t.Errorf("shadow match rate %v, want null", *rr.ShadowMatchRate)
			case tt.matchRate >= 0 && (rr.ShadowMatchRate == nil || *rr.ShadowMatchRate != tt.matchRate):
				t.Errorf("shadow match rate %v, want %v", rr.ShadowMatchRate, tt.matchRate)
			}
			if rr.Ready != tt.ready {
				t.Errorf("ready %v, want %v", rr.Ready, tt.ready)
			}
			if (tt.blocked == "") != (rr.Blocked == "") || !strings.Contains(rr.Blocked, tt.blocked) {
				t.Errorf("blocked %q, want %q", rr.Blocked, tt.blocked)
			}
			hasRatio := rr.Legacy != nil && rr.NATS != nil
			if hasRatio != (rr.P99Ratio != nil) {
				t.Errorf("p99 ratio %v, want one exactly when both backends answered", rr.P99Ratio)
			} else if hasRatio && *rr.P99Ratio != round3(*rr.NATS.P99 / *rr.Legacy.P99) {
				t.Errorf("p99 ratio %v, want %v / %v", *rr.P99Ratio, *rr.NATS.P99, *rr.Legacy.P99)
			}
		})
	}
	if canNATS == 0 || canNATS == 20 {
		t.Errorf("the 50%% canary sent %d of 20 to NATS: want both sides to answer some", canNATS)
	}
	if ro := byName["shad"].Rollout; ro == nil || *ro != (ReportRollout{State: "idle", Step: 0, Steps: 2}) {
		t.Errorf("shad's rollout %+v, want idle, 2 steps", ro)
	}
	if byName["leg"].Rollout != nil {
		t.Errorf("leg's rollout %+v, want null without a plan", byName["leg"].Rollout)
	}
	if c := byName["can"]; c.CanaryPercent != 50 {
		t.Errorf("can's canary percent %d, want 50", c.CanaryPercent)
	}

	sum := rep.Summary
	if sum.Routes != 8 || sum.ByStage != (ReportByStage{Legacy: 4, Shadow: 2, Canary: 1, NATS: 1}) {
		t.Errorf("summary: %d routes, by stage %+v; want 8: 4 legacy, 2 shadow, 1 canary, 1 nats", sum.Routes, sum.ByStage)
	}
	if want := ratio(10+canNATS, total); sum.NATSTrafficShare != want {
		t.Errorf("nats traffic share %v, want %v", sum.NATSTrafficShare, want)
	}
	if want := ratio(25, 45); sum.ShadowMatchRate == nil || *sum.ShadowMatchRate != want {
		t.Errorf("shadow match rate %v, want %v", sum.ShadowMatchRate, want)
	}
	if want := []string{"leg", "shad", "can", "events"}; !slices.Equal(sum.Ready, want) {
		t.Errorf("ready %q, want %q", sum.Ready, want)
	}
	var blocked []string
	for _, b := range sum.Blocked {
		blocked = append(blocked, b.Route)
	}
	if want := []string{"bad", "nobody"}; !slices.Equal(blocked, want) {
		t.Errorf("blocked %q, want %q", blocked, want)
	}
	if sum.WithoutResponders != 1 {
		t.Errorf("%d without responders, want 1 (nobody)", sum.WithoutResponders)
	}
	wantText := fmt.Sprintf("1 of 8 routes on NATS, %s of traffic; 2 in shadow, 55.6 %% matching; 1 without responders", percentText(ratio(10+canNATS, total)))
	if sum.Text != wantText {
		t.Errorf("summary line %q, want %q", sum.Text, wantText)
	}
	if rep.WindowSeconds <= 0 || rep.WindowSeconds > float64(historySlots)*statsSlot.Seconds() {
		t.Errorf("window %v s, want the part of 15 minutes the history holds", rep.WindowSeconds)
	}
}
