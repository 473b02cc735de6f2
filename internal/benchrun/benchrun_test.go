package benchrun

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in as the memory check's natsgate
// child, as the benchmark command does.
func TestMain(m *testing.M) {
	if IsChild() {
		if err := ServeChild(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRunWritesEverything runs every part of the benchmark for a moment and
// checks what it writes, not how fast anything was: timings are never a
// test's verdict.
func TestRunWritesEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and a child process")
	}
	dir := t.TempDir()
	rep, err := Run(context.Background(), Options{
		OutDir:             dir,
		Concurrency:        []int{1, 4},
		Duration:           100 * time.Millisecond,
		Warmup:             20 * time.Millisecond,
		Rounds:             2,
		ProfileDuration:    100 * time.Millisecond,
		ProfileConcurrency: 2,
		ProfileScenarios:   "D",
		IdleConns:          50,
		InFlight:           20,
		Progress:           testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Skipped) > 0 {
		t.Fatalf("scenarios skipped: %v", rep.Skipped)
	}
	for _, sc := range Scenarios {
		for _, c := range []int{1, 4} {
			cell := rep.Cell(sc.Key, c)
			if cell == nil || cell.Result.Requests == 0 || cell.Result.Errors > 0 || len(cell.rounds) != 2 {
				t.Errorf("%s at %d: %+v", sc.Key, c, cell)
			}
		}
	}
	// Held requests add no subscription: replies share natsgate's one inbox.
	if ic := rep.Inbox; ic == nil || ic.Connections != 1 || ic.Subs != ic.SubsBefore || ic.Answered != 20 {
		t.Errorf("inbox check: %+v", rep.Inbox)
	}
	if mc := rep.Memory; mc == nil || mc.Opened != 50 || mc.RSSAfter <= 0 {
		t.Errorf("memory check: %+v", rep.Memory)
	}
	for _, f := range []string{"results.md", "results.json", "plot.svg", "cpu-D.pprof", "allocs-D.pprof", "allocs-D-base.pprof", "heap-idle-conns.pprof"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	md := rep.Markdown()
	for _, want := range []string{"| 4 | D natsgate request route, as shipped |", "| 4 | G natsgate request route, access log off |", "D/C req/s (≥ 0.95)", "D/G req/s (≥ 0.98)", "GOMAXPROCS=", "In-flight requests: 20", "Idle keep-alive connections: 50"} {
		if !strings.Contains(md, want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	if svg := rep.SVG(); !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, "polyline") {
		t.Errorf("plot.svg: %.200s", svg)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestTargetsPairCellsByRound checks that a target compares the two
// scenarios round by round and takes the median of those ratios: a round
// in which one scenario had the machine to itself moves one ratio, not the
// verdict, where the ratio of the two medians would follow it.
func TestTargetsPairCellsByRound(t *testing.T) {
	cell := func(key string, rps, p99, cpu []float64) *Cell {
		return &Cell{Scenario: key, Concurrency: 64, rounds: rps, roundP99: p99, roundCPU: cpu}
	}
	// D is 0.9 of C's req/s, 1.2 of its p99 and 1.25 of its CPU a request
	// in rounds 1 and 3; round 2 is an outlier in D's favour. The medians'
	// ratios would be 1.35, 0.6 and 0.62.
	rep := &Report{Cells: map[string]map[int]*Cell{
		"C": {64: cell("C", []float64{10000, 20000, 30000}, []float64{1, 2, 3}, []float64{100, 50, 40})},
		"D": {64: cell("D", []float64{9000, 30000, 27000}, []float64{1.2, 1, 3.6}, []float64{125, 100, 50})},
	}}
	for _, tc := range []struct {
		target Target
		want   float64
		met    bool
	}{
		{Targets[0], 0.9, false}, // D/C req/s
		{Targets[1], 1.2, false}, // D/C p99
	} {
		got, met, ok := tc.target.Ratio(rep, 64)
		if !ok || math.Abs(got-tc.want) > 1e-9 || met != tc.met {
			t.Errorf("%s = %v (met %v, ok %v), want %v (met %v)", tc.target.Name, got, met, ok, tc.want, tc.met)
		}
	}
	if got, _, ok := Targets[0].CPURatio(rep, 64); !ok || math.Abs(got-0.8) > 1e-9 {
		t.Errorf("D/C by CPU = %v (ok %v), want 0.8", got, ok)
	}
	if got, _, ok := Targets[2].Ratio(rep, 64); ok {
		t.Errorf("D/G without G = %v, want no ratio", got)
	}
}

// TestRoundsAlternateTheirOrder checks that every second round measures
// the scenarios in reverse, so that no scenario is always measured first.
func TestRoundsAlternateTheirOrder(t *testing.T) {
	keys := func(scs []Scenario) (s string) {
		for _, sc := range scs {
			s += sc.Key
		}
		return s
	}
	scs := []Scenario{{Key: "C"}, {Key: "D"}, {Key: "G"}}
	for round, want := range map[int]string{1: "CDG", 2: "GDC", 3: "CDG", 4: "GDC"} {
		if got := keys(roundOrder(scs, round)); got != want {
			t.Errorf("round %d: %s, want %s", round, got, want)
		}
	}
	if keys(scs) != "CDG" {
		t.Errorf("roundOrder changed its argument: %s", keys(scs))
	}
}
