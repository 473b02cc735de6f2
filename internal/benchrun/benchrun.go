// Package benchrun is natsgate's side-by-side benchmark: in one process and
// one run it starts a nats-server, workers in a queue group and a legacy
// HTTP service on loopback, then measures, with the same closed-loop load
// generator and at each concurrency,
//
//	A  direct HTTP to the legacy service
//	B  net/http/httputil.ReverseProxy in front of it
//	C  a minimal HTTP-to-NATS bridge (one handler calling nc.Request)
//	D  natsgate, request route (metrics and breaker on)
//	E  natsgate, legacy route
//	F  natsgate, shadow route (legacy answers, a NATS copy in the background)
//
// and writes a Markdown table with the ratios the performance targets are
// stated in, an SVG plot, CPU and allocation profiles of natsgate, and the
// idle-connection memory and in-flight inbox checks.
//
// cmd/natsgate-bench is its command line.
package benchrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/natsgate/natsgate/internal/loadgen"
)

// Options configure a run. The zero value of a field takes its default.
type Options struct {
	// OutDir receives results.md, results.json, plot.svg and the profiles.
	// Default "bench-out".
	OutDir string
	// Concurrency levels, each a closed loop of that many clients.
	// Default 1, 16, 64, 256.
	Concurrency []int
	// Scenarios to run, letters A to G. Default all.
	Scenarios string
	// Duration measured per cell and round. Default 1.5s.
	Duration time.Duration
	// Warmup before each cell's measurement. Default 300ms.
	Warmup time.Duration
	// Rounds: the matrix runs this many times, scenarios interleaved (in
	// reverse order every second round), and each cell's rounds are
	// merged, so that a burst of noise from the shared machine does not
	// land on one scenario only. Default 6.
	Rounds int
	// Workers in the queue group. Default 2.
	Workers int
	// ProfileDuration is how long natsgate is profiled, per natsgate
	// scenario, at the profile concurrency, after the matrix. Default 4s;
	// negative: no profiles.
	ProfileDuration time.Duration
	// ProfileConcurrency is the concurrency profiled. Default 64.
	ProfileConcurrency int
	// ProfileScenarios are the scenarios profiled. Default "CDGEF": the
	// minimal bridge too, so natsgate's profile has one to be read against.
	ProfileScenarios string
	// IdleConns is the number of idle keep-alive connections of the memory
	// check. Default 10000; negative: skip the check.
	IdleConns int
	// InFlight is the number of requests the inbox check holds at once.
	// Default 1000; negative: skip the check.
	InFlight int
	// Progress receives a line per measured cell. Default os.Stderr.
	Progress io.Writer
}

func (o *Options) fill() {
	if o.OutDir == "" {
		o.OutDir = "bench-out"
	}
	if len(o.Concurrency) == 0 {
		o.Concurrency = []int{1, 16, 64, 256}
	}
	if o.Scenarios == "" {
		o.Scenarios = "ABCDGEFHI"
	}
	o.Scenarios = strings.ToUpper(o.Scenarios)
	if o.Duration <= 0 {
		o.Duration = 1500 * time.Millisecond
	}
	if o.Warmup <= 0 {
		o.Warmup = 300 * time.Millisecond
	}
	if o.Rounds <= 0 {
		o.Rounds = 6
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.ProfileDuration == 0 {
		o.ProfileDuration = 4 * time.Second
	}
	if o.ProfileConcurrency <= 0 {
		o.ProfileConcurrency = 64
	}
	if o.ProfileScenarios == "" {
		o.ProfileScenarios = "CDGEF"
	}
	o.ProfileScenarios = strings.ToUpper(o.ProfileScenarios)
	if o.IdleConns == 0 {
		o.IdleConns = 10000
	}
	if o.InFlight == 0 {
		o.InFlight = 1000
	}
	if o.Progress == nil {
		o.Progress = os.Stderr
	}
}

// Scenario is one thing measured.
type Scenario struct {
	Key  string // A to I
	Name string
	url  func(*rig) string
	// legacy scenarios must be answered by the legacy service.
	legacy bool
	// clients, when set, are the scenario's own (HTTPS ones); nil: the
	// shared plain-HTTP clients.
	clients func(*rig) loadgen.Clients
}

// Scenarios are the nine measured, in the order of the table.
var Scenarios = []Scenario{
	{Key: "A", Name: "direct HTTP to legacy", url: func(r *rig) string { return r.legacy.url + "/users/7" }},
	{Key: "B", Name: "httputil.ReverseProxy", url: func(r *rig) string { return r.proxy.url + "/users/7" }},
	{Key: "C", Name: "minimal HTTP→NATS bridge", url: func(r *rig) string { return r.bridge.url + "/users/7" }},
	{Key: "D", Name: "natsgate request route, as shipped", url: func(r *rig) string { return r.gwURL + "/users/7" }},
	{Key: "G", Name: "natsgate request route, access log off", url: func(r *rig) string { return r.quietURL + "/users/7" }},
	{Key: "E", Name: "natsgate legacy route", legacy: true, url: func(r *rig) string { return r.gwURL + "/legacy/users/7" }},
	{Key: "F", Name: "natsgate shadow route", legacy: true, url: func(r *rig) string { return r.gwURL + "/shadow/users/7" }},
	// H and I: G's request route over HTTPS (http.tls), so that the cost
	// of TLS, and of h2 beside HTTP/1.1, is a row of its own.
	{Key: "H", Name: "natsgate request route, HTTPS HTTP/1.1, log off", url: func(r *rig) string { return r.tls.url + "/users/7" },
		clients: func(r *rig) loadgen.Clients { return r.tls.h1 }},
	{Key: "I", Name: "natsgate request route, HTTPS h2, log off", url: func(r *rig) string { return r.tls.url + "/users/7" },
		clients: func(r *rig) loadgen.Clients { return r.tls.h2 }},
}

// clientsFor returns the clients scenario sc is measured with.
func clientsFor(sc Scenario, r *rig, shared loadgen.Clients) loadgen.Clients {
	if sc.clients != nil {
		return sc.clients(r)
	}
	return shared
}

// Cell is one scenario at one concurrency, all rounds merged.
type Cell struct {
	Scenario    string
	Concurrency int
	Result      *loadgen.Result
	// CPUPerReq and AllocsPerReq are process-wide (load generator, NATS
	// server, workers, legacy service and the thing measured), per request
	// sent including warm-up: their differences between scenarios are what
	// each scenario adds.
	CPUPerReq    time.Duration
	AllocsPerReq float64
	// WaitPerReq is how long the process's goroutines were runnable but
	// waited for a CPU, summed over all of them, per request sent: the
	// queueing for the two CPUs that work done beside a request (a shadow
	// copy's) costs that request.
	WaitPerReq time.Duration
	// rounds are each round's throughput (see Throughput), and roundP99
	// and roundCPU each round's p99 and CPU a request, in round order:
	// the targets pair them with another scenario's same round.
	rounds   []float64
	roundP99 []float64
	roundCPU []float64
	sent     uint64
	cpu      time.Duration
	wait     time.Duration
	mallocs  uint64
}

// Throughput is the median of the rounds' throughputs: a neighbour's burst
// of CPU on a shared machine then moves one round, not the figure.
func (c *Cell) Throughput() float64 { return median(c.rounds) }

// median is the middle of v, or the mean of its two middle values; 0 for
// none.
func median(v []float64) float64 {
	r := slices.Clone(v)
	slices.Sort(r)
	if n := len(r); n == 0 {
		return 0
	} else if n%2 == 1 {
		return r[n/2]
	} else {
		return (r[n/2-1] + r[n/2]) / 2
	}
}

// Report is a whole run.
type Report struct {
	Started   time.Time
	Elapsed   time.Duration
	Machine   Machine
	Options   Options
	Scenarios []Scenario
	Cells     map[string]map[int]*Cell // scenario key -> concurrency -> cell
	Skipped   map[string]string        // scenario key -> why
	Memory    *MemoryCheck
	Inbox     *InboxCheck
	Profiles  []string
	// ProfileRequests is how many requests each scenario's profiles cover,
	// to turn their samples into time per request.
	ProfileRequests map[string]uint64
	Notes           []string
	OutputFile      string
}

// Cell returns a measured cell, or nil.
func (r *Report) Cell(key string, conc int) *Cell {
	if m := r.Cells[key]; m != nil {
		return m[conc]
	}
	return nil
}

// Run runs the benchmark and writes its output folder.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts.fill()
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, err
	}
	rep := &Report{Started: time.Now(), Machine: describeMachine(), Options: opts, Cells: map[string]map[int]*Cell{}, Skipped: map[string]string{}, ProfileRequests: map[string]uint64{}}
	maxConc := slices.Max(opts.Concurrency)
	r, err := newRig(ctx, opts.Workers, max(maxConc, opts.ProfileConcurrency))
	if err != nil {
		return nil, fmt.Errorf("starting the rig: %w", err)
	}
	defer r.close()

	clients := loadgen.NewClients(max(maxConc, opts.ProfileConcurrency))
	for _, sc := range Scenarios {
		if !strings.Contains(opts.Scenarios, sc.Key) {
			continue
		}
		if err := probe(ctx, clientsFor(sc, r, clients)[0], sc.url(r), sc.legacy); err != nil {
			rep.Skipped[sc.Key] = err.Error()
			fmt.Fprintf(opts.Progress, "%s %s: skipped: %v\n", sc.Key, sc.Name, err)
			continue
		}
		rep.Scenarios = append(rep.Scenarios, sc)
		rep.Cells[sc.Key] = map[int]*Cell{}
	}
	if len(rep.Scenarios) == 0 {
		return nil, errors.New("no scenario could run")
	}

	for round := 1; round <= opts.Rounds; round++ {
		for _, conc := range opts.Concurrency {
			for _, sc := range roundOrder(rep.Scenarios, round) {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				cell, err := measure(ctx, clientsFor(sc, r, clients), sc.url(r), conc, opts)
				if err != nil {
					return nil, fmt.Errorf("%s at %d: %w", sc.Key, conc, err)
				}
				fmt.Fprintf(opts.Progress, "round %d/%d  c=%-4d %s %-26s %9.0f req/s  p50 %-9s p99 %-9s p99.9 %-9s errors %d\n",
					round, opts.Rounds, conc, sc.Key, sc.Name, cell.Result.Throughput(),
					fmtDur(cell.Result.Latency.Quantile(0.5)), fmtDur(cell.Result.Latency.Quantile(0.99)),
					fmtDur(cell.Result.Latency.Quantile(0.999)), cell.Result.Errors)
				cell.rounds = []float64{cell.Result.Throughput()}
				cell.roundP99 = []float64{float64(cell.Result.Latency.Quantile(0.99))}
				if cell.sent > 0 {
					cell.roundCPU = []float64{float64(cell.cpu) / float64(cell.sent)}
				}
				if prev := rep.Cells[sc.Key][conc]; prev != nil {
					prev.rounds = append(prev.rounds, cell.rounds...)
					prev.roundP99 = append(prev.roundP99, cell.roundP99...)
					prev.roundCPU = append(prev.roundCPU, cell.roundCPU...)
					prev.Result.Merge(cell.Result)
					prev.sent += cell.sent
					prev.cpu += cell.cpu
					prev.wait += cell.wait
					prev.mallocs += cell.mallocs
				} else {
					rep.Cells[sc.Key][conc] = cell
				}
			}
		}
	}
	for _, m := range rep.Cells {
		for _, c := range m {
			if c.sent > 0 {
				c.CPUPerReq = c.cpu / time.Duration(c.sent)
				c.WaitPerReq = c.wait / time.Duration(c.sent)
				c.AllocsPerReq = float64(c.mallocs) / float64(c.sent)
			}
		}
	}

	if opts.ProfileDuration > 0 {
		for _, sc := range rep.Scenarios {
			if !strings.Contains(opts.ProfileScenarios, sc.Key) {
				continue
			}
			files, n, err := profile(ctx, clientsFor(sc, r, clients), sc, sc.url(r), opts)
			if err != nil {
				return nil, fmt.Errorf("profiling %s: %w", sc.Key, err)
			}
			rep.Profiles = append(rep.Profiles, files...)
			rep.ProfileRequests[sc.Key] = n
		}
	}
	clients.CloseIdleConnections()

	if opts.InFlight > 0 {
		fmt.Fprintf(opts.Progress, "inbox check: %d requests in flight\n", opts.InFlight)
		ic, err := inboxCheck(ctx, r, opts.InFlight)
		if err != nil {
			return nil, fmt.Errorf("inbox check: %w", err)
		}
		rep.Inbox = ic
	}
	if opts.IdleConns > 0 {
		fmt.Fprintf(opts.Progress, "memory check: %d idle keep-alive connections to a natsgate child process\n", opts.IdleConns)
		mc, err := memoryCheck(ctx, r.ns.ClientURL(), r.legacy.url, opts.IdleConns, filepath.Join(opts.OutDir, "heap-idle-conns.pprof"))
		if err != nil {
			return nil, fmt.Errorf("memory check: %w", err)
		}
		rep.Memory = mc
	}
	rep.Elapsed = time.Since(rep.Started)
	if err := rep.write(opts.OutDir); err != nil {
		return nil, err
	}
	return rep, nil
}

// roundOrder is the order a round measures the scenarios in: as listed in
// odd rounds, reversed in even ones. A machine that slows or speeds up
// through a round then favours no scenario over the run, as it would
// favour those measured first if every round ran in one order.
func roundOrder(scs []Scenario, round int) []Scenario {
	if round%2 == 1 {
		return scs
	}
	r := slices.Clone(scs)
	slices.Reverse(r)
	return r
}

// probe checks that a scenario answers 200 with the benchmark's body, so a
// build without a stage is skipped rather than measured as errors.
func probe(ctx context.Context, client *http.Client, url string, legacy bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || string(b) != string(Body) {
		return fmt.Errorf("answers %d %.120q, not 200 with the benchmark body", resp.StatusCode, b)
	}
	if legacy && resp.Header.Get(originHeader) != "legacy" {
		return errors.New("answered, but not by the legacy service: this build does not have the stage")
	}
	return nil
}

func measure(ctx context.Context, clients loadgen.Clients, url string, conc int, opts Options) (*Cell, error) {
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0, wait0 := processCPU(), schedWait()
	res, err := loadgen.Run(ctx, clients, loadgen.Config{URL: url, Concurrency: conc, Warmup: opts.Warmup, Duration: opts.Duration})
	if err != nil {
		return nil, err
	}
	cpu, wait := processCPU()-cpu0, schedWait()-wait0
	runtime.ReadMemStats(&m1)
	return &Cell{Concurrency: conc, Result: res, sent: res.Sent, cpu: cpu, wait: wait, mallocs: m1.Mallocs - m0.Mallocs}, nil
}

// schedWait is the time the process's goroutines have spent runnable,
// waiting to be scheduled, so far: the runtime's histogram of those waits
// (/sched/latencies:seconds), each wait counted at its bucket's middle.
func schedWait() time.Duration {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	h := s[0].Value.Float64Histogram()
	var sum float64
	for i, n := range h.Counts {
		lo, hi := h.Buckets[i], h.Buckets[i+1]
		switch {
		case math.IsInf(lo, -1):
			lo = 0
		case math.IsInf(hi, 1):
			hi = lo
		}
		sum += float64(n) * (lo + hi) / 2
	}
	return time.Duration(sum * 1e9)
}

// processCPU is the user and system time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// profile runs one natsgate scenario under the CPU profiler and writes it
// with the allocations made meanwhile (an allocs profile and the base to
// subtract from it).
func profile(ctx context.Context, clients loadgen.Clients, sc Scenario, url string, opts Options) ([]string, uint64, error) {
	fmt.Fprintf(opts.Progress, "profiling %s %s at c=%d for %v\n", sc.Key, sc.Name, opts.ProfileConcurrency, opts.ProfileDuration)
	cpuFile := filepath.Join(opts.OutDir, "cpu-"+sc.Key+".pprof")
	baseFile := filepath.Join(opts.OutDir, "allocs-"+sc.Key+"-base.pprof")
	allocFile := filepath.Join(opts.OutDir, "allocs-"+sc.Key+".pprof")
	mutexBase := filepath.Join(opts.OutDir, "mutex-"+sc.Key+"-base.pprof")
	mutexFile := filepath.Join(opts.OutDir, "mutex-"+sc.Key+".pprof")
	runtime.GC()
	if err := writeProfile("allocs", baseFile); err != nil {
		return nil, 0, err
	}
	if err := writeProfile("mutex", mutexBase); err != nil {
		return nil, 0, err
	}
	// One contended lock in ten is recorded, during the profile only.
	runtime.SetMutexProfileFraction(10)
	defer runtime.SetMutexProfileFraction(0)
	f, err := os.Create(cpuFile)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, 0, err
	}
	res, err := loadgen.Run(ctx, clients, loadgen.Config{URL: url, Concurrency: opts.ProfileConcurrency, Warmup: 100 * time.Millisecond, Duration: opts.ProfileDuration})
	pprof.StopCPUProfile()
	if err != nil {
		return nil, 0, err
	}
	runtime.SetMutexProfileFraction(0)
	runtime.GC()
	if err := writeProfile("allocs", allocFile); err != nil {
		return nil, 0, err
	}
	if err := writeProfile("mutex", mutexFile); err != nil {
		return nil, 0, err
	}
	return []string{cpuFile, allocFile, baseFile, mutexFile, mutexBase}, res.Sent, nil
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
