package benchrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// Body is what both the legacy service and the worker answer, so every
// scenario moves the same bytes.
var Body = []byte(`{"id":7,"name":"user-7","email":"user-7@example.com"}`)

// QueueGroup is the benchmark worker's queue group.
const QueueGroup = "bench-workers"

// rig is everything the scenarios talk to, on loopback: a nats-server,
// workers in a queue group, the legacy HTTP service, and the four things
// measured in front of them (reverse proxy, minimal bridge, natsgate).
type rig struct {
	ns      *server.Server
	workers []*nats.Conn
	holds   *holdWorker

	legacy, proxy, bridge *httpServer
	bridgeConn            *nats.Conn
	// gw is natsgate as shipped (its default config, the access log
	// written to a file); quiet the same with the access log off.
	gw, quiet  *gateway.Server
	gwName     string
	accessFile *os.File

	gwURL, quietURL string
	// tls is the HTTPS natsgate of scenarios H and I.
	tls *tlsSide
}

type httpServer struct {
	srv *http.Server
	ln  net.Listener
	url string
}

func serveHTTP(h http.Handler) (*httpServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &httpServer{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: discardLog()}, ln: ln, url: "http://" + ln.Addr().String()}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *httpServer) close() {
	if s != nil {
		_ = s.srv.Close()
	}
}

// startNATS starts the nats-server every scenario shares. JetStream is off:
// no scenario stores messages.
func startNATS() (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{
		Host:   "127.0.0.1",
		Port:   server.RANDOM_PORT,
		NoSigs: true,
		NoLog:  true,
		// The inbox check holds a thousand requests at once.
		MaxPending: 64 << 20,
	})
	if err != nil {
		return nil, err
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats-server did not start within 10s")
	}
	return ns, nil
}

// newRig starts everything. maxConc is the highest concurrency measured:
// the reverse proxy keeps that many idle connections to the legacy service.
func newRig(ctx context.Context, workers, maxConc int) (*rig, error) {
	r := &rig{gwName: "natsgate-bench"}
	var err error
	if r.ns, err = startNATS(); err != nil {
		return nil, err
	}
	for i := range workers {
		nc, err := startWorker(r.ns.ClientURL(), fmt.Sprintf("bench-worker-%d", i+1))
		if err != nil {
			r.close()
			return nil, err
		}
		r.workers = append(r.workers, nc)
	}
	if r.holds, err = startHoldWorker(r.ns.ClientURL()); err != nil {
		r.close()
		return nil, err
	}

	// A: the legacy service answers every path with the same body.
	if r.legacy, err = serveHTTP(http.HandlerFunc(legacyHandler)); err != nil {
		r.close()
		return nil, err
	}
	// B: a plain reverse proxy in front of it, with idle connections for
	// every client so that it never dials under load.
	target, _ := url.Parse(r.legacy.url)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        maxConc,
			MaxIdleConnsPerHost: maxConc,
			IdleConnTimeout:     90 * time.Second,
		},
		ErrorLog: discardLog(),
	}
	if r.proxy, err = serveHTTP(proxy); err != nil {
		r.close()
		return nil, err
	}
	// C: the least possible bridge: one handler, one nc.Request.
	if r.bridgeConn, err = nats.Connect(r.ns.ClientURL(), nats.Name("bench-bridge")); err != nil {
		r.close()
		return nil, err
	}
	if r.bridge, err = serveHTTP(bridgeHandler(r.bridgeConn)); err != nil {
		r.close()
		return nil, err
	}
	// D, E, F: natsgate as shipped, one instance serving the request,
	// legacy and shadow routes, its access log written to a file as a
	// deployment writes it; G: the same request route with the log off.
	if r.accessFile, err = os.CreateTemp("", "natsgate-bench-access-*.log"); err != nil {
		r.close()
		return nil, err
	}
	if r.gw, err = startGateway(ctx, r.ns.ClientURL(), r.legacy.url, r.gwName, r.accessFile); err != nil {
		r.close()
		return nil, err
	}
	if r.quiet, err = startGateway(ctx, r.ns.ClientURL(), r.legacy.url, r.gwName+"-quiet", nil); err != nil {
		r.close()
		return nil, err
	}
	r.gwURL, r.quietURL = "http://"+r.gw.Addr(), "http://"+r.quiet.Addr()
	if err = r.startTLS(ctx, maxConc); err != nil {
		r.close()
		return nil, fmt.Errorf("the HTTPS natsgate: %w", err)
	}
	return r, nil
}

// startGateway starts a natsgate on the benchmark's config; accessLog nil
// turns its access log off.
func startGateway(ctx context.Context, natsURL, legacyURL, name string, accessLog io.Writer) (*gateway.Server, error) {
	table, err := routes.Load("bench.yaml", []byte(gatewayConfig(natsURL, legacyURL, name, accessLog != nil)), noEnv)
	if err != nil {
		return nil, err
	}
	if accessLog == nil {
		accessLog = io.Discard // unused: the config turns the log off
	}
	gw, err := gateway.New(ctx, gateway.Options{Table: table, Logger: discardLogger(), Registry: prometheus.NewRegistry(), AccessLog: accessLog})
	if err != nil {
		return nil, err
	}
	if err := gw.Start(); err != nil {
		_ = gw.Shutdown(ctx)
		return nil, err
	}
	return gw, nil
}

func (r *rig) close() {
	r.tls.close()
	for _, gw := range []*gateway.Server{r.gw, r.quiet} {
		if gw != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = gw.Shutdown(ctx)
			cancel()
		}
	}
	if r.accessFile != nil {
		_ = r.accessFile.Close()
		_ = os.Remove(r.accessFile.Name())
	}
	r.bridge.close()
	r.proxy.close()
	r.legacy.close()
	if r.bridgeConn != nil {
		r.bridgeConn.Close()
	}
	if r.holds != nil {
		r.holds.close()
	}
	for _, nc := range r.workers {
		nc.Close()
	}
	if r.ns != nil {
		r.ns.Shutdown()
		r.ns.WaitForShutdown()
	}
}

func noEnv(string) (string, bool) { return "", false }

// gatewayConfig is natsgate's configuration for the benchmark: the request
// route of scenarios D and G, the legacy route of E, the shadow route of F,
// and the route the inbox check holds requests on. Every setting is the
// default (metrics, breakers and the access log on) but for the access log
// of G, which is off so that the log's cost is a row of its own.
func gatewayConfig(natsURL, legacyURL, name string, accessLog bool) string {
	return fmt.Sprintf(`
nats:
  url: %s
  name: %s
http:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
log:
  access: %t
upstreams:
  legacy:
    url: %s
    timeout: 5s
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "bench.users.{id}.get", pattern: request, timeout: 5s}
  - name: legacy-user
    method: GET
    path: /legacy/users/{id}
    upstream: legacy
    cutover: legacy
  - name: shadow-user
    method: GET
    path: /shadow/users/{id}
    nats: {subject: "bench.users.{id}.get", pattern: request, timeout: 5s}
    upstream: legacy
    cutover: shadow
  - name: hold
    method: GET
    path: /hold/{id}
    nats: {subject: "bench.hold.{id}", pattern: request, timeout: 30s}
`, natsURL, name, accessLog, legacyURL)
}

// originHeader marks answers of the legacy service, so the probe can tell
// a legacy or shadow route that really proxies from one a build without
// that stage answers over NATS.
const originHeader = "X-Bench-Origin"

var legacyOrigin = []string{"legacy"}

func legacyHandler(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h[originHeader] = legacyOrigin
	h["Content-Length"] = []string{fmt.Sprint(len(Body))}
	_, _ = w.Write(Body)
}

// bridgeHandler is scenario C: the path's last segment picks the subject,
// nc.Request carries the body, the reply's data is the answer. Nothing else.
func bridgeHandler(nc *nats.Conn) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		msg, err := nc.Request("bench.users."+id+".get", nil, 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		_, _ = w.Write(msg.Data)
	})
}

// startWorker joins the benchmark's queue group on its own connection and
// answers every request with Body, as a worker written to natsgate's
// protocol would: with a Content-Type.
func startWorker(natsURL, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(natsURL, nats.Name(name))
	if err != nil {
		return nil, err
	}
	header := nats.Header{"Content-Type": {"application/json"}}
	_, err = nc.QueueSubscribe("bench.users.*.get", QueueGroup, func(m *nats.Msg) {
		_ = m.RespondMsg(&nats.Msg{Subject: m.Reply, Header: header, Data: Body})
	})
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// holdWorker answers bench.hold.* only when released, so a test of
// in-flight requests can keep as many as it likes waiting.
type holdWorker struct {
	nc      *nats.Conn
	mu      sync.Mutex
	held    []*nats.Msg
	holding atomic.Int64
}

func startHoldWorker(natsURL string) (*holdWorker, error) {
	nc, err := nats.Connect(natsURL, nats.Name("bench-hold-worker"))
	if err != nil {
		return nil, err
	}
	hw := &holdWorker{nc: nc}
	_, err = nc.QueueSubscribe("bench.hold.*", QueueGroup, func(m *nats.Msg) {
		hw.mu.Lock()
		hw.held = append(hw.held, m)
		hw.mu.Unlock()
		hw.holding.Add(1)
	})
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return hw, nil
}

// release answers every held request.
func (hw *holdWorker) release() {
	hw.mu.Lock()
	held := hw.held
	hw.held = nil
	hw.mu.Unlock()
	for _, m := range held {
		_ = m.Respond(Body)
		hw.holding.Add(-1)
	}
}

func (hw *holdWorker) close() {
	hw.release()
	hw.nc.Close()
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }
