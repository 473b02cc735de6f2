// Command natsgate is the HTTP edge for teams moving from REST to NATS.
//
//	natsgate serve    -c FILE         serve the configured routes
//	natsgate validate -c FILE         check a config, print every problem
//	                  [--connect [--strict]]  and what NATS has for each route
//	natsgate routes   -c FILE         print the route table
//	natsgate demo                     embedded NATS, sample workers, gateway
//	natsgate health                   exit 0 when a gateway's /readyz says ready
//	natsgate version                  the build's version and VCS revision
//	natsgate rollout ACTION ROUTE     show or move a route's rollout plan
//	natsgate import openapi SPEC      a config to start a migration from
//	natsgate report                   where the migration stands, route by route
//
// Every command parses flags of its own (flags.go): -h prints its usage
// and exits 0; a flag it does not take or a stray argument exits 2.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/internal/buildinfo"
	"github.com/natsgate/natsgate/routes"
)

const usage = `natsgate: the HTTP edge for teams moving from REST to NATS.

Usage:
  natsgate serve    -c FILE [--log-format json|text] [--watch]
  natsgate validate -c FILE [--connect [--strict]]
  natsgate routes   -c FILE
  natsgate demo     [--traffic] [--log-format json|text]
  natsgate health   [--admin ADDR | -c FILE]
  natsgate rollout  status|start|pause|resume|abort ROUTE [--admin URL] [--token T] [-c FILE] [--json]
  natsgate import   openapi SPEC [--upstream NAME=URL] [--subject-prefix PREFIX] [-o FILE] [--merge EXISTING]
  natsgate report   [--admin URL | -c FILE] [--format text|markdown|json]
  natsgate version

-c is short for --config. Run 'natsgate COMMAND -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// commands maps each subcommand to what runs it. Each parses its own
// flags, so that a command's -h lists only its flags and a flag another
// command owns is an error there.
var commands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"serve":    serveCmd,
	"validate": validateCmd,
	"routes":   routesCmd,
	"demo":     demoCmd,
	"health":   healthCmd,
	"version":  versionCmd,
	"rollout":  rolloutCmd,
	"import":   importCmd,
	"report":   reportCmd,
}

// run runs one command line and returns the exit code: 0 done, 1 the
// command failed, 2 bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "natsgate: no command given\n\n%s", usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		return helpCmd(args, stdout, stderr)
	case "-version", "--version":
		cmd = "version"
	}
	if c, ok := commands[cmd]; ok {
		return c(args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "natsgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// helpCmd runs `natsgate help [COMMAND]`: the overview, or a command's
// own usage.
func helpCmd(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(stdout, usage)
		return 0
	case len(args) == 1 && commands[args[0]] != nil:
		if args[0] == "import" { // its flags belong to "import openapi"
			return importCmd([]string{"openapi", "-h"}, stdout, stderr)
		}
		return commands[args[0]]([]string{"-h"}, stdout, stderr)
	}
	fmt.Fprintf(stderr, "natsgate help: no command %q\n\n%s", strings.Join(args, " "), usage)
	return 2
}

// serveCmd runs `natsgate serve`.
func serveCmd(args []string, stdout, stderr io.Writer) int {
	f := newCommandFlags("serve", "natsgate serve -c FILE [--log-format json|text] [--watch]",
		"serve runs the gateway on the routes of FILE until SIGINT or SIGTERM, which\n"+
			"drain it; SIGHUP reloads FILE.")
	config := f.configFlag()
	logFormat := f.logFormatFlag()
	watch := f.Bool("watch", false, "also reload the config file when it changes (SIGHUP always reloads)")
	// Everything serve writes on stderr, from a flag or config error on,
	// goes through one LogSink: a gateway that cannot start must still
	// exit, within logFlushTimeout, when its stderr is a pipe nobody reads
	// (a supervisor restarting it waits for that exit).
	sink, flush := stderrSink(stderr)
	defer flush()
	if code, done := f.parse(args, stdout, sink); done {
		return code
	}
	t, code := f.loadConfig(*config, sink)
	if t == nil {
		return code
	}
	return serve(t, *config, *logFormat, *watch, sink)
}

// validateCmd runs `natsgate validate`.
func validateCmd(args []string, stdout, stderr io.Writer) int {
	f := newCommandFlags("validate", "natsgate validate -c FILE [--connect [--strict]]",
		"validate checks FILE and prints every problem, each with its file, line,\n"+
			"route and field; it exits 1 when there is one.")
	config := f.configFlag()
	connectNATS := f.Bool("connect", false, "also connect to NATS and report, per route, its responders and streams, and the cutover bucket")
	strict := f.Bool("strict", false, "with --connect: exit 1 when a route lacks what a move to NATS needs")
	if code, done := f.parse(args, stdout, stderr); done {
		return code
	}
	if *strict && !*connectNATS {
		return f.usageError(stderr, "--strict needs --connect")
	}
	t, code := f.loadConfig(*config, stderr)
	if t == nil {
		return code
	}
	fmt.Fprintf(stdout, "%s: ok, %d routes, %d upstreams\n", *config, len(t.Routes), len(t.Upstreams))
	if *connectNATS {
		return validateConnect(t, *strict, stdout, stderr)
	}
	return 0
}

// routesCmd runs `natsgate routes`.
func routesCmd(args []string, stdout, stderr io.Writer) int {
	f := newCommandFlags("routes", "natsgate routes -c FILE",
		"routes prints the route table of FILE: each route's method, path, pattern,\n"+
			"subject, stage and the responders NATS has for it.")
	config := f.configFlag()
	if code, done := f.parse(args, stdout, stderr); done {
		return code
	}
	t, code := f.loadConfig(*config, stderr)
	if t == nil {
		return code
	}
	stages := gateway.EffectiveStages(t, func(msg string) { fmt.Fprintln(stderr, "natsgate routes:", msg) })
	fmt.Fprint(stdout, t.FormatWith(stages, responderColumn(t, stderr)))
	return 0
}

// demoCmd runs `natsgate demo`.
func demoCmd(args []string, stdout, stderr io.Writer) int {
	f := newCommandFlags("demo", "natsgate demo [--traffic] [--log-format json|text]",
		"demo serves the sample config on an embedded NATS server with two sample\n"+
			"workers and a legacy service, and prints requests to try.")
	traffic := f.Bool("traffic", false, "send steady sample traffic so the dashboard fills")
	logFormat := f.logFormatFlag()
	if code, done := f.parse(args, stdout, stderr); done {
		return code
	}
	return demo(stdout, stderr, *logFormat, *traffic)
}

// versionCmd runs `natsgate version` (and `natsgate --version`): the
// module version and VCS revision the binary was built from, as the
// natsgate_build_info metric labels them.
func versionCmd(args []string, stdout, stderr io.Writer) int {
	f := newCommandFlags("version", "natsgate version",
		"version prints the module version, the VCS revision and the Go version\n"+
			"natsgate was built with (also: natsgate --version).")
	if code, done := f.parse(args, stdout, stderr); done {
		return code
	}
	in := buildinfo.Read()
	fmt.Fprintf(stdout, "natsgate %s, revision %s, %s\n", in.Version, in.Revision, in.GoVersion)
	return 0
}

func printConfigError(w io.Writer, err error) {
	if errors.Is(err, routes.ErrInvalidConfig) {
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintln(w, "natsgate:", err)
}

// serve runs the gateway until SIGINT or SIGTERM, reloading the config
// file on SIGHUP. Its log, event and access lines alike, goes to sink.
func serve(t *routes.Table, file, logFormat string, watch bool, sink *gateway.LogSink) int {
	sig, stopSignals := notifySignals()
	defer stopSignals()
	log := gateway.NewLogger(t.Config.Log, sink, logFormat)
	ctx := context.Background()
	gw, err := gateway.New(ctx, gateway.Options{Table: t, Logger: log, AccessLog: sink, EventLog: sink, LogFormat: logFormat})
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
	return waitAndStop(gw, sig, r, t.Config.HTTP.ShutdownGrace, log)
}

// stderrSink is the one way serve and demo write to stderr, the log's
// event and access lines and the errors before it, through one LogSink:
// a stderr that stalls (a pipe nobody reads, a log shipper that hung)
// then drops lines, counted, and never holds up a request, a SIGTERM or
// an exit. flush writes what is waiting, within logFlushTimeout, before
// the process exits.
func stderrSink(stderr io.Writer) (sink *gateway.LogSink, flush func()) {
	sink = gateway.NewLogSink(stderr)
	return sink, func() {
		ctx, cancel := context.WithTimeout(context.Background(), logFlushTimeout)
		defer cancel()
		sink.Close(ctx)
	}
}

// logFlushTimeout bounds the wait for stderr to take the last log lines
// at exit.
const logFlushTimeout = 2 * time.Second

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

// notifySignals starts catching SIGINT, SIGTERM and SIGHUP, before the
// gateway starts: a signal that comes while it starts then waits for
// waitAndStop instead of killing the process with nothing drained or
// logged. There is room for a few signals at once, so that a SIGTERM right
// behind a SIGHUP is not dropped.
//
// SIGPIPE is caught too, and nothing more is done with it: a stdout or
// stderr whose reader went away (a log shipper restarted, a closed pipe)
// then fails the log's writes with EPIPE, counted as dropped lines, where
// Go's default for those two descriptors is to end the process. A gateway
// does not stop serving because its log reader did. The stop function
// leaves SIGPIPE caught: the log's last lines are written after it, and a
// clean shutdown must not end in a death by SIGPIPE.
func notifySignals() (<-chan os.Signal, func()) {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	signal.Notify(brokenPipes, syscall.SIGPIPE)
	return sig, func() { signal.Stop(sig) }
}

// brokenPipes receives the SIGPIPEs notifySignals asks for, for the rest
// of the process's life; nothing reads it (a full channel drops them).
var brokenPipes = make(chan os.Signal, 1)

// waitAndStop serves until a stop signal on sig or a fatal error, then
// shuts down within the grace period. SIGHUP asks r for a reload and goes
// back to waiting at once; with no reloader (the demo, which has no file)
// SIGHUP stops like SIGTERM. It logs why it stops, the drain and the stop,
// so an operator reading the log sees a shutdown begin and end.
func waitAndStop(gw *gateway.Server, sig <-chan os.Signal, r *reloader, grace routes.Duration, log *slog.Logger) int {
	code := 0
loop:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP && r != nil {
				r.request()
				continue
			}
			log.Info("stopping", "signal", s.String())
			break loop
		case err := <-gw.Fatal():
			log.Error("stopping", "error", err)
			code = 1
			break loop
		}
	}
	log.Info("draining", "grace", time.Duration(grace).String())
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(grace))
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		log.Error("stopped", "took", time.Since(start).Round(time.Millisecond).String(), "error", err)
		return 1
	}
	log.Info("stopped", "took", time.Since(start).Round(time.Millisecond).String())
	return code
}
