// Command natsgate is the HTTP edge for teams moving from REST to NATS.
//
//	natsgate serve    --config FILE   serve the configured routes
//	natsgate validate --config FILE   check a config, print every problem
//	natsgate routes   --config FILE   print the route table
//	natsgate demo                     embedded NATS, sample workers, gateway
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
)

const usage = `natsgate: the HTTP edge for teams moving from REST to NATS.

Usage:
  natsgate serve    --config FILE [--log-format json|text] [--watch]
  natsgate validate --config FILE
  natsgate routes   --config FILE
  natsgate demo     [--traffic]

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
	fs := flag.NewFlagSet("natsgate "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration file (YAML)")
	logFormat := fs.String("log-format", "", "log format, json or text (overrides log.format)")
	traffic := fs.Bool("traffic", false, "demo: send steady sample traffic so the dashboard fills")
	watch := fs.Bool("watch", false, "serve: reload the config file when it changes (SIGHUP always reloads)")
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
			return 0
		case "routes":
			stages := gateway.EffectiveStages(t, func(msg string) { fmt.Fprintln(stderr, "natsgate routes:", msg) })
			fmt.Fprint(stdout, t.Format(stages))
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
	gw, err := gateway.New(ctx, gateway.Options{Table: t, Logger: log})
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
	return waitAndStop(gw, file, t.Config.HTTP.ShutdownGrace)
}

// waitAndStop serves until a stop signal or a fatal error, then shuts down
// within the grace period.
func waitAndStop(gw *gateway.Server, file string, grace routes.Duration) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	code := 0
loop:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP && file != "" {
				gw.ReloadFile(file)
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
