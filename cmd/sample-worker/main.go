// Command sample-worker runs natsgate's sample worker as its own process,
// against any NATS server:
//
//	go run ./cmd/sample-worker --nats nats://127.0.0.1:4222
//
// With --legacy ADDR it is instead the demo's legacy REST service, the
// upstream natsgate proxies to (docker-compose.yml runs it so):
//
//	go run ./cmd/sample-worker --legacy 127.0.0.1:9001
//
// --delay and --fail-rate make it play a worse version of itself, for
// trying a rollout plan's gates: --delay 30ms adds that much to every
// answer (in either mode), and --fail-rate 0.1 turns that share of the
// users answers (with --legacy: of every answer) into a 500 problem.
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
	delay := flag.Duration("delay", 0, "added to every answer, to play a slower version (NATS and --legacy)")
	failRate := flag.Float64("fail-rate", 0, "share of answers, 0 to 1, that are a 500 instead: of the users endpoint on NATS, of every endpoint with --legacy")
	flag.Parse()
	if *delay < 0 || *failRate < 0 || *failRate > 1 {
		fmt.Fprintf(os.Stderr, "sample-worker: --delay %v must not be negative and --fail-rate %g must be from 0 to 1\n", *delay, *failRate)
		os.Exit(2)
	}
	if *legacyAddr != "" {
		serveLegacy(*legacyAddr, worse(legacy.Handler(), *delay, *failRate))
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
	svc, err := worker.Start(nc, worker.Options{Instance: *name, SlowDelay: *slow, Delay: *delay, FailRate: *failRate})
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
func serveLegacy(addr string, h http.Handler) {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
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

// worse makes the legacy service slower by delay on every answer and
// turns failRate of its answers into a 500 problem; with both 0 it is h.
func worse(h http.Handler, delay time.Duration, failRate float64) http.Handler {
	if delay <= 0 && failRate <= 0 {
		return h
	}
	fail := worker.NewFailEvery(failRate)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if fail.Next() {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = fmt.Fprintf(w, `{"type":"about:blank","title":"Internal Server Error","status":500,"detail":"injected failure: this service fails a share of its answers"}`+"\n")
			return
		}
		h.ServeHTTP(w, r)
	})
}
