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
	sink, flush := stderrSink(stderr)
	defer flush()
	sig, stopSignals := notifySignals()
	defer stopSignals()
	t, err := routes.Load("configs/demo.yaml", configs.Demo, func(string) (string, bool) { return "", false })
	if err != nil {
		printConfigError(sink, err)
		return 1
	}
	log := gateway.NewLogger(t.Config.Log, sink, logFormat)
	ctx := context.Background()
	gw, err := gateway.New(ctx, gateway.Options{Table: t, Logger: log, AccessLog: sink, EventLog: sink, LogFormat: logFormat})
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
	// On a goroutine of its own: a stdout nobody reads (a full pipe, a
	// terminal paused with Ctrl-S) must not keep the demo from its signal
	// loop, where SIGTERM stops it.
	go printDemoIntro(stdout, natsURL, gw.Addr(), gw.AdminAddr(), t.Config.Admin.Token, traffic)
	if traffic { // steady sample traffic until the demo stops
		defer startTraffic("http://"+gw.Addr(), t, trafficOptions{}, log)()
	}
	return waitAndStop(gw, sig, nil, t.Config.HTTP.ShutdownGrace, log)
}

// printDemoIntro prints where the demo listens, the lines to try (see
// demoTry) and, with traffic, the rate it sends at.
func printDemoIntro(w io.Writer, natsURL, gatewayAddr, adminAddr, token string, traffic bool) {
	fmt.Fprintf(w, "\nnatsgate demo: NATS at %s, gateway at http://%s, admin at http://%s\n\n", natsURL, gatewayAddr, adminAddr)
	fmt.Fprintf(w, "Try:\n\n%s\nCtrl-C stops the demo.\n\n", demoLines(gatewayAddr, adminAddr, token))
	fmt.Fprintf(w, "Dashboard (legacy vs NATS, per route): http://%s/\n\n", adminAddr)
	if traffic {
		fmt.Fprintf(w, "Sending sample traffic: %s.\n\n", trafficNote())
	}
}

// trafficNote says what demo --traffic sends, from the traffic's own
// defaults: one rate over all routes, not a rate per route.
func trafficNote() string {
	return fmt.Sprintf("about %d requests a second in all, round robin over the routes; a route that answers 5xx rests %s", defaultTrafficRate, defaultTrafficBackoff)
}

// demoLines is demoTry for the demo's listeners and admin token.
func demoLines(gatewayAddr, adminAddr, token string) string {
	return strings.NewReplacer("GATEWAY", gatewayAddr, "ADMIN", adminAddr, "TOKEN", token).Replace(demoTry)
}

// demoTry is what the demo prints to try: GATEWAY and ADMIN stand for the
// public and admin listeners' host:port, TOKEN for the admin token. The
// README's demo block shows the same lines for configs/demo.yaml, and
// TestREADMEShowsTheDemosLines keeps the two the same.
const demoTry = `curl -i GATEWAY/users/42        # request-reply to a queue group of two workers: 200
curl -i GATEWAY/users/0         # the worker's micro error, mapped: 404 problem body
curl -i GATEWAY/users/a.b       # a param that would add a subject token: 400, nothing published
curl -i GATEWAY/reports         # nobody subscribed: 503 at once
curl -i GATEWAY/slow            # a worker slower than the route: 504 at 500ms
curl -i GATEWAY/profiles/42     # a route still on the legacy service
curl -i GATEWAY/version         # not listed: the catch-all passes it to the legacy service
curl -i -X POST -d '{"page":"/home"}' GATEWAY/events/click                       # publish: 202
curl -i -X POST -H 'Idempotency-Key: order-1001' -d '{"sku":"A1"}' GATEWAY/orders  # JetStream: 202
curl -i -X POST -H 'Idempotency-Key: order-1001' -d '{"sku":"A1"}' GATEWAY/orders  # again: "duplicate": true
curl -s ADMIN/admin/routes      # every route: stage, breakers, responders
curl -s -X PUT -H 'Authorization: Bearer TOKEN' -d '{"cutover":"shadow"}' ADMIN/admin/routes/get-profile/cutover
curl -s ADMIN/metrics | grep natsgate_http_requests_total
`
