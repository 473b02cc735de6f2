package benchrun

import (
	"context"
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
