// Command sample-worker runs natsgate's sample worker as its own process,
// against any NATS server:
//
//	go run ./cmd/sample-worker --nats nats://127.0.0.1:4222
//
// With --legacy ADDR it is instead the demo's legacy REST service, the
// upstream natsgate proxies to (docker-compose.yml runs it so):
//
//	go run ./cmd/sample-worker --legacy 127.0.0.1:9001
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/examples/legacy"
	"github.com/natsgate/natsgate/examples/worker"
)

func main() {
	url := flag.String("nats", nats.DefaultURL, "NATS server URL")
	name := flag.String("name", "", "instance name shown in replies (default: host and pid)")
	slow := flag.Duration("slow", 3*time.Second, "how long the slow endpoint takes")
	legacyAddr := flag.String("legacy", "", "serve the demo's legacy REST API on this address instead of joining NATS")
	reconnectWait := flag.Duration("reconnect-wait", nats.DefaultReconnectWait, "pause between attempts to reconnect to NATS")
	flag.Parse()
	if *legacyAddr != "" {
		serveLegacy(*legacyAddr)
		return
	}
	if *name == "" {
		host, _ := os.Hostname()
		*name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	nc, err := nats.Connect(*url, nats.Name("sample-worker "+*name), nats.MaxReconnects(-1), nats.ReconnectWait(*reconnectWait))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sample-worker:", err)
		os.Exit(1)
	}
	svc, err := worker.Start(nc, worker.Options{Instance: *name, SlowDelay: *slow})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sample-worker:", err)
		os.Exit(1)
	}
	fmt.Printf("sample-worker %s serving on %s (queue group %s)\n", *name, nc.ConnectedUrlRedacted(), worker.QueueGroup)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	_ = svc.Stop()
	_ = nc.Drain()
}

// serveLegacy serves the demo's legacy REST API until SIGINT or SIGTERM.
func serveLegacy(addr string) {
	srv := &http.Server{Addr: addr, Handler: legacy.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	fmt.Printf("legacy REST service on http://%s\n", addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "sample-worker:", err)
		os.Exit(1)
	}
}
