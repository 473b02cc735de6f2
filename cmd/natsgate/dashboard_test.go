package main

import (
	"bytes"
	"context"
	"flag"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
)

var dashboardPNG = flag.String("dashboard-png", "", "TestDashboardChartsShowBothBackendsAndStageMarks also writes the dashboard's screenshot, after 90 s more traffic, to this file (docs/dashboard.png: -dashboard-png=$PWD/docs/dashboard.png)")

// chromium runs Debian's chromium headless on url with extra flags and
// returns what it printed on stdout.
func chromium(t *testing.T, bin, url string, extra ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + t.TempDir(),
		"--window-size=1680,900",
		// Time enough for the first fetch of /admin/stats and a refresh.
		"--virtual-time-budget=5000",
	}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, lastLines(stderr.String(), 20))
	}
	return stdout.Bytes()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	numberRe = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)
	tdRe     = regexp.MustCompile(`(?s)<td([^>]*data-col="([a-z0-9-]+)"[^>]*)>(.*?)</td>`)
	tagRe    = regexp.MustCompile(`<[^>]*>`)
)

// dashboardRows reads the dashboard's rows from a dumped DOM: route name to
// column to the cell's text, its HTML under "column:html" and its
// attributes under "column:attrs".
func dashboardRows(dom string) map[string]map[string]string {
	rows := map[string]map[string]string{}
	for _, m := range regexp.MustCompile(`(?s)<tr[^>]*data-route="([^"]+)"[^>]*>(.*?)</tr>`).FindAllStringSubmatch(dom, -1) {
		cells := map[string]string{}
		for _, c := range tdRe.FindAllStringSubmatch(m[2], -1) {
			cells[c[2]] = strings.TrimSpace(tagRe.ReplaceAllString(c[3], " "))
			cells[c[2]+":html"] = c[3]
			cells[c[2]+":attrs"] = c[1]
		}
		rows[m[1]] = cells
	}
	return rows
}

// want is a dashboard cell's expected content: "number", or a substring.
type want struct{ route, col, is string }

// waitForDashboard loads the page in the browser until every cell is as
// wanted (the page fills in after its first fetch), within a bound, and
// returns the DOM.
func waitForDashboard(t *testing.T, bin, url string, wants []want) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 1; ; attempt++ {
		dom := string(chromium(t, bin, url, "--dump-dom"))
		rows := dashboardRows(dom)
		var missing []string
		for _, w := range wants {
			got, ok := rows[w.route][w.col]
			switch {
			case !ok:
				missing = append(missing, w.route+"/"+w.col+": no such cell")
			case w.is == "number" && !numberRe.MatchString(got):
				missing = append(missing, w.route+"/"+w.col+": "+got+", want a number")
			case w.is != "number" && !strings.Contains(got, w.is):
				missing = append(missing, w.route+"/"+w.col+": "+got+", want "+w.is)
			}
		}
		if len(missing) == 0 {
			return dom
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d loads the dashboard still lacks:\n  %s\nDOM:\n%s", attempt, strings.Join(missing, "\n  "), dom)
		}
	}
}

// TestDashboardInBrowser loads the dashboard in a real browser while the
// demo's traffic runs, a route moving through shadow to a 50% canary, and
// checks that every route renders with its numbers: NATS and legacy
// latency side by side, the per-hop split, the shadow match rate and the
// breakers.
func TestDashboardInBrowser(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not on PATH: this test loads the dashboard in headless Chromium (Debian's chromium package; .ci/run installs it)")
	}
	d := startTestDemo(t)
	d.traffic(t, 60)

	// get-profile goes legacy → shadow → canary 50%, as in a migration.
	// In shadow, its NATS columns show the shadow copies' NATS hop, marked.
	d.cutover(t, "get-profile", `{"cutover":"shadow"}`)
	natstest.Eventually(t, 20*time.Second, "shadow comparisons on get-profile", func() bool {
		return routeStats(d.stats(t), "get-profile").Shadow.Match >= 5
	})
	waitForDashboard(t, bin, d.admin+"/", []want{
		{"get-profile", "stage", "shadow"},
		{"get-profile", "legacy-p50", "number"},
		{"get-profile", "nats-p50", "number"},
		{"get-profile", "nats-p99", "number"},
		{"get-profile", "nats-p50:attrs", "from-shadow"},
		{"get-profile", "shadow", "% match"},
	})
	d.cutover(t, "get-profile", `{"cutover":"canary","canary_percent":50}`)
	natstest.Eventually(t, 20*time.Second, "get-profile answered by both sides", func() bool {
		b := routeStats(d.stats(t), "get-profile").Backends
		return b["nats"].Requests >= 10 && b["legacy"].Requests >= 10 && routeStats(d.stats(t), "legacy-rest").Requests > 0
	})

	var wants []want
	for _, r := range d.table.Routes {
		wants = append(wants, want{r.Name, "route", r.Name})
	}
	for _, q := range []string{"p50", "p95", "p99"} {
		wants = append(wants,
			want{"get-user", "nats-" + q, "number"},
			want{"get-profile", "nats-" + q, "number"},
			want{"get-profile", "legacy-" + q, "number"},
			want{"legacy-rest", "legacy-" + q, "number"},
			want{"create-order", "nats-" + q, "number"},
		)
	}
	wants = append(wants,
		want{"get-user", "rate", "number"},
		want{"get-user", "stage", "nats"},
		want{"get-profile", "stage", "canary 50%"},
		want{"get-profile", "stage", "override (config: legacy)"},
		want{"get-profile", "shadow", "% match"},
		want{"get-profile", "shadow", "recent mismatches"},
		want{"get-profile", "breakers", "nats: closed"},
		want{"get-profile", "breakers", "legacy: closed"},
		want{"get-user", "hops", "worker "},
		want{"get-report", "errors", "100%"},
		// The stage control is there, disabled until a token is pasted.
		want{"get-profile", "stage:html", "<select"},
		want{"get-profile", "stage:html", "disabled"},
	)

	dom := waitForDashboard(t, bin, d.admin+"/", wants)
	if strings.Contains(dom, "Cannot read the gateway") {
		t.Errorf("the page reports an error reading the gateway")
	}
	// The header's summary line, from /admin/report: get-profile is in
	// canary, the five routes without an upstream on NATS.
	// The report reads settled history slots, so its share of traffic
	// appears some seconds after the table's numbers: load again until it
	// does.
	summary := regexp.MustCompile(`<p id="summary"[^>]*>5 of 7 routes on NATS, [0-9.]+ % of traffic; 0 in shadow(, [0-9.]+ % matching)?; [0-9]+ without responders</p>`)
	for deadline := time.Now().Add(30 * time.Second); !summary.MatchString(dom); {
		if time.Now().After(deadline) {
			m := regexp.MustCompile(`<p id="summary"[^>]*>[^<]*</p>`).FindString(dom)
			t.Errorf("summary line %q, want the report's: 5 of 7 routes on NATS, its share of traffic, 0 in shadow, …", m)
			break
		}
		time.Sleep(time.Second)
		dom = string(chromium(t, bin, d.admin+"/", "--dump-dom"))
	}

	shot := filepath.Join(t.TempDir(), "dashboard.png")
	chromium(t, bin, d.admin+"/", "--screenshot="+shot)
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() != 1680 || r.Dy() != 900 {
		t.Errorf("screenshot is %dx%d, want 1680x900", r.Dx(), r.Dy())
	}
	// A rendered table has many colours; a blank or error page has few.
	colors := map[uint32]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 3 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colors[(r>>8)<<16|(g>>8)<<8|bl>>8] = true
		}
	}
	if len(colors) < 50 {
		t.Errorf("screenshot has %d colours: the page looks blank", len(colors))
	}
}
