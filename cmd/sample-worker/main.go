// Command sample-worker runs natsgate's sample worker as its own process,
// against any NATS server:
//
//	go run ./cmd/sample-worker --nats nats://127.0.0.1:4222
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/examples/worker"
)

func main() {
	url := flag.String("nats", nats.DefaultURL, "NATS server URL")
	name := flag.String("name", "", "instance name shown in replies (default: host and pid)")
	slow := flag.Duration("slow", 3*time.Second, "how long the slow endpoint takes")
	flag.Parse()
	if *name == "" {
		host, _ := os.Hostname()
		*name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	nc, err := nats.Connect(*url, nats.Name("sample-worker "+*name), nats.MaxReconnects(-1))
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
