package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// history reads /admin/history?route=name.
func (d *testDemo) history(t *testing.T, route string) gateway.RouteHistory {
	t.Helper()
	resp, err := http.Get(d.admin + "/admin/history?route=" + route)
	if err != nil {
		t.Fatalf("/admin/history: %v", err)
	}
	defer resp.Body.Close()
	var snap gateway.HistorySnapshot
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatalf("/admin/history: %v", err)
	}
	if resp.StatusCode != http.StatusOK || len(snap.Routes) != 1 {
		t.Fatalf("/admin/history?route=%s: %d, %d routes", route, resp.StatusCode, len(snap.Routes))
	}
	return snap.Routes[0]
}

// fleet reads /admin/fleet.
func (d *testDemo) fleet(t *testing.T) gateway.FleetStatus {
	t.Helper()
	resp, err := http.Get(d.admin + "/admin/fleet")
	if err != nil {
		t.Fatalf("/admin/fleet: %v", err)
	}
	defer resp.Body.Close()
	var st gateway.FleetStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("/admin/fleet: %v", err)
	}
	return st
}

// pointsWith counts a route's history points with a value for a backend's
// series: "p50", "p99" or "rate".
func pointsWith(rh gateway.RouteHistory, backend, series string) int {
	n := 0
	for _, p := range rh.Points {
		v, ok := p.Backend[backend]
		switch {
		case !ok:
		case series == "p50" && v.P50 == nil, series == "p99" && v.P99 == nil:
		default:
			n++
		}
	}
	return n
}

// legacyRuns counts the runs of consecutive points legacy answered.
func legacyRuns(rh gateway.RouteHistory) int {
	runs, in := 0, false
	for _, p := range rh.Points {
		_, ok := p.Backend["legacy"]
		if ok && !in {
			runs++
		}
		in = ok
	}
	return runs
}

// poll waits for cond, checking every quarter second, within a bound: the
// history changes every ten seconds, so a tighter loop only costs the CPU.
func poll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestDashboardChartsShowBothBackendsAndStageMarks loads the dashboard in
// a real browser while the demo's traffic runs with get-profile at a 50%
// canary, and checks the fleet panel and the charts drawn from
// /admin/history: get-profile's chart has p50, p99 and rate lines for both
// backends, each with as many points as the history holds for it (a step a
// backend did not answer breaks its line, it is not drawn at zero); the
// canary's stage change is marked on its time axis, a later PUT adds a
// second mark, and a route whose stage never changed has none; legacy's
// line, back after a spell at nats, is drawn in two pieces.
func TestDashboardChartsShowBothBackendsAndStageMarks(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not on PATH: this test drives the dashboard in headless Chromium (Debian's chromium package; .ci/run installs it)")
	}
	d := startTestDemo(t)
	d.traffic(t, 60)
	d.cutover(t, "get-profile", `{"cutover":"canary","canary_percent":50}`)
	// A point appears once its ten seconds have closed and settled.
	poll(t, 60*time.Second, "a history point of get-profile answered by both backends", func() bool {
		rh := d.history(t, "get-profile")
		for _, p := range rh.Points {
			if _, ok := p.Backend["nats"]; ok {
				if _, ok := p.Backend["legacy"]; ok {
					return true
				}
			}
		}
		return false
	})

	b := openBrowser(t, bin, d.admin+"/")

	// The fleet panel: this replica, as /admin/fleet names it, no drift.
	fleet := d.fleet(t)
	if len(fleet.Replicas) != 1 {
		t.Fatalf("/admin/fleet lists %d replicas, want the demo's one", len(fleet.Replicas))
	}
	self := fleet.Replicas[0]
	rep := fmt.Sprintf(`document.querySelector('#replicas li[data-replica=%q]')`, self.ID)
	b.waitFor("the fleet panel listing the replica", `(`+rep+` ?? null) !== null`)
	if got := b.eval(`document.querySelectorAll('#replicas li[data-replica]').length`); got != "1" {
		t.Errorf("the fleet panel lists %s replicas, want 1", got)
	}
	if got := b.eval(rep + `.textContent`); !strings.Contains(got, self.ID) || !strings.Contains(got, self.Version) || !strings.Contains(got, self.ConfigHash) {
		t.Errorf("the replica's entry reads %s, want its id %s, version %s and config hash %s", got, self.ID, self.Version, self.ConfigHash)
	}
	if got := b.eval(`document.getElementById('drift').hidden`); got != "true" {
		t.Errorf("a drift warning is shown for a fleet of one (hidden=%s)", got)
	}

	const chart = `document.querySelector('svg.chart[data-route="get-profile"]')`
	line := func(backend, series string) string {
		return fmt.Sprintf(`%s?.querySelector('path.line[data-backend=%q][data-series=%q]')`, chart, backend, series)
	}
	var all []string
	for _, backend := range []string{"nats", "legacy"} {
		for _, series := range []string{"p50", "p99", "rate"} {
			all = append(all, `Number(`+line(backend, series)+`?.dataset.points ?? 0) >= 1`)
		}
	}
	b.waitFor("get-profile's chart with p50, p99 and rate lines for both backends", strings.Join(all, " && "))

	// Each line has as many points as the history holds for its series:
	// read the history before and after the DOM, as a point may close
	// between them.
	before := d.history(t, "get-profile")
	drawn := map[string]int{}
	for _, backend := range []string{"nats", "legacy"} {
		for _, series := range []string{"p50", "p99", "rate"} {
			n, err := strconv.Atoi(strings.Trim(b.eval(line(backend, series)+`.dataset.points`), `"`))
			if err != nil {
				t.Fatalf("%s %s: data-points: %v", backend, series, err)
			}
			drawn[backend+" "+series] = n
		}
	}
	after := d.history(t, "get-profile")
	for _, backend := range []string{"nats", "legacy"} {
		for _, series := range []string{"p50", "p99", "rate"} {
			lo, hi, n := pointsWith(before, backend, series), pointsWith(after, backend, series), drawn[backend+" "+series]
			if n < lo-1 || n > hi {
				t.Errorf("%s %s line has %d points; the history holds %d..%d", backend, series, n, lo, hi)
			}
			if n >= len(after.Points) {
				t.Errorf("%s %s line has %d points of %d: steps without traffic were drawn", backend, series, n, len(after.Points))
			}
		}
	}
	// The axes say their units.
	for _, unit := range []string{" ms", "/s", "min ago", "now"} {
		if got := b.eval(fmt.Sprintf(`[...%s.querySelectorAll('text')].some(e => e.textContent.includes(%q))`, chart, unit)); got != "true" {
			t.Errorf("get-profile's chart has no axis label with %q", unit)
		}
	}

	marks := func(route string) string {
		return fmt.Sprintf(`document.querySelectorAll('svg.chart[data-route=%q] line.mark[data-kind="stage"]')`, route)
	}
	b.waitFor("the canary's stage mark on get-profile", marks("get-profile")+`.length === 1`)
	if got := b.eval(marks("get-profile") + `[0].textContent`); !strings.Contains(got, "canary 50%") {
		t.Errorf("get-profile's stage mark says %s, want canary 50%%", got)
	}
	if got := b.eval(`document.querySelector('svg.chart[data-route="get-user"]') !== null && ` + marks("get-user") + `.length === 0`); got != "true" {
		t.Errorf("get-user's chart missing or marked though its stage never changed")
	}

	putAt := time.Now()
	d.cutover(t, "get-profile", `{"cutover":"nats"}`)
	b.waitFor("a second stage mark on get-profile after the PUT", marks("get-profile")+`.length === 2`)
	if got := b.eval(`[...` + marks("get-profile") + `].some(m => m.textContent.includes('stage: nats'))`); got != "true" {
		t.Errorf("no stage mark says nats: %s", b.eval(`[...`+marks("get-profile")+`].map(m => m.textContent).join(' | ')`))
	}

	// At nats, legacy answers nothing: back at the canary, legacy's lines
	// resume after a gap, and the page draws them as two pieces.
	poll(t, 60*time.Second, "a point at nats that legacy did not answer", func() bool {
		for _, p := range d.history(t, "get-profile").Points {
			if _, nats := p.Backend["nats"]; nats && p.T >= putAt.UnixMilli() {
				_, legacy := p.Backend["legacy"]
				return !legacy
			}
		}
		return false
	})
	d.cutover(t, "get-profile", `{"cutover":"canary","canary_percent":50}`)
	poll(t, 60*time.Second, "legacy answering again after the gap", func() bool {
		return legacyRuns(d.history(t, "get-profile")) >= 2
	})
	b.waitFor("legacy's rate line drawn in two pieces", `(`+line("legacy", "rate")+`?.getAttribute('d').match(/M/g) ?? []).length >= 2`)
	b.waitFor("a third stage mark", marks("get-profile")+`.length === 3`)

	if *dashboardPNG != "" {
		writeDashboardPNG(t, b)
	}
}

// writeDashboardPNG refreshes docs/dashboard.png: a minute and a half
// more of traffic, get-profile back at a 50% canary, so its chart shows
// both backends and its marks, then the page at 1680 pixels wide.
func writeDashboardPNG(t *testing.T, b *browser) {
	t.Helper()
	time.Sleep(90 * time.Second) // the traffic runs on: the lines grow
	metrics := func(height int) {
		b.call(b.session, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1680, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil)
	}
	metrics(900)
	b.eval(`new Promise(r => setTimeout(() => r(true), 11000))`) // one history poll and two table refreshes
	// The whole page: the table, then every route's chart.
	height, err := strconv.Atoi(b.eval(`document.documentElement.scrollHeight`))
	if err != nil {
		t.Fatal(err)
	}
	metrics(min(height, 2400))
	b.eval(`new Promise(r => requestAnimationFrame(() => r(true)))`)
	var shot struct {
		Data string `json:"data"`
	}
	b.call(b.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": false}, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(*dashboardPNG, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", *dashboardPNG)
}

// startReplica starts one gateway of a fleet on natsURL: replica id, one
// NATS route whose timeout sets the config hash. It returns the admin URL.
func startReplica(t *testing.T, natsURL, id, timeout string) string {
	t.Helper()
	yaml := fmt.Sprintf(`
http: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
nats: {url: %q}
fleet: {replica_id: %s}
routes:
  - name: get
    method: GET
    path: /get
    nats: {subject: get, timeout: %s}
`, natsURL, id, timeout)
	cfg, err := routes.Parse(id+".yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	table, err := routes.Compile(cfg)
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	gw, err := gateway.New(context.Background(), gateway.Options{Table: table, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry(), AccessLog: io.Discard})
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	if err := gw.Start(); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
	})
	return "http://" + gw.AdminAddr()
}

// TestDashboardShowsFleetDrift loads the dashboard of a fleet of three
// where one replica runs another config: the fleet panel lists all three,
// the leader marked as /admin/fleet names it, and the drift warning is
// shown naming the odd one out and why, its entry flagged.
func TestDashboardShowsFleetDrift(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not on PATH: this test drives the dashboard in headless Chromium (Debian's chromium package; .ci/run installs it)")
	}
	ns := natstest.RunServer(t)
	a := startReplica(t, ns.ClientURL(), "replica-a", "5s")
	startReplica(t, ns.ClientURL(), "replica-b", "5s")
	startReplica(t, ns.ClientURL(), "replica-c", "2s")
	d := &testDemo{admin: a}
	var st gateway.FleetStatus
	poll(t, 20*time.Second, "replica-a to hear all three and elect a leader", func() bool {
		st = d.fleet(t)
		return len(st.Replicas) == 3 && len(st.Drift) == 1 && st.Leader != ""
	})

	b := openBrowser(t, bin, a+"/")
	b.waitFor("three replicas listed", `document.querySelectorAll('#replicas li[data-replica]').length === 3`)
	b.waitFor("the drift warning shown", `!document.getElementById('drift').hidden`)
	if got := b.eval(`document.querySelector('#drift-list li[data-replica="replica-c"]')?.textContent ?? ''`); !strings.Contains(got, "replica-c") || !strings.Contains(got, "config hash") {
		t.Errorf("drift entry for replica-c reads %q, want its id and the config hash", got)
	}
	if got := b.eval(`document.querySelectorAll('#drift-list li').length`); got != "1" {
		t.Errorf("%s drift entries, want 1 (replica-c)", got)
	}
	if got := b.eval(`document.querySelector('#replicas li[data-replica="replica-c"]').classList.contains('drifting')`); got != "true" {
		t.Errorf("replica-c's entry is not flagged as drifting")
	}
	if got := b.eval(`document.querySelector('#replicas li[data-replica="replica-a"]').classList.contains('drifting')`); got != "false" {
		t.Errorf("replica-a's entry is flagged as drifting")
	}
	// The leader may change hands while the page loads: read both again.
	b.waitFor("the leader marked, as /admin/fleet names it", fmt.Sprintf(
		`[...document.querySelectorAll('#replicas li[data-replica]')].filter(li => li.querySelector('.leader')).map(li => li.dataset.replica).join() === %q`, d.fleet(t).Leader))
}
