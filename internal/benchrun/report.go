package benchrun

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Target is one of natsgate's performance targets, checked at each
// concurrency from the run's own numbers.
type Target struct {
	Name   string // the ratio, like "D/C req/s"
	Goal   string // like "≥ 1.0"
	limit  float64
	atMost bool
	a, b   string
	p99    bool
}

// Targets are the ratio targets, in the order of the table.
var Targets = []Target{
	{Name: "D/C req/s", Goal: "≥ 0.95", limit: 0.95, a: "D", b: "C"},
	{Name: "D/C p99", Goal: "≤ 1.1", limit: 1.1, atMost: true, a: "D", b: "C", p99: true},
	{Name: "D/G req/s", Goal: "≥ 0.98", limit: 0.98, a: "D", b: "G"},
	{Name: "D/B req/s", Goal: "≥ 2.0", limit: 2.0, a: "D", b: "B"},
	{Name: "E/B req/s", Goal: "≥ 1.0", limit: 1.0, a: "E", b: "B"},
	{Name: "F/E p99", Goal: "≤ 1.05", limit: 1.05, atMost: true, a: "F", b: "E", p99: true},
}

// Ratio computes a target's ratio at one concurrency: the median, over
// the rounds, of the ratio of the two scenarios' cells in the same round
// (req/s, or p99 for a latency target). The two cells of a round ran
// within seconds of each other, so the pair shares the machine's speed of
// the moment, which on a shared virtual machine moves by tens of percent
// between rounds. ok is false when a scenario is missing.
func (t Target) Ratio(rep *Report, conc int) (ratio float64, met, ok bool) {
	a, b := rep.Cell(t.a, conc), rep.Cell(t.b, conc)
	if a == nil || b == nil {
		return 0, false, false
	}
	if t.p99 {
		ratio = pairedRatio(a.roundP99, b.roundP99)
	} else {
		ratio = pairedRatio(a.rounds, b.rounds)
	}
	return ratio, t.meets(ratio), true
}

// CPURatio is a throughput target's ratio computed from the CPU each
// request costs (b's over a's, paired by round as in Ratio): the
// throughput ratio the two would show given the same share of the CPU. On
// a machine shared with other work the share each cell gets varies; the
// work per request does much less.
func (t Target) CPURatio(rep *Report, conc int) (ratio float64, met, ok bool) {
	a, b := rep.Cell(t.a, conc), rep.Cell(t.b, conc)
	if t.p99 || a == nil || b == nil || len(a.roundCPU) == 0 {
		return 0, false, false
	}
	ratio = pairedRatio(b.roundCPU, a.roundCPU)
	return ratio, t.meets(ratio), true
}

// meets reports whether a ratio is on the goal's side of its limit.
func (t Target) meets(ratio float64) bool {
	if t.atMost {
		return ratio <= t.limit
	}
	return ratio >= t.limit
}

// pairedRatio is the median of num[i]/den[i] over the rounds both have a
// non-zero value for.
func pairedRatio(num, den []float64) float64 {
	var r []float64
	for i := range min(len(num), len(den)) {
		if den[i] > 0 && num[i] > 0 {
			r = append(r, num[i]/den[i])
		}
	}
	return median(r)
}

func (rep *Report) write(dir string) error {
	md := rep.Markdown()
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "plot.svg"), []byte(rep.SVG()), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep.summary(), "", "  ")
	if err != nil {
		return err
	}
	rep.OutputFile = filepath.Join(dir, "results.md")
	return os.WriteFile(filepath.Join(dir, "results.json"), js, 0o644)
}

// Markdown is the run's tables, as results.md holds them.
func (rep *Report) Markdown() string {
	var b strings.Builder
	m := rep.Machine
	o := rep.Options
	fmt.Fprintf(&b, "Run %s, %s in all. Machine: %s, %d CPUs, GOMAXPROCS=%d, %s %s, kernel %s, load average at start %s.\n",
		rep.Started.UTC().Format("2006-01-02 15:04 MST"), rep.Elapsed.Round(time.Second), m.CPU, m.NumCPU, m.GOMAXPROCS, m.GoVersion, m.OS, m.Kernel, m.Load)
	fmt.Fprintf(&b, "Closed loop at fixed concurrency; %v measured per cell in each of %d rounds (after %v warm-up), scenarios interleaved (in reverse order every second round); req/s is the median of a cell's rounds, latencies are over all its requests. "+
		"The load generator, nats-server, %d workers (one queue group), the legacy service and the thing measured share one process and every CPU.\n\n",
		o.Duration, o.Rounds, o.Warmup, o.Workers)

	b.WriteString("| conc | scenario | req/s | p50 | p99 | p99.9 | max | errors | CPU µs/req | allocs/req | wait µs/req |\n")
	b.WriteString("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, conc := range o.Concurrency {
		for _, sc := range rep.Scenarios {
			c := rep.Cell(sc.Key, conc)
			if c == nil {
				continue
			}
			h := c.Result.Latency
			fmt.Fprintf(&b, "| %d | %s %s | %.0f | %s | %s | %s | %s | %d | %.1f | %.0f | %.1f |\n", conc, sc.Key, sc.Name, c.Throughput(),
				fmtDur(h.Quantile(0.5)), fmtDur(h.Quantile(0.99)), fmtDur(h.Quantile(0.999)), fmtDur(h.Max()), c.Result.Errors,
				float64(c.CPUPerReq)/1e3, c.AllocsPerReq, float64(c.WaitPerReq)/1e3)
		}
	}
	b.WriteString("\nCPU µs/req and allocs/req are the whole process's (load generator, nats-server, workers, legacy service included) per request sent: compare them across rows. " +
		"wait µs/req is how long its goroutines were runnable but waited for a CPU (the runtime's /sched/latencies:seconds), summed over all of them, per request sent.\n")
	for k, why := range rep.Skipped {
		fmt.Fprintf(&b, "\nScenario %s was skipped: %s\n", k, why)
	}

	b.WriteString("\nTargets, each the median over the rounds of the two cells' ratio in the same round, from req/s and p99; in brackets, the throughput ratios from CPU time per request (what the two would do with the same CPU share):\n\n| conc |")
	for _, t := range Targets {
		fmt.Fprintf(&b, " %s (%s) |", t.Name, t.Goal)
	}
	b.WriteString("\n| ---: |" + strings.Repeat(" ---: |", len(Targets)) + "\n")
	mark := func(r float64, met bool) string {
		if met {
			return fmt.Sprintf("%.2f ✓", r)
		}
		return fmt.Sprintf("%.2f ✗", r)
	}
	for _, conc := range o.Concurrency {
		fmt.Fprintf(&b, "| %d |", conc)
		for _, t := range Targets {
			r, met, ok := t.Ratio(rep, conc)
			if !ok {
				b.WriteString(" n/a |")
				continue
			}
			b.WriteString(" " + mark(r, met))
			if cr, cmet, ok := t.CPURatio(rep, conc); ok {
				b.WriteString(" (" + mark(cr, cmet) + ")")
			}
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}

	if ic := rep.Inbox; ic != nil {
		fmt.Fprintf(&b, "\nIn-flight requests: %d held at once by a worker that waits; natsgate's NATS connections: %d, subscriptions on them: %d during (%d before), %v; %d answered 200 once released.\n",
			ic.InFlight, ic.Connections, ic.Subs, ic.SubsBefore, ic.Subjects, ic.Answered)
	}
	if mc := rep.Memory; mc != nil {
		fmt.Fprintf(&b, "\nIdle keep-alive connections: %d open to a natsgate child process (each answered once, then idle). "+
			"RSS %.1f MiB before; %.1f MiB right after opening them (%.1f MiB for the connections, %.1f KiB each); "+
			"%.1f MiB once a GC has returned free memory to the OS, as an idle process does within minutes (%.1f MiB, %.1f KiB each). "+
			"Go heap in use: %.1f MiB before, %.1f MiB after, %.1f MiB settled.\n",
			mc.Opened, mib(mc.RSSBefore), mib(mc.RSSAfter), mib(mc.RSSAfter-mc.RSSBefore), float64(mc.PerConn())/1024,
			mib(mc.RSSSettled), mib(mc.RSSSettled-mc.RSSBefore), float64(mc.PerConnSettled())/1024,
			mib(mc.HeapBefore), mib(mc.HeapAfter), mib(mc.HeapSettled))
	}
	if len(rep.Profiles) > 0 {
		b.WriteString("\nProfiles (c=" + fmt.Sprint(o.ProfileConcurrency) + "): ")
		names := make([]string, len(rep.Profiles))
		for i, p := range rep.Profiles {
			names[i] = filepath.Base(p)
		}
		b.WriteString(strings.Join(names, ", "))
		var counts []string
		for _, sc := range rep.Scenarios {
			if n, ok := rep.ProfileRequests[sc.Key]; ok {
				counts = append(counts, fmt.Sprintf("%s %d", sc.Key, n))
			}
		}
		b.WriteString(". Requests each scenario's profiles cover (to turn samples into time per request): " + strings.Join(counts, ", "))
		b.WriteString(". Allocations made during a profile: `go tool pprof -sample_index=alloc_space -base allocs-D-base.pprof allocs-D.pprof`; lock contention likewise from `mutex-D.pprof` and its base.\n")
	}
	return b.String()
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

type cellSummary struct {
	Scenario     string  `json:"scenario"`
	Concurrency  int     `json:"concurrency"`
	ReqPerSec    float64 `json:"req_per_sec"`
	P50us        float64 `json:"p50_us"`
	P99us        float64 `json:"p99_us"`
	P999us       float64 `json:"p999_us"`
	MaxUs        float64 `json:"max_us"`
	Requests     uint64  `json:"requests"`
	Errors       uint64  `json:"errors"`
	FirstError   string  `json:"first_error,omitempty"`
	CPUusPerReq  float64 `json:"cpu_us_per_req"`
	AllocsPerReq float64 `json:"allocs_per_req"`
	WaitUsPerReq float64 `json:"wait_us_per_req"`
}

func (rep *Report) summary() any {
	var cells []cellSummary
	for _, sc := range rep.Scenarios {
		for _, conc := range rep.Options.Concurrency {
			c := rep.Cell(sc.Key, conc)
			if c == nil {
				continue
			}
			h := c.Result.Latency
			us := func(d time.Duration) float64 { return float64(d) / 1e3 }
			cells = append(cells, cellSummary{sc.Key, conc, c.Throughput(), us(h.Quantile(0.5)), us(h.Quantile(0.99)), us(h.Quantile(0.999)), us(h.Max()),
				c.Result.Requests, c.Result.Errors, c.Result.FirstError, float64(c.CPUPerReq) / 1e3, c.AllocsPerReq, float64(c.WaitPerReq) / 1e3})
		}
	}
	return map[string]any{"started": rep.Started, "machine": rep.Machine, "cells": cells, "inbox": rep.Inbox, "memory": rep.Memory, "skipped": rep.Skipped, "profile_requests": rep.ProfileRequests}
}

var colors = map[string]string{"A": "#7f7f7f", "B": "#ff7f0e", "C": "#1f77b4", "D": "#2ca02c", "E": "#9467bd", "F": "#d62728", "H": "#8c564b", "I": "#e377c2"}

// SVG draws throughput and p99 against concurrency, one line per scenario.
func (rep *Report) SVG() string {
	const w, h, panelW, gap, top, bottom, left = 1300, 470, 340, 85, 50, 100, 70
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" text-anchor="middle">natsgate side by side: %s, GOMAXPROCS=%d, %s</text>`+"\n",
		w/2, xmlEscape(rep.Machine.CPU), rep.Machine.GOMAXPROCS, rep.Started.UTC().Format("2006-01-02"))
	concs := rep.Options.Concurrency
	plotH := float64(h - top - bottom)

	panel := func(x0 int, title string, value func(*Cell) float64, logY bool, unit func(float64) string) {
		var lo, hi float64 = math.Inf(1), 0
		for _, sc := range rep.Scenarios {
			for _, conc := range concs {
				if c := rep.Cell(sc.Key, conc); c != nil {
					v := value(c)
					lo, hi = math.Min(lo, v), math.Max(hi, v)
				}
			}
		}
		if hi <= 0 {
			return
		}
		var ticks []float64
		var y func(float64) float64
		if logY {
			l0, l1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
			if l1 == l0 {
				l1++
			}
			y = func(v float64) float64 { return top + plotH*(1-(math.Log10(v)-l0)/(l1-l0)) }
			for e := l0; e <= l1; e++ {
				for _, m := range []float64{1, 2, 5} {
					if v := m * math.Pow(10, e); v <= math.Pow(10, l1) {
						ticks = append(ticks, v)
					}
				}
			}
		} else {
			step := niceStep(hi / 5)
			top2 := math.Ceil(hi/step) * step
			y = func(v float64) float64 { return top + plotH*(1-v/top2) }
			for v := 0.0; v <= top2+step/2; v += step {
				ticks = append(ticks, v)
			}
		}
		x := func(i int) float64 {
			if len(concs) == 1 {
				return float64(x0) + panelW/2
			}
			return float64(x0) + 20 + float64(i)*(panelW-40)/float64(len(concs)-1)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" text-anchor="middle">%s</text>`+"\n", x0+panelW/2, top-10, title)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%.0f" fill="none" stroke="#333"/>`+"\n", x0, top, panelW, plotH)
		for _, t := range ticks {
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
				x0, x0+panelW, y(t), y(t), x0-5, y(t)+4, unit(t))
		}
		for i, conc := range concs {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d</text>`+"\n", x(i), top+plotH+18, conc)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="middle">concurrency (closed loop)</text>`+"\n", x0+panelW/2, top+plotH+38)
		for _, sc := range rep.Scenarios {
			var pts []string
			for i, conc := range concs {
				if c := rep.Cell(sc.Key, conc); c != nil {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(value(c))))
				}
			}
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), colors[sc.Key])
			for _, p := range pts {
				xy := strings.Split(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", xy[0], xy[1], colors[sc.Key])
			}
		}
	}
	panel(left, "throughput (req/s, median of rounds; higher is better)", func(c *Cell) float64 { return c.Throughput() }, false,
		func(v float64) string { return fmt.Sprintf("%gk", v/1000) })
	panel(left+panelW+gap, "p99 latency (log scale; lower is better)", func(c *Cell) float64 { return float64(c.Result.Latency.Quantile(0.99)) }, true,
		tickDur)
	panel(left+2*(panelW+gap), "CPU per request, whole process (µs; lower is better)", func(c *Cell) float64 { return float64(c.CPUPerReq) / 1e3 }, false,
		func(v float64) string { return fmt.Sprintf("%g", v) })

	for i, sc := range rep.Scenarios {
		lx, ly := left+i*205, h-24
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="14" height="14" fill="%s"/><text x="%d" y="%d">%s  %s</text>`+"\n",
			lx, ly, colors[sc.Key], lx+20, ly+11, sc.Key, xmlEscape(sc.Name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// tickDur labels a latency axis tick: 500µs, 2ms, 1s.
func tickDur(v float64) string {
	switch {
	case v < 1e6:
		return fmt.Sprintf("%gµs", v/1e3)
	case v < 1e9:
		return fmt.Sprintf("%gms", v/1e6)
	}
	return fmt.Sprintf("%gs", v/1e9)
}

func niceStep(raw float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
