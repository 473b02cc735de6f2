package routes_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// loadWithin runs Load, failing the test if it has not returned within d:
// a file that expands without bound would otherwise hold the test for
// minutes and gigabytes.
func loadWithin(t *testing.T, d time.Duration, file string, data []byte) (*routes.Table, error) {
	t.Helper()
	type result struct {
		tb  *routes.Table
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		tb, err := routes.Load(file, data, noEnv)
		done <- result{tb, err}
	}()
	select {
	case r := <-done:
		t.Logf("Load took %v", time.Since(start))
		return r.tb, r.err
	case <-time.After(d):
		t.Fatalf("Load(%s) still running after %v", file, d)
		return nil, nil
	}
}

// lineOf returns the 1-based line of the first occurrence of s in text.
func lineOf(t *testing.T, text, s string) int {
	t.Helper()
	i := strings.Index(text, s)
	if i < 0 {
		t.Fatalf("%q not in the file", s)
	}
	return strings.Count(text[:i], "\n") + 1
}

// Files of a few hundred bytes whose aliases and merge keys expand to
// millions of nodes (or nest without end) are refused at once, naming the
// line of the alias that crosses the limit, instead of being walked.
func TestLoadRefusesAliasExpansion(t *testing.T) {
	tests := []struct {
		file  string
		line  string // text on the line the error must name
		route string
		field string
		msg   string
	}{
		// Each upstream merges nine copies of the one before: u7 stands for
		// 9^7 copies of u0, and every walk of it repeats the "timout" problem.
		// The second *u4 on u5's line takes the count past the limit.
		{"merge-keys.yaml", "u5: &u5", "", "upstreams.u5", "past 100000 YAML nodes"},
		// Lists of aliases of lists, where the schema does not look today:
		// the bound is on the document, not on what the schema reads.
		{"sequences.yaml", "x-lol5: &s5", "", "x-lol5[0]", "past 100000 YAML nodes"},
		// Thirty merges deep: little to expand, but past MaxAliasDepth.
		{"deep.yaml", "d21: &d21", "", "upstreams.d21", "nests aliases 21 deep"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "expansion", tt.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = loadWithin(t, 10*time.Second, path, data)
			if !errors.Is(err, routes.ErrInvalidConfig) {
				t.Fatalf("Load = %v, want ErrInvalidConfig", err)
			}
			errs := fieldErrors(t, err)
			want := wantError{lineOf(t, string(data), tt.line), tt.route, tt.field, tt.msg}
			got := findError(errs, want)
			if got == nil {
				t.Fatalf("missing %v in:\n%.2000v", want, err)
			}
			if got.Line != want.line {
				t.Errorf("%v reported at line %d", want, got.Line)
			}
			if len(errs) != 1 {
				t.Errorf("got %d problems, want the one: %.2000v", len(errs), err)
			}
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("%s:%d: ", path, want.line)) {
				t.Errorf("error %q does not start with file:line", err)
			}
		})
	}
}

// Routes sharing settings through anchors and merge keys, and a file near
// the limit, still load.
func TestLoadAllowsSharedBlocks(t *testing.T) {
	shared := `defaults: &defaults
  timeout: 2s
upstreams:
  legacy: &legacy
    url: http://127.0.0.1:8080
    breaker: &breaker {min_requests: 10, open_for: 10s}
  legacy-b:
    <<: *legacy
    url: http://127.0.0.1:8081
routes:
  - name: a
    path: /a
    upstream: legacy
    nats: &nats {subject: a, timeout: 1s, pattern: request}
  - name: b
    path: /b
    upstream: legacy-b
    nats:
      <<: *nats
      subject: b
  - name: c
    path: /c
    nats: {<<: [*nats], subject: c}
`
	tb, err := loadWithin(t, 10*time.Second, "shared.yaml", []byte(shared))
	if err != nil {
		t.Fatal(err)
	}
	if r := tb.Route("c"); r == nil || r.Subject.String() != "c" || r.Timeout != time.Second {
		t.Errorf("route c = %+v, want subject c, timeout 1s", r)
	}

	// Two thousand routes, each merging a shared block that merges another:
	// a large real file, still well inside the limit.
	var b strings.Builder
	b.WriteString("x-base: &base {pattern: request}\nx-nats: &nats {<<: *base, timeout: 1s}\nroutes:\n")
	for i := range 2000 {
		fmt.Fprintf(&b, "  - name: r%d\n    path: /r%d\n    nats: {<<: *nats, subject: r%d}\n", i, i, i)
	}
	_, err = loadWithin(t, 30*time.Second, "large.yaml", []byte(b.String()))
	// x-base and x-nats are unknown top-level fields, reported as such;
	// nothing else is wrong with the file.
	for _, e := range fieldErrors(t, err) {
		if !strings.HasPrefix(e.Field, "x-") {
			t.Errorf("large file: %v", e)
		}
	}
}

// A report stays a few KiB however many problems the file has and however
// long the values it quotes: a value can be anything an alias or a
// variable put there, and the report becomes one log line on a reload.
func TestProblemReportIsBounded(t *testing.T) {
	long := strings.Repeat("x", 10_000)
	var b strings.Builder
	b.WriteString("defaults:\n  timeout: ${BIG}\nroutes:\n")
	const n = 100
	for i := range n {
		// Two problems a route: the path lacks its slash, the method is unknown.
		fmt.Fprintf(&b, "  - name: r%03d%s\n    method: M%s\n    path: p%s\n    nats: {subject: a%d}\n", i, long, long, long, i)
	}
	_, err := routes.Load("many.yaml", []byte(b.String()), env(map[string]string{"BIG": "1" + long}))
	if !errors.Is(err, routes.ErrInvalidConfig) {
		t.Fatalf("Load = %.500v, want ErrInvalidConfig", err)
	}
	report := err.Error()
	if len(report) > 8<<10 {
		t.Errorf("the report is %d bytes, want at most 8 KiB; it starts:\n%.1000s", len(report), report)
	}
	lines := strings.Split(report, "\n")
	if len(lines) != routes.MaxProblems+1 {
		t.Errorf("the report has %d lines, want %d problems and a count of the rest", len(lines), routes.MaxProblems)
	}
	total := 1 + 2*n
	if want := fmt.Sprintf("many.yaml: and %d more problems", total-routes.MaxProblems); lines[len(lines)-1] != want {
		t.Errorf("last line %.300q, want %q", lines[len(lines)-1], want)
	}
	// The first problems in file order are the ones shown, each quoting a
	// clipped value.
	if !strings.HasPrefix(lines[0], "many.yaml:2: defaults.timeout: \"1xxx") || !strings.Contains(lines[0], "…") {
		t.Errorf("first line %.300q, want the timeout's clipped value", lines[0])
	}
	if !strings.Contains(lines[1], "many.yaml:5: route \"r000xxx") || !strings.Contains(lines[1], "unknown method \"Mxxx") {
		t.Errorf("second line %.300q, want r000's method, clipped", lines[1])
	}
	for _, l := range lines {
		if len(l) > 512 {
			t.Errorf("a problem of %d bytes: %.200q…", len(l), l)
		}
	}
	// Reports merged from Parse and Compile keep one count.
	if got := len(fieldErrors(t, err)); got != routes.MaxProblems+1 {
		t.Errorf("%d errors joined, want %d", got, routes.MaxProblems+1)
	}
}
