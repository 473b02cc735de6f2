package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"go.yaml.in/yaml/v3"
)

// The observability files in configs/, from this package's directory.
const (
	rulesFile      = "../../configs/prometheus/natsgate-rules.yml"
	rulesTestFile  = "../../configs/prometheus/natsgate-rules.test.yml"
	promConfigFile = "../../configs/prometheus/prometheus.yml"
	grafanaFile    = "../../configs/grafana/natsgate.json"
	// grafanaDatasourceFile is the datasource docker-compose.yml provisions.
	grafanaDatasourceFile = "../../configs/grafana/provisioning/datasources/prometheus.yml"
	composeFile           = "../../configs/docker-compose.yml"
	composeConfig         = "../../configs/compose/natsgate.yaml"
)

const noPromtool = "promtool is not on PATH: this check needs Debian's prometheus package (.ci/run installs it)"

// promtool runs promtool with args and stdin, failing the test unless it
// exits 0; it returns the combined output.
func promtool(t *testing.T, bin string, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPrometheusFiles checks the scrape config and the rules with
// promtool, and runs the rules' unit tests (each alert firing on the
// series it is for, and not on its look-alikes).
func TestPrometheusFiles(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip(noPromtool)
	}
	out := promtool(t, bin, nil, "check", "rules", rulesFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool check rules: %s", out)
	}
	promtool(t, bin, nil, "check", "config", promConfigForPromtool(t, bin))
	promtool(t, bin, nil, "test", "rules", rulesTestFile)
}

// classicHistogramsField is the scrape setting that keeps classic buckets
// beside native histograms, as Prometheus 2.45 to 2.55 name it.
const classicHistogramsField = "scrape_classic_histograms"

// promConfigForPromtool is the scrape config to give this promtool: the
// file itself, or, for a promtool older than 2.45 (Debian 12 has 2.42),
// a copy without the one setting it does not know yet, so that the rest
// of the file is still checked. TestScrapeSettings checks that setting.
func promConfigForPromtool(t *testing.T, bin string) string {
	t.Helper()
	out := promtool(t, bin, nil, "--version")
	m := regexp.MustCompile(`version (\d+)\.(\d+)\.`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("promtool --version: no version in %q", out)
	}
	var major, minor int
	fmt.Sscan(m[1], &major)
	fmt.Sscan(m[2], &minor)
	if major > 2 || minor >= 45 {
		return promConfigFile
	}
	b, err := os.ReadFile(promConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	field := regexp.MustCompile(`(?m)^\s*` + classicHistogramsField + `:.*\n`)
	if len(field.FindAll(b, -1)) != 1 {
		t.Fatalf("%s: want one %s line", promConfigFile, classicHistogramsField)
	}
	t.Logf("promtool %s.%s predates %s: checking %s without it", m[1], m[2], classicHistogramsField, promConfigFile)
	// The copy's rule_files are read beside it.
	dir := t.TempDir()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(rulesFile)), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, field.ReplaceAll(b, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestScrapeSettings checks what keeps the rules and panels fed: the
// natsgate job keeps classic buckets when Prometheus runs with native
// histograms on, and Grafana's datasource knows the scrape interval, so
// that $__rate_interval spans enough samples.
func TestScrapeSettings(t *testing.T) {
	var prom struct {
		Global struct {
			ScrapeInterval string `yaml:"scrape_interval"`
		} `yaml:"global"`
		ScrapeConfigs []map[string]any `yaml:"scrape_configs"`
	}
	readYAML(t, promConfigFile, &prom)
	found := false
	for _, sc := range prom.ScrapeConfigs {
		if sc["job_name"] != "natsgate" {
			continue
		}
		found = true
		if sc[classicHistogramsField] != true {
			t.Errorf("the natsgate job has %s: %v, want true: with native histograms on, Prometheus would store no _bucket series", classicHistogramsField, sc[classicHistogramsField])
		}
	}
	if !found {
		t.Fatalf("%s has no natsgate job", promConfigFile)
	}
	var ds struct {
		Datasources []struct {
			Type     string         `yaml:"type"`
			JSONData map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	readYAML(t, grafanaDatasourceFile, &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" {
		t.Fatalf("%s: want one prometheus datasource, have %+v", grafanaDatasourceFile, ds.Datasources)
	}
	if got := ds.Datasources[0].JSONData["timeInterval"]; prom.Global.ScrapeInterval == "" || got != prom.Global.ScrapeInterval {
		t.Errorf("the Grafana datasource's timeInterval is %v, want the scrape interval %q", got, prom.Global.ScrapeInterval)
	}
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// TestExportedMetrics serves the demo with its traffic, a route in shadow
// and another in canary, then checks what natsgate exports: /metrics passes
// promtool's lint, and every metric and label that the Grafana dashboard
// and the Prometheus rules name is among those gathered.
func TestExportedMetrics(t *testing.T) {
	d := startTestDemo(t)
	d.traffic(t, 80)
	d.cutover(t, "get-profile", `{"cutover":"shadow"}`)
	natstest.Eventually(t, 20*time.Second, "traffic on every route, shadow comparisons and get-profile's rollout metrics", func() bool {
		snap := d.stats(t)
		for _, r := range snap.Routes {
			if r.Requests == 0 {
				return false
			}
		}
		// The rollout controller exports get-profile's plan from its first
		// round, a tick after the start.
		families := gatheredLabels(t, d)
		return routeStats(snap, "get-profile").Shadow.Match > 0 &&
			families["natsgate_rollout_step"]["route"] && families["natsgate_rollout_decisions_total"]["decision"]
	})

	t.Run("metrics pass promtool", func(t *testing.T) {
		bin, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip(noPromtool)
		}
		resp, err := http.Get(d.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(body, []byte("natsgate_http_request_duration_seconds_bucket")) {
			t.Fatalf("/metrics has no request histogram:\n%s", body)
		}
		if out := promtool(t, bin, body, "check", "metrics"); out != "" {
			t.Errorf("promtool check metrics reports:\n%s", out)
		}
	})

	t.Run("dashboard and rules name exported metrics", func(t *testing.T) {
		families := gatheredLabels(t, d)
		for name, labels := range conditionalMetrics {
			if _, ok := families[name]; ok {
				t.Errorf("the demo exports %s now: take it off conditionalMetrics, so the check reads it from the demo", name)
				continue
			}
			families[name] = labels
		}
		exprs := grafanaExprs(t)
		ruleExprs, recorded := ruleExprs(t)
		if len(exprs) < 10 || len(ruleExprs) < 10 {
			t.Fatalf("found %d dashboard and %d rule expressions; the files did not parse as expected", len(exprs), len(ruleExprs))
		}
		for _, e := range append(exprs, ruleExprs...) {
			for _, problem := range checkExpr(e, families, recorded) {
				t.Errorf("%s\n    in: %s", problem, e)
			}
		}
	})

	t.Run("dashboard queries parse", func(t *testing.T) {
		bin, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip(noPromtool)
		}
		// Each query becomes a recording rule, with Grafana's variables
		// given values, so that promtool parses every one.
		var rules []map[string]string
		for i, e := range grafanaExprs(t) {
			e = labelFnRe.ReplaceAllString(e, "group by ($2) ($1)") // Grafana's, not PromQL
			rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard_query_%d", i), "expr": grafanaVars.Replace(e)})
		}
		b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "dashboard-queries.yml")
		if err := os.WriteFile(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
		promtool(t, bin, nil, "check", "rules", file)
	})
}

var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", `"$route"`, `"get-user"`, "$route", ".*")

// gatheredLabels gathers the demo's registry: each metric family's name and
// its label names. A histogram's le is among them.
func gatheredLabels(t *testing.T, d *testDemo) map[string]map[string]bool {
	t.Helper()
	mfs, err := d.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for _, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
			if m.GetHistogram() != nil {
				labels["le"] = true
			}
		}
		out[mf.GetName()] = labels
	}
	return out
}

// grafanaExprs returns every PromQL query in the Grafana dashboard: the
// panels' targets and the template variables' queries.
func grafanaExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(grafanaFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", grafanaFile, err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
					out = append(out, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	sort.Strings(out)
	return out
}

// ruleExprs returns the rules' expressions and the names they record.
func ruleExprs(t *testing.T) ([]string, map[string]bool) {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
				Alert  string `yaml:"alert"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var exprs []string
	recorded := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	return exprs, recorded
}

var (
	// A metric name, possibly a recording rule's (level:metric:operation),
	// with its selector when it has one.
	selectorRe = regexp.MustCompile(`\b([a-z_]*:?natsgate_[a-z0-9_]+(?::[a-z0-9_]+)?)\s*(\{[^}]*\})?`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	labelFnRe  = regexp.MustCompile(`label_values\(\s*([a-z0-9_]+)\s*,\s*([a-z_]+)\s*\)`)
)

// conditionalMetrics are metrics natsgate exports only when configured
// for them, which the demo is not, with their labels. Each is checked
// against a gateway configured for it by the test named beside it.
var conditionalMetrics = map[string]map[string]bool{
	// Only a listener with tls has a series:
	// gateway.TestTLSExpiryMetricOnMetrics scrapes it from /metrics.
	"natsgate_tls_certificate_expiry_seconds": {"listener": true},
}

// checkExpr names each metric or label in e that natsgate does not export,
// and each recorded series that no rule records.
func checkExpr(e string, families map[string]map[string]bool, recorded map[string]bool) []string {
	var problems []string
	for _, m := range selectorRe.FindAllStringSubmatch(e, -1) {
		name, sel := m[1], m[2]
		if strings.Contains(name, ":") {
			if !recorded[name] {
				problems = append(problems, "recorded series "+name+" is not recorded by any rule")
			}
			continue
		}
		family := name
		labels, ok := families[family]
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base := strings.TrimSuffix(name, suffix); base != name {
					if labels, ok = families[base]; ok {
						family = base
						break
					}
				}
			}
		}
		if !ok {
			problems = append(problems, "metric "+name+" is not exported by natsgate")
			continue
		}
		for _, lm := range matcherRe.FindAllStringSubmatch(sel, -1) {
			if l := lm[1]; !labels[l] && (l != "le" || family == name) {
				problems = append(problems, "metric "+family+" has no label "+l)
			}
		}
	}
	for _, m := range labelFnRe.FindAllStringSubmatch(e, -1) {
		if labels, ok := families[m[1]]; !ok || !labels[m[2]] {
			problems = append(problems, "label_values: "+m[1]+" has no label "+m[2])
		}
	}
	return problems
}

// TestCheckExpr shows that the check above finds what it is for.
func TestCheckExpr(t *testing.T) {
	families := map[string]map[string]bool{
		"natsgate_http_request_duration_seconds": {"route": true, "backend": true, "method": true, "le": true},
		"natsgate_http_requests_total":           {"route": true, "code": true},
	}
	recorded := map[string]bool{"route:natsgate_x:rate5m": true}
	for _, tc := range []struct {
		expr     string
		problems int
	}{
		{`sum(rate(natsgate_http_requests_total{route=~"$route", code=~"5.."}[5m]))`, 0},
		{`histogram_quantile(0.5, sum by (le) (rate(natsgate_http_request_duration_seconds_bucket{backend="nats"}[1m])))`, 0},
		{`route:natsgate_x:rate5m > 1`, 0},
		{`label_values(natsgate_http_requests_total, route)`, 0},
		{`rate(natsgate_http_request_total[5m])`, 1},                   // misspelt
		{`rate(natsgate_http_requests_total{path="/x"}[5m])`, 1},       // no such label
		{`natsgate_http_request_duration_seconds_bucket{le="0.1"}`, 0}, // le on a bucket
		{`route:natsgate_y:rate5m`, 1},                                 // not recorded
		{`label_values(natsgate_http_requests_total, subject)`, 1},
	} {
		if got := checkExpr(tc.expr, families, recorded); len(got) != tc.problems {
			t.Errorf("%s: %d problems %q, want %d", tc.expr, len(got), got, tc.problems)
		}
	}
}

// TestComposeFiles checks what docker-compose.yml relies on: natsgate's
// config loads and listens beyond loopback, and every file it mounts is
// there.
func TestComposeFiles(t *testing.T) {
	data, err := os.ReadFile(composeConfig)
	if err != nil {
		t.Fatal(err)
	}
	table, err := routes.Load(composeConfig, data, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("compose config: %v", err)
	}
	if table.Config.HTTP.Listen != "0.0.0.0:8080" || table.Config.Admin.Listen != "0.0.0.0:9090" || table.Config.NATS.URL != "nats://nats:4222" {
		t.Errorf("compose config listens on %s and %s, NATS %s; want 0.0.0.0:8080, 0.0.0.0:9090, nats://nats:4222",
			table.Config.HTTP.Listen, table.Config.Admin.Listen, table.Config.NATS.URL)
	}
	b, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
			Command any      `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	for _, want := range []string{"nats", "natsgate", "worker", "legacy", "prometheus", "grafana"} {
		if _, ok := compose.Services[want]; !ok {
			t.Errorf("docker-compose.yml has no %s service", want)
		}
	}
	mounts := 0
	for name, svc := range compose.Services {
		for _, v := range svc.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if !strings.HasPrefix(src, ".") {
				continue
			}
			mounts++
			if _, err := os.Stat(filepath.Join(filepath.Dir(composeFile), src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}
	if mounts < 3 {
		t.Errorf("found %d mounts of repository files, want the Prometheus and Grafana ones", mounts)
	}
	if cmd := fmt.Sprint(compose.Services["natsgate"].Command); !strings.Contains(cmd, "/etc/natsgate/compose/natsgate.yaml") {
		t.Errorf("natsgate's command %s does not serve configs/compose/natsgate.yaml (the image has configs/ at /etc/natsgate)", cmd)
	}
}

// TestGrafanaDashboard checks the dashboard's shape as Grafana reads it:
// unique panel ids, panels inside the 24-column grid, each query with its
// own refId and the datasource variable, and the route variable feeding
// the per-route panels.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(grafanaFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr       string         `json:"expr"`
		RefID      string         `json:"refId"`
		Datasource map[string]any `json:"datasource"`
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID      int                      `json:"id"`
			Type    string                   `json:"type"`
			Title   string                   `json:"title"`
			Repeat  string                   `json:"repeat"`
			Targets []target                 `json:"targets"`
			GridPos struct{ X, Y, W, H int } `json:"gridPos"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("uid %q, title %q: both are needed to provision it", dash.UID, dash.Title)
	}
	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["route"] != "query" {
		t.Errorf("template variables %v, want datasource and route", vars)
	}
	ids := map[int]bool{}
	repeated := 0
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Title == "" || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: position %+v outside the grid, or no title", p.ID, p.Title, p.GridPos)
		}
		if p.Repeat != "" {
			repeated++
			if p.Repeat != "route" {
				t.Errorf("panel %q repeats over %q", p.Title, p.Repeat)
			}
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: query %q with refId %q (empty or repeated)", p.Title, tg.Expr, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource["uid"] != "${datasource}" {
				t.Errorf("panel %q: datasource %v, want the ${datasource} variable", p.Title, tg.Datasource)
			}
		}
	}
	if repeated < 2 {
		t.Errorf("%d panels repeat per route, want the latency and hop panels", repeated)
	}

	// Each of these rows has a panel charting each of its metrics; a
	// panel belongs to the row above it.
	rows := map[string][]string{
		"Rollouts": {"natsgate_rollout_step", "natsgate_rollout_decisions_total"},
	}
	charted := map[string]map[string]bool{}
	row := ""
	for _, p := range dash.Panels {
		if p.Type == "row" {
			row = p.Title
			charted[row] = map[string]bool{}
			continue
		}
		for _, tg := range p.Targets {
			for _, m := range selectorRe.FindAllStringSubmatch(tg.Expr, -1) {
				if charted[row] != nil {
					charted[row][m[1]] = true
				}
			}
		}
	}
	for title, metrics := range rows {
		if charted[title] == nil {
			t.Errorf("no %q row", title)
			continue
		}
		for _, m := range metrics {
			if !charted[title][m] {
				t.Errorf("row %q has no panel charting %s", title, m)
			}
		}
	}
}
