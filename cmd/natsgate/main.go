// Command natsgate is the HTTP edge for teams moving from REST to NATS.
//
//	natsgate serve    --config FILE   serve the configured routes
//	natsgate validate --config FILE   check a config, print every problem
//	                  [--connect [--strict]]  and what NATS has for each route
//	natsgate routes   --config FILE   print the route table
//	natsgate demo                     embedded NATS, sample workers, gateway
//	natsgate rollout ACTION ROUTE     show or move a route's rollout plan
//	natsgate import openapi SPEC      a config to start a migration from
//	natsgate report                   where the migration stands, route by route
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
)

const usage = `natsgate: the HTTP edge for teams moving from REST to NATS.

Usage:
  natsgate serve    --config FILE [--log-format json|text] [--watch]
  natsgate validate --config FILE [--connect [--strict]]
  natsgate routes   --config FILE
  natsgate demo     [--traffic]
  natsgate rollout  status|start|pause|resume|abort ROUTE [--admin URL] [--token T] [--config FILE] [--json]
  natsgate import   openapi SPEC [--upstream NAME=URL] [--subject-prefix PREFIX] [-o FILE] [--merge EXISTING]
  natsgate report   [--admin URL | --config FILE] [--format text|markdown|json]

Run 'natsgate COMMAND -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	if cmd == "rollout" { // flags may follow its action and route
		return rolloutCmd(args, stdout, stderr)
	}
	if cmd == "import" {
		return importCmd(args, stdout, stderr)
	}
	if cmd == "report" { // its own flags, and its own usage
		return reportCmd(args, stdout, stderr)
	}
	fs := flag.NewFlagSet("natsgate "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration file (YAML)")
	logFormat := fs.String("log-format", "", "log format, json or text (overrides log.format)")
	traffic := fs.Bool("traffic", false, "demo: send steady sample traffic so the dashboard fills")
	watch := fs.Bool("watch", false, "serve: reload the config file when it changes (SIGHUP always reloads)")
	connectNATS := fs.Bool("connect", false, "validate: also connect to NATS and report, per route, its responders and streams, and the cutover bucket")
	strict := fs.Bool("strict", false, "validate --connect: exit 1 when a route lacks what a move to NATS needs")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch cmd {
	case "validate", "routes", "serve":
		if *config == "" {
			fmt.Fprintf(stderr, "natsgate %s: --config FILE is required\n", cmd)
			return 2
		}
		t, err := gateway.LoadConfig(*config)
		if err != nil {
			printConfigError(stderr, err)
			return 1
		}
		switch cmd {
		case "validate":
			fmt.Fprintf(stdout, "%s: ok, %d routes, %d upstreams\n", *config, len(t.Routes), len(t.Upstreams))
			if *connectNATS {
				return validateConnect(t, *strict, stdout, stderr)
			}
			return 0
		case "routes":
			stages := gateway.EffectiveStages(t, func(msg string) { fmt.Fprintln(stderr, "natsgate routes:", msg) })
			fmt.Fprint(stdout, t.FormatWith(stages, responderColumn(t, stderr)))
			return 0
		}
		return serve(t, *config, *logFormat, *watch, stderr)
	case "demo":
		return demo(stdout, stderr, *logFormat, *traffic)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "natsgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func printConfigError(w io.Writer, err error) {
	if errors.Is(err, routes.ErrInvalidConfig) {
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintln(w, "natsgate:", err)
}

// serve runs the gateway until SIGINT or SIGTERM, reloading the config
// file on SIGHUP.
func serve(t *routes.Table, file, logFormat string, watch bool, stderr io.Writer) int {
	log := gateway.NewLogger(t.Config.Log, stderr, logFormat)
	ctx := context.Background()
	gw, err := gateway.New(ctx, gateway.Options{Table: t, Logger: log, AccessLog: stderr, LogFormat: logFormat})
	if err != nil {
		log.Error("natsgate cannot start", "error", err)
		return 1
	}
	if err := gw.Start(); err != nil {
		log.Error("natsgate cannot start", "error", err)
		_ = gw.Shutdown(ctx)
		return 1
	}
	if watch {
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go gw.WatchFile(wctx, file, time.Second)
	}
	r := newReloader(gw, file, log)
	defer r.stop()
	return waitAndStop(gw, r, t.Config.HTTP.ShutdownGrace)
}

// reloader runs SIGHUP reloads one at a time on a goroutine of its own, so
// that the signal loop never waits for one: a reload can be slow or stuck
// (a file on a hung network mount, a named pipe nobody writes), and a
// SIGTERM meanwhile must still stop the gateway at once.
type reloader struct {
	gw   *gateway.Server
	file string
	log  *slog.Logger
	// again holds one reload asked for while another runs: however many
	// SIGHUPs come meanwhile, they are one more reload afterwards, which
	// reads the file as it is then.
	again   chan struct{}
	running atomic.Bool
	done    chan struct{}
}

func newReloader(gw *gateway.Server, file string, log *slog.Logger) *reloader {
	r := &reloader{gw: gw, file: file, log: log, again: make(chan struct{}, 1), done: make(chan struct{})}
	go r.run()
	return r
}

// request asks for a reload and returns at once.
func (r *reloader) request() {
	if r.running.Load() {
		r.log.Info("config reload still running; SIGHUPs meanwhile fold into one more reload after it", "file", r.file)
	}
	select {
	case r.again <- struct{}{}:
	default: // one is already waiting; it will read the file as it is then
	}
}

func (r *reloader) run() {
	for {
		select {
		case <-r.done:
			return
		case <-r.again:
		}
		r.running.Store(true)
		r.gw.ReloadFile(r.file)
		r.running.Store(false)
	}
}

// stop ends the loop once the reload running, if any, returns; nothing
// waits for that.
func (r *reloader) stop() { close(r.done) }

// waitAndStop serves until a stop signal or a fatal error, then shuts down
// within the grace period. SIGHUP asks r for a reload and goes back to
// waiting at once; with no reloader (the demo, which has no file) SIGHUP
// stops like SIGTERM.
func waitAndStop(gw *gateway.Server, r *reloader, grace routes.Duration) int {
	// Room for a few signals at once, so that a SIGTERM right behind a
	// SIGHUP is not dropped.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	code := 0
loop:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP && r != nil {
				r.request()
				continue
			}
			break loop
		case <-gw.Fatal():
			code = 1
			break loop
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(grace))
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		return 1
	}
	return code
}
