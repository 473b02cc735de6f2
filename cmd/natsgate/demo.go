package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/configs"
	"github.com/natsgate/natsgate/examples/legacy"
	"github.com/natsgate/natsgate/examples/worker"
	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
)

// demo serves configs/demo.yaml on an embedded NATS server with two sample
// workers in one queue group, and prints curl lines to try.
func demo(stdout, stderr io.Writer, logFormat string, traffic bool) int {
	sig, stopSignals := notifySignals()
	defer stopSignals()
	t, err := routes.Load("configs/demo.yaml", configs.Demo, func(string) (string, bool) { return "", false })
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	log := gateway.NewLogger(t.Config.Log, stderr, logFormat)
	ctx := context.Background()
	gw, err := gateway.New(ctx, gateway.Options{Table: t, Logger: log, AccessLog: stderr, LogFormat: logFormat})
	if err != nil {
		log.Error("demo cannot start", "error", err)
		return 1
	}
	if up := t.Upstreams["legacy"]; up != nil {
		ln, err := net.Listen("tcp", up.URL.Host)
		if err != nil {
			log.Error("demo legacy service cannot listen", "addr", up.URL.Host, "error", err)
			return 1
		}
		legacySrv := &http.Server{Handler: legacy.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = legacySrv.Serve(ln) }()
		defer legacySrv.Close()
	}
	natsURL := gw.Conn().ConnectedUrl()
	for i := 1; i <= 2; i++ {
		nc, err := nats.Connect(natsURL, nats.Name(fmt.Sprintf("sample-worker-%d", i)))
		if err != nil {
			log.Error("demo worker cannot connect", "error", err)
			return 1
		}
		defer nc.Drain()
		if _, err := worker.Start(nc, worker.Options{Instance: fmt.Sprintf("worker-%d", i)}); err != nil {
			log.Error("demo worker cannot start", "error", err)
			return 1
		}
	}
	if err := gw.Start(); err != nil {
		log.Error("demo cannot start", "error", err)
		_ = gw.Shutdown(ctx)
		return 1
	}
	base := "http://" + gw.Addr()
	fmt.Fprintf(stdout, "\nnatsgate demo: NATS at %s, gateway at %s, admin at http://%s\n\n", natsURL, base, gw.AdminAddr())
	fmt.Fprint(stdout, strings.ReplaceAll(demoCurls, "BASE", base))
	fmt.Fprintf(stdout, "  # routes, stages and breakers; move get-profile to shadow at run time\n")
	fmt.Fprintf(stdout, "  curl -s http://%s/admin/routes\n", gw.AdminAddr())
	fmt.Fprintf(stdout, "  curl -s -X PUT -H 'Authorization: Bearer %s' -d '{\"cutover\":\"shadow\"}' http://%s/admin/routes/get-profile/cutover\n", t.Config.Admin.Token, gw.AdminAddr())
	fmt.Fprintf(stdout, "  curl -s http://%s/metrics | grep natsgate_http_requests_total\n\nCtrl-C stops the demo.\n\n", gw.AdminAddr())
	fmt.Fprintf(stdout, "Dashboard (legacy vs NATS, per route): http://%s/\n\n", gw.AdminAddr())
	if traffic { // steady sample traffic until the demo stops
		defer startTraffic(base, t, trafficOptions{}, log)()
		fmt.Fprint(stdout, "Sending sample traffic to every route, about 20 requests a second.\n\n")
	}
	return waitAndStop(gw, sig, nil, t.Config.HTTP.ShutdownGrace, log)
}

const demoCurls = `Try:
  # request-reply to a queue group of two workers
  curl -i BASE/users/42
  # a route still on the legacy service, and the catch-all to it
  curl -i BASE/profiles/42
  curl -i BASE/version
  # a worker's error mapped to a status (404 problem body)
  curl -i BASE/users/0
  # a bad path parameter never reaches NATS (400)
  curl -i BASE/users/a.b
  # nobody subscribed: 503 at once; a slow worker: 504 at the route's timeout
  curl -i BASE/reports
  curl -i BASE/slow
  # publish: 202 once the NATS server has it
  curl -i -X POST -d '{"page":"/home"}' BASE/events/click
  # JetStream with dedupe: run it twice, the second says "duplicate": true
  curl -i -X POST -H 'Idempotency-Key: order-1001' -d '{"sku":"A1","qty":2}' BASE/orders
`
