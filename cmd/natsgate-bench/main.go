// Command natsgate-bench measures natsgate side by side with a direct HTTP
// call, a plain reverse proxy and the least possible HTTP-to-NATS bridge,
// in one run on one machine, and writes the tables, plot and profiles that
// BENCHMARKS.md shows.
//
//	go run ./cmd/natsgate-bench -out bench-out
//	go run ./cmd/natsgate-bench -duration 500ms -rounds 1 -c 1,64 -conns 1000 -profile 0   # a quick look
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/natsgate/natsgate/internal/benchrun"
)

func main() {
	if benchrun.IsChild() {
		if err := benchrun.ServeChild(); err != nil {
			fmt.Fprintln(os.Stderr, "natsgate-bench child:", err)
			os.Exit(1)
		}
		return
	}
	var opts benchrun.Options
	var conc string
	flag.StringVar(&opts.OutDir, "out", "bench-out", "output folder: results.md, results.json, plot.svg, profiles")
	flag.StringVar(&conc, "c", "1,16,64,256", "concurrency levels, comma separated")
	flag.StringVar(&opts.Scenarios, "scenarios", "ABCDGEFHI", "scenarios to run: A direct, B reverse proxy, C minimal bridge, D natsgate request as shipped, G the same with the access log off, E natsgate legacy, F natsgate shadow, H G over HTTPS with HTTP/1.1, I G over HTTPS with h2")
	flag.DurationVar(&opts.Duration, "duration", 1500*time.Millisecond, "measured time per cell and round")
	flag.DurationVar(&opts.Warmup, "warmup", 300*time.Millisecond, "warm-up before each cell")
	flag.IntVar(&opts.Rounds, "rounds", 6, "rounds of the whole matrix, scenarios interleaved, in reverse order every second round; req/s is the median of a cell's rounds, latencies are over all of them, and a target is the median of its two cells' ratios round by round")
	flag.IntVar(&opts.Workers, "workers", 2, "workers in the queue group")
	flag.DurationVar(&opts.ProfileDuration, "profile", 4*time.Second, "CPU and allocation profile time per natsgate scenario (0: none)")
	flag.IntVar(&opts.ProfileConcurrency, "profile-c", 64, "concurrency while profiling")
	flag.StringVar(&opts.ProfileScenarios, "profile-scenarios", "CDGEF", "scenarios profiled")
	flag.IntVar(&opts.IdleConns, "conns", 10000, "idle keep-alive connections for the memory check (0: skip)")
	flag.IntVar(&opts.InFlight, "inflight", 1000, "requests held in flight for the inbox check (0: skip)")
	flag.Parse()
	// The options read 0 as "the default"; on the command line 0 means none.
	for _, v := range []*int{&opts.IdleConns, &opts.InFlight} {
		if *v == 0 {
			*v = -1
		}
	}
	if opts.ProfileDuration == 0 {
		opts.ProfileDuration = -1
	}
	for f := range strings.SplitSeq(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "natsgate-bench: -c: %q is not a concurrency\n", f)
			os.Exit(2)
		}
		opts.Concurrency = append(opts.Concurrency, n)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := benchrun.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsgate-bench:", err)
		os.Exit(1)
	}
	fmt.Print(rep.Markdown())
	fmt.Fprintf(os.Stderr, "wrote %s/\n", opts.OutDir)
}
