package metrics

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// registered is every metric New registers: its type and label names, read
// from the typed fields of Metrics and their descriptions, so that a metric
// is found whether or not it has a series yet.
func registered(t *testing.T) map[string]docMetric {
	t.Helper()
	m := New(prometheus.NewRegistry())
	descRe := regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^}]*)\}\}$`)
	out := map[string]docMetric{}
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		var typ string
		switch c.(type) { // Gauge first: a gauge has every method of a Counter
		case *prometheus.GaugeVec, prometheus.Gauge:
			typ = "gauge"
		case *prometheus.CounterVec, prometheus.Counter:
			typ = "counter"
		case *prometheus.HistogramVec:
			typ = "histogram"
		default:
			t.Fatalf("Metrics.%s: a %T, which this test does not know", v.Type().Field(i).Name, c)
		}
		descs := make(chan *prometheus.Desc, 4)
		c.Describe(descs)
		close(descs)
		for d := range descs {
			sub := descRe.FindStringSubmatch(d.String())
			if sub == nil {
				t.Fatalf("cannot read %s", d)
			}
			var labels []string
			if sub[2] != "" {
				labels = strings.Split(sub[2], ",")
			}
			sort.Strings(labels)
			out[sub[1]] = docMetric{typ: typ, labels: labels}
		}
	}
	if len(out) < 20 {
		t.Fatalf("found %d metrics; the fields of Metrics did not read as expected", len(out))
	}
	return out
}

// docMetric is one metric as a table row states it: its type, its label
// names and, where the row lists them, a label's values.
type docMetric struct {
	typ    string
	labels []string
	values map[string][]string // label -> the values the row lists
}

// operationsTable reads the metrics table of docs/operations.md: the rows
// whose first cell is a natsgate_ metric.
func operationsTable(t *testing.T) map[string]docMetric {
	t.Helper()
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rowRe := regexp.MustCompile("^\\| `(natsgate_[a-z_]+)` \\| ([a-z]+) \\|([^|]*)\\|")
	labelRe := regexp.MustCompile(`^([a-z_]+)(?: \(([^)]*)\))?$`)
	rows := map[string]docMetric{}
	for _, line := range strings.Split(string(doc), "\n") {
		sub := rowRe.FindStringSubmatch(line)
		if sub == nil {
			continue
		}
		if _, dup := rows[sub[1]]; dup {
			t.Errorf("docs/operations.md: %s has two rows", sub[1])
		}
		row := docMetric{typ: sub[2], values: map[string][]string{}}
		// Labels are "route, kind (a, b, c), upstream": split on the
		// commas outside parentheses.
		cell, depth, start := strings.TrimSpace(sub[3]), 0, 0
		var parts []string
		for i, r := range cell + "," {
			switch {
			case r == '(':
				depth++
			case r == ')':
				depth--
			case r == ',' && depth == 0:
				parts = append(parts, strings.TrimSpace(cell[start:min(i, len(cell))]))
				start = i + 1
			}
		}
		for _, p := range parts {
			if p == "" {
				continue
			}
			l := labelRe.FindStringSubmatch(p)
			if l == nil {
				t.Errorf("docs/operations.md: %s: cannot read the label %q", sub[1], p)
				continue
			}
			row.labels = append(row.labels, l[1])
			if l[2] != "" {
				for _, v := range strings.Split(l[2], ",") {
					row.values[l[1]] = append(row.values[l[1]], strings.TrimSpace(v))
				}
			}
		}
		sort.Strings(row.labels)
		rows[sub[1]] = row
	}
	if len(rows) < 20 {
		t.Fatalf("docs/operations.md: found %d metric rows; the table did not read as expected", len(rows))
	}
	return rows
}

// TestOperationsMetricsTableIsWhatIsRegistered holds the metrics table of
// docs/operations.md to the code: every metric New registers has a row,
// every row names a registered metric with its type and label names, and
// where a row lists a label's values they are the values natsgate uses.
// Dashboards and alerts are written from that table.
func TestOperationsMetricsTableIsWhatIsRegistered(t *testing.T) {
	reg, rows := registered(t), operationsTable(t)
	for name, r := range reg {
		row, ok := rows[name]
		if !ok {
			t.Errorf("docs/operations.md: no row for %s (%s, labels %v)", name, r.typ, r.labels)
			continue
		}
		if row.typ != r.typ {
			t.Errorf("docs/operations.md: %s is a %s, the row says %s", name, r.typ, row.typ)
		}
		if !slices.Equal(row.labels, r.labels) {
			t.Errorf("docs/operations.md: %s has labels %v, the row says %v", name, r.labels, row.labels)
		}
	}
	for name := range rows {
		if _, ok := reg[name]; !ok {
			t.Errorf("docs/operations.md: a row for %s, which is not registered", name)
		}
	}
	stages := []string{string(routes.Legacy), string(routes.Shadow), string(routes.Canary), string(routes.NATS)}
	known := map[string]map[string][]string{
		"natsgate_nats_errors_total":        {"kind": natsErrorKinds},
		"natsgate_upstream_errors_total":    {"kind": upstreamErrorKinds},
		"natsgate_shadow_comparisons_total": {"result": shadowResults},
		"natsgate_config_reloads_total":     {"result": {ReloadOK, ReloadError}},
		"natsgate_rejected_requests_total":  {"reason": {RejectedInflightLimit}},
		"natsgate_routes":                   {"stage": stages},
	}
	for name, labels := range known {
		for label, want := range labels {
			got := rows[name].values[label]
			if !slices.Equal(sorted(got), sorted(want)) {
				t.Errorf("docs/operations.md: %s{%s} takes %v, the row says %v", name, label, want, got)
			}
		}
	}
}

// TestDocsNameOnlyRegisteredMetrics checks every natsgate_ name in
// README.md and docs/*.md: each is a registered metric (or one of a
// histogram's _bucket, _sum and _count series) or the default name of one
// of natsgate's key-value buckets, so that no query or alert copied from
// the docs reads a metric that does not exist.
func TestDocsNameOnlyRegisteredMetrics(t *testing.T) {
	reg := registered(t)
	buckets := map[string]bool{
		routes.DefaultCutoverBucket:      true,
		routes.DefaultFleetLeaderBucket:  true,
		routes.DefaultFleetRolloutBucket: true,
	}
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md")
	nameRe := regexp.MustCompile(`\bnatsgate_[a-z_]*[a-z]`)
	seen := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range nameRe.FindAllString(string(b), -1) {
			seen++
			if _, ok := reg[name]; ok || buckets[name] {
				continue
			}
			if base, ok := histogramSeries(name); ok && reg[base].typ == "histogram" {
				continue
			}
			t.Errorf("%s names %s, which natsgate does not register", strings.TrimPrefix(f, "../"), name)
		}
	}
	if seen < 20 {
		t.Fatalf("found %d metric names in the docs; they did not read as expected", seen)
	}
}

// histogramSeries gives the histogram a _bucket, _sum or _count series
// belongs to.
func histogramSeries(name string) (string, bool) {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, s); ok {
			return base, true
		}
	}
	return "", false
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}
