// Package gateway is natsgate's I/O: the HTTP listeners, the handlers that
// answer routes over NATS or from a legacy upstream, the NATS connection and
// the embedded server, and the order in which all of it starts and stops.
//
// A Server is built from a compiled routes.Table. Everything the request
// path needs (handlers, metric children, breakers) is prepared in New; the
// route table sits behind an atomic pointer so a reload swaps it whole
// without dropping a request in flight.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/natsgate/natsgate/internal/buildinfo"
	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sony/gobreaker/v2"
)

// Options configure a Server.
type Options struct {
	// Table is the compiled configuration. Required.
	Table *routes.Table
	// Logger receives the access log and events. Default: slog.Default().
	Logger *slog.Logger
	// Registry receives natsgate's metrics and serves /metrics. Default: a
	// new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Conn, when set, is used instead of dialing nats.url; the Server does
	// not close it. Its handlers are the caller's to set.
	Conn *nats.Conn
	// AccessLog receives the access log's lines, written in batches by a
	// background writer (see accessLog). Default: os.Stderr.
	AccessLog io.Writer
	// LogFormat, when not empty, overrides log.format for the access log,
	// as it does for Logger (the --log-format flag).
	LogFormat string
	// EventLog, when set, is the LogSink that Logger writes to: the lines
	// it drops are counted in natsgate_log_dropped_total with the access
	// log's. Pass the same sink as AccessLog when both go to one place.
	EventLog *LogSink
}

// Server is a running natsgate: the public and admin listeners, the NATS
// connection, and the route table.
type Server struct {
	log      *slog.Logger
	reg      *prometheus.Registry
	metrics  *metrics.Metrics
	stats    *stats        // the last minute, for the dashboard
	history  *history      // the fleet's last fifteen minutes, for charts and rollout gates
	feed     *historyFeed  // this replica's closed slots, into history and the fleet message
	fleet    *fleet        // the other replicas' last minute; nil with fleet.enabled false
	leader   *leader       // this replica's side of the leader election; nil with fleet.enabled false
	rollouts *rollouts     // the rollout controller; it acts only while this replica leads
	access   *accessLog    // nil: no access log
	cfg      routes.Config // listeners and NATS, fixed for the process
	ownConn  bool
	embedded *EmbeddedServer

	// discovery finds the micro services serving each route; nil with
	// discovery.enabled false.
	discovery *discovery

	table atomic.Pointer[compiled]
	// conn is what every route's NATS side shares: the connection and its
	// epoch.
	conn *natsConn

	cutovers     *cutovers
	cutoverWatch *cutoverWatcher
	shadowSem    chan struct{} // bounds shadow copies in flight
	mismatches   mismatches
	reloadMu     sync.Mutex // one reload at a time, from SIGHUP or --watch
	upstreamMu   sync.Mutex
	stageCountMu sync.Mutex           // one natsgate_routes count at a time (countStages)
	upstreams    map[string]*upstream // kept across reloads, so connections and breakers are too

	inflight    atomic.Int64
	maxInflight int64
	draining    atomic.Bool

	public, admin     *http.Server
	publicLn, adminLn net.Listener
	// certs are the listeners' certificates, re-read when their files
	// change (every certCheckEvery) and on SIGHUP.
	certs          []*certificate
	certCheckEvery time.Duration
	stopCertWatch  context.CancelFunc
	fatal          chan error
	fatalOnce      sync.Once
	wg             sync.WaitGroup
}

// compiled is a route table made ready to serve.
type compiled struct {
	table    *routes.Table
	mux      *chi.Mux
	handlers map[string]*routeHandler
	// byPattern finds the handler of the pattern chi's tree matched, by
	// method ("*" for a route of any method) and pattern, so that a routed
	// request is served without chi's ServeHTTP (see route).
	byPattern map[routeKey]*routeHandler
}

// routeKey is a route's method and path pattern, as registered with chi.
type routeKey struct{ method, pattern string }

// routeContexts are chi routing contexts for route, reused.
var routeContexts = sync.Pool{New: func() any { return chi.NewRouteContext() }}

// route serves r if chi's tree matches it to a route, and reports whether
// it did. It is chi's own match (Mux.Find on the tree the routes were
// registered in), without what chi's ServeHTTP adds for handlers in
// general and natsgate's do not read: a copy of the request carrying the
// routing context, the parameters set again as the request's path values
// (a map of its own), and the matched pattern joined into a string, four
// allocations a request. Whatever Find does not take, a method chi does
// not know, a path no route has, a method the path's routes do not take,
// is left to the mux, which answers it exactly as before.
func (c *compiled) route(w http.ResponseWriter, r *http.Request) bool {
	h, rctx := c.match(r)
	if h == nil {
		return false
	}
	h.serveHTTP(w, r, rctx)
	routeContexts.Put(rctx)
	return true
}

// match finds r's route in chi's tree, routing as chi's ServeHTTP does
// (the raw path when the request has one), and returns its handler with
// the routing context holding its parameters, to be put back in
// routeContexts once served. A nil handler: route did not take r.
func (c *compiled) match(r *http.Request) (*routeHandler, *chi.Context) {
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	if path == "" {
		path = "/"
	}
	rctx := routeContexts.Get().(*chi.Context)
	rctx.Reset()
	pattern := c.mux.Find(rctx, r.Method, path)
	h := c.byPattern[routeKey{r.Method, pattern}]
	if h == nil && pattern != "" {
		h = c.byPattern[routeKey{"*", pattern}]
	}
	if h == nil {
		routeContexts.Put(rctx)
		return nil, nil
	}
	return h, rctx
}

// New prepares a Server: it starts the embedded NATS server or connects to
// NATS, ensures the configured streams, and compiles every route. It does
// not listen yet; see Start.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Table == nil {
		return nil, errors.New("gateway: no route table")
	}
	s := &Server{
		log:         opts.Logger,
		reg:         opts.Registry,
		cfg:         opts.Table.Config,
		maxInflight: int64(opts.Table.Config.HTTP.MaxInflight),
		fatal:       make(chan error, 1),
		cutovers:    &cutovers{overrides: map[string]Override{}},
		shadowSem:   make(chan struct{}, opts.Table.Config.Defaults.ShadowMaxInflight),
		mismatches:  mismatches{byName: map[string][]Mismatch{}},
		upstreams:   map[string]*upstream{},
		stats:       newStats(nil),
		history:     newHistory(nil),

		certCheckEvery: certCheckInterval,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s.metrics = metrics.New(s.reg)

	if opts.Conn != nil {
		s.conn = &natsConn{nc: opts.Conn}
	} else {
		if err := s.dial(); err != nil {
			return nil, err
		}
		s.ownConn = true
	}
	s.conn.newEpoch()
	replies, err := newReplyMux(s.conn.nc)
	if err != nil {
		s.closeNATS()
		return nil, fmt.Errorf("subscribing natsgate's reply inbox: %w", err)
	}
	s.conn.replies = replies
	if s.conn.nc.IsConnected() {
		s.metrics.NATSConnected.Set(1)
	}
	js, err := jetstream.New(s.conn.nc)
	if err != nil {
		s.closeNATS()
		return nil, err
	}
	s.conn.js = js
	if len(s.cfg.NATS.Streams) > 0 {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := ensureStreams(sctx, js, s.cfg.NATS.Streams, s.log)
		cancel()
		if err != nil {
			s.closeNATS()
			return nil, err
		}
	}
	c, err := s.compile(opts.Table)
	if err != nil {
		s.closeNATS()
		return nil, err
	}
	s.table.Store(c)
	s.countStages()
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	s.openCutovers(octx)
	cancel()
	if opts.EventLog != nil {
		opts.EventLog.countIn(s.metrics.LogDropped)
	}
	if *s.cfg.Log.Access && s.log.Enabled(ctx, slog.LevelInfo) {
		out := opts.AccessLog
		if out == nil {
			out = os.Stderr
		}
		format := opts.LogFormat
		if format == "" {
			format = s.cfg.Log.Format
		}
		s.access = newAccessLog(out, format == "text", s.metrics.LogDropped)
	}
	s.rollouts = newRollouts(s)
	return s, nil
}

func (s *Server) dial() error {
	if s.cfg.NATS.URL == "" {
		es, err := StartEmbedded(s.cfg.NATS.Embedded)
		if err != nil {
			return err
		}
		s.embedded = es
		s.log.Info("embedded NATS started", "url", es.ClientURL(), "jetstream", true)
	}
	nc, err := connect(s.cfg.NATS, s.embedded, connHooks{
		disconnected: func(err error) {
			s.metrics.NATSConnected.Set(0)
			s.conn.dropEpoch()
			if s.draining.Load() {
				s.log.Info("NATS connection drained")
				return
			}
			s.log.Warn("NATS disconnected", "error", err)
		},
		reconnected: func() {
			// The breakers close before the new epoch lets requests
			// through: one let in first would meet a breaker still open
			// from the connection that dropped.
			s.resetNATSBreakers()
			s.conn.newEpoch()
			s.metrics.NATSConnected.Set(1)
			s.log.Info("NATS reconnected", "url", s.conn.nc.ConnectedUrlRedacted())
		},
		closed: func() {
			s.metrics.NATSConnected.Set(0)
			if !s.draining.Load() {
				s.fail(closedForGood(s.conn.nc.LastError()))
			}
		},
		asyncError: func(sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			s.log.Error("NATS error", "error", err, "subscription", subj)
		},
	})
	if err != nil {
		if s.embedded != nil {
			s.embedded.Shutdown()
		}
		return err
	}
	s.conn = &natsConn{nc: nc}
	s.log.Info("NATS connected", "url", nc.ConnectedUrlRedacted(), "from", urlFrom(s.cfg.NATS, s.embedded))
	return nil
}

// resetNATSBreakers closes every route's NATS breaker once the connection
// is back: what they counted was about the connection that was lost, and
// a route must serve as soon as its workers are back, not after open_for.
func (s *Server) resetNATSBreakers() {
	c := s.table.Load()
	if c == nil {
		return
	}
	var reset []string
	for name, h := range c.handlers {
		if h.nats != nil && h.nats.resetBreaker() {
			reset = append(reset, name)
		}
	}
	if len(reset) > 0 {
		s.log.Info("NATS breakers closed: the connection is back", "routes", reset)
	}
}

// closedForGood says why the NATS connection closed without natsgate
// closing it: nats.go gives up on a server that refuses the credentials
// twice in a row, as well as after nats.max_reconnects attempts.
func closedForGood(last error) error {
	switch {
	case errors.Is(last, nats.ErrAuthorization), errors.Is(last, nats.ErrAuthExpired),
		errors.Is(last, nats.ErrAuthRevoked), errors.Is(last, nats.ErrAccountAuthExpired):
		return fmt.Errorf("the NATS connection closed for good: the server refused natsgate's credentials: %w", last)
	case last != nil:
		return fmt.Errorf("the NATS connection closed for good (nats.max_reconnects reached): %w", last)
	}
	return errors.New("the NATS connection closed for good (nats.max_reconnects reached)")
}

// compile builds the router and handlers of a table.
func (s *Server) compile(t *routes.Table) (*compiled, error) {
	c := &compiled{table: t, handlers: make(map[string]*routeHandler, len(t.Routes)), byPattern: make(map[routeKey]*routeHandler, len(t.Routes))}
	mux := chi.NewRouter()
	mux.NotFound(s.notFound)
	mux.MethodNotAllowed(s.methodNotAllowed)
	gauges := map[*upstream][]prometheus.Gauge{}
	for _, rt := range t.Routes {
		pattern, upstream := "", ""
		if rt.HasNATS() {
			pattern = string(rt.Pattern)
		}
		if rt.Upstream != nil {
			upstream = rt.Upstream.Name
		}
		h := &routeHandler{gw: s, rt: rt, m: s.metrics.Route(rt.Name, rt.Method, pattern, upstream),
			writeTimeout: time.Duration(s.cfg.HTTP.WriteTimeout)}
		if rt.HasNATS() {
			gauge := s.metrics.BreakerState.WithLabelValues(rt.Name, metrics.BackendNATS)
			h.nats = newNATSSide(rt, h.m, s.conn, func(onChange func(gobreaker.State)) *breaker {
				return newBreaker(rt.Name+"/nats", "route "+rt.Name+" (NATS)", rt.Breaker, s.log, onChange)
			}, gauge.Set)
		}
		if rt.Upstream != nil {
			up, err := s.upstream(rt.Upstream)
			if err != nil {
				return nil, err
			}
			h.legacy = newLegacySide(up, rt, h.m, t.TrustedProxies, time.Duration(s.cfg.HTTP.IdleTimeout), s.log)
			gauges[up] = append(gauges[up], s.metrics.BreakerState.WithLabelValues(rt.Name, rt.Upstream.Name))
		}
		h.applyStage(s, s.cutovers.override(rt.Name))
		c.handlers[rt.Name] = h
	}
	c.mux = mux
	c.registerRoutes(t.Routes)
	for up, g := range gauges {
		up.useGauges(g)
	}
	return c, nil
}

// registerRoutes registers the handlers of rs (in c.handlers) on c.mux,
// and by method and pattern for match.
func (c *compiled) registerRoutes(rs []*routes.Route) {
	register(c.mux, rs, func(rt *routes.Route) http.Handler { return c.handlers[rt.Name] })
	for _, rt := range rs {
		c.byPattern[routeKey{rt.Method, rt.Path}] = c.handlers[rt.Name]
	}
}

// register adds each route's handler to mux. Routes for any method go
// first: chi's Handle sets every method of a path, so a "*" route
// registered after a route for one method on the same path would silently
// take that method over. A route that names its method always wins,
// whatever the file's order.
func register(mux *chi.Mux, rs []*routes.Route, handler func(*routes.Route) http.Handler) {
	for _, star := range []bool{true, false} {
		for _, rt := range rs {
			switch {
			case (rt.Method == "*") != star:
			case star:
				mux.Handle(rt.Path, handler(rt))
			default:
				mux.Method(rt.Method, rt.Path, handler(rt))
			}
		}
	}
}

// upstream returns the shared transport and breaker of an upstream,
// reusing those of an unchanged upstream across reloads.
func (s *Server) upstream(cfg *routes.Upstream) (*upstream, error) {
	s.upstreamMu.Lock()
	defer s.upstreamMu.Unlock()
	if up := s.upstreams[cfg.Name]; up != nil && up.cfg.URL.String() == cfg.URL.String() &&
		up.cfg.Timeout == cfg.Timeout && up.cfg.Breaker == cfg.Breaker && reflect.DeepEqual(up.cfg.TLS, cfg.TLS) {
		return up, nil
	}
	tc, err := upstreamTLS(cfg, s.log)
	if err != nil {
		return nil, err
	}
	up := &upstream{cfg: cfg, transport: newTransport(tc)}
	up.breaker = newBreaker("upstream/"+cfg.Name, "upstream "+cfg.Name, cfg.Breaker, s.log, up.stateChanged)
	s.upstreams[cfg.Name] = up
	return up, nil
}

// Reload swaps in a new route table. Requests in flight finish on the table
// they started on. Listeners and the NATS connection are not changed: a
// change to those needs a restart, and is logged as such.
func (s *Server) Reload(t *routes.Table) error {
	c, err := s.compile(t)
	if err != nil {
		s.metrics.ConfigReloads.WithLabelValues(metrics.ReloadError).Inc()
		return err
	}
	old := s.table.Load()
	if restartNeeded(old.table.Config, t.Config) {
		s.log.Warn("config reload: listener, NATS, log or fleet settings changed; they take effect at the next restart", "file", t.File)
	}
	s.table.Store(c)
	s.countStages()
	// A removed route's series go, and so do those a changed route no
	// longer has; requests still in flight on the old table may record
	// once more into the children just deleted, which nothing exports.
	for name, h := range old.handlers {
		var next *metrics.Route
		if nh := c.handlers[name]; nh != nil {
			next = nh.m
		}
		s.metrics.Retire(h.m, next)
	}
	s.metrics.ConfigReloads.WithLabelValues(metrics.ReloadOK).Inc()
	s.log.Info("config reloaded", "file", t.File, "routes", len(t.Routes))
	return nil
}

// restartNeeded reports a change to settings a reload does not apply.
// DeepEqual follows pointers (max_reconnects, log.access), so two loads of
// one file compare equal.
func restartNeeded(a, b routes.Config) bool {
	return !reflect.DeepEqual(a.NATS, b.NATS) || !reflect.DeepEqual(a.HTTP, b.HTTP) ||
		!reflect.DeepEqual(a.Admin, b.Admin) || !reflect.DeepEqual(a.Log, b.Log) ||
		!reflect.DeepEqual(a.Fleet, b.Fleet)
}

// ReloadFailed counts a reload that did not get as far as Reload (a file
// that did not parse).
func (s *Server) ReloadFailed() { s.metrics.ConfigReloads.WithLabelValues(metrics.ReloadError).Inc() }

// Table returns the route table being served.
func (s *Server) Table() *routes.Table { return s.table.Load().table }

// Conn returns the NATS connection.
func (s *Server) Conn() *nats.Conn { return s.conn.nc }

// Handler is the public HTTP handler: the in-flight limit, then the routes.
func (s *Server) Handler() http.Handler {
	writeTimeout := time.Duration(s.cfg.HTTP.WriteTimeout)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A deadline of this request's own, for answers natsgate writes
		// before a route's handler takes over (and moves it as it writes):
		// a keep-alive connection may still carry the last answer's.
		if d, ok := w.(deadliner); ok && writeTimeout > 0 {
			_ = d.SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		if len(r.TransferEncoding) > 0 {
			// A chunked request may also have carried a Content-Length,
			// which net/http drops before a handler can see it. RFC 9112
			// §6.1: close the connection after answering, so that bytes
			// after the body are never read as another request (no
			// desync with a proxy in front that framed it by length).
			w.Header().Set("Connection", "close")
		}
		if n := s.inflight.Add(1); s.maxInflight > 0 && n > s.maxInflight {
			s.inflight.Add(-1)
			s.metrics.Rejected.WithLabelValues(metrics.RejectedInflightLimit).Inc()
			reqID := requestID(r)
			w.Header()[HeaderRequestID] = []string{reqID}
			writeProblem(w, r, classify(fmt.Errorf("%w: the limit is %d", ErrOverloaded, s.maxInflight)), "", reqID)
			return
		}
		defer s.inflight.Add(-1)
		c := s.table.Load()
		if !c.route(w, r) {
			c.mux.ServeHTTP(w, routeExtensionMethod(r, c.mux)) // see methods.go
		}
	})
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.answerUnrouted(w, r, ErrNotFound)
}

func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	var allow []string
	mux := s.table.Load().mux
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		if mux.Match(chi.NewRouteContext(), m, path) {
			allow = append(allow, m)
		}
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	s.answerUnrouted(w, r, fmt.Errorf("%w: %s (allowed: %s)", ErrMethodNotAllowed, r.Method, strings.Join(allow, ", ")))
}

// answerUnrouted writes a problem for a request no route took
// (methodNotAllowed has set Allow on a 405).
func (s *Server) answerUnrouted(w http.ResponseWriter, r *http.Request, err error) {
	start := time.Now()
	reqID := requestID(r)
	w.Header()[HeaderRequestID] = []string{reqID}
	f := classify(err)
	writeProblem(w, r, f, "", reqID)
	s.metrics.Requests.WithLabelValues("", metrics.Method(r.Method), fmt.Sprint(f.status), metrics.BackendNone).Inc()
	s.accessLog(r, "", &exchange{start: start, reqID: reqID, backend: metrics.BackendNone, status: f.status, nats: -1, worker: -1, upstream: -1, err: err}, time.Since(start))
}

// finish records a served request: metrics and the access log line.
func (s *Server) finish(rt *routes.Route, m *metrics.Route, r *http.Request, ex *exchange) {
	edge := time.Since(ex.start)
	m.Request(r.Method, ex.backend, ex.status, edge, ex.traceID)
	s.stats.request(rt.Name, ex, edge)
	s.accessLog(r, rt.Name, ex, edge)
}

// accessLog writes one line per request. Header values other than the
// request id never appear, so tokens and credentials stay out of logs.
// edge is the request's time at the edge as the metrics recorded it, so
// the line and the histogram agree to the nanosecond.
func (s *Server) accessLog(r *http.Request, route string, ex *exchange, edge time.Duration) {
	if s.access == nil {
		return
	}
	level := "INFO"
	if ex.broken {
		level = "ERROR" // the client got a broken answer
	}
	s.access.write(accessEntry{route: route, r: r, ex: ex, level: level, edgeDur: edge})
}

// requestID is the client's X-Request-Id when it is short and printable,
// else a new one.
func requestID(r *http.Request) string {
	if v := r.Header[HeaderRequestID]; len(v) == 1 && validRequestID(v[0]) {
		return v[0]
	}
	return nuid.Next()
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// traceContext reads a request's W3C Trace Context headers (Trace Context
// level 1, §3.2): traceparent is "version-traceid-parentid-flags" in
// lowercase hex, the trace id and parent id not all zeros, version ff
// invalid, a version 00 header exactly 55 characters, and a later
// version's header at least as long with any further field after a dash.
// It gives the trace id to attach to the latency histograms as an
// exemplar: only that of a valid header with the sampled flag (flags & 1),
// since an exemplar is meant to lead to a trace that was recorded. drop is
// true when the headers are not to be passed on: a traceparent that is
// invalid or repeated, or a tracestate without a valid traceparent to
// belong to. Forwarded as it came, a malformed header would break every
// tracer behind natsgate that reads it.
func traceContext(h http.Header) (id string, drop bool) {
	v := h["Traceparent"]
	if len(v) == 0 {
		return "", len(h["Tracestate"]) > 0
	}
	if len(v) != 1 {
		return "", true
	}
	t := v[0]
	if len(t) < 55 || t[2] != '-' || t[35] != '-' || t[52] != '-' ||
		!lowerHex(t[0:2]) || t[0:2] == "ff" || !lowerHex(t[3:35]) || !lowerHex(t[36:52]) || !lowerHex(t[53:55]) ||
		allZeros(t[3:35]) || allZeros(t[36:52]) {
		return "", true
	}
	if (t[0:2] == "00" && len(t) != 55) || (len(t) > 55 && t[55] != '-') {
		return "", true
	}
	if flags := t[54]; hexValue(flags)&1 == 0 {
		return "", false // valid, not sampled: passed on, no exemplar
	}
	return t[3:35], false
}

// withoutTraceContext is r without its trace headers, on a copy: a handler
// must not change the request it was given.
func withoutTraceContext(r *http.Request) *http.Request {
	r2 := r.WithContext(r.Context())
	r2.Header = r.Header.Clone()
	delete(r2.Header, "Traceparent")
	delete(r2.Header, "Tracestate")
	return r2
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZeros(s string) bool { return strings.Trim(s, "0") == "" }

// hexValue is the value of a lowercase hex digit.
func hexValue(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

// Ready reports whether the gateway should receive traffic: connected to
// NATS, routes loaded, not shutting down.
func (s *Server) Ready() (bool, string) {
	switch {
	case s.draining.Load():
		return false, "shutting down"
	case !s.conn.nc.IsConnected():
		return false, "NATS is not connected: " + s.conn.nc.Status().String()
	case s.table.Load() == nil:
		return false, "no routes loaded"
	}
	return true, "ok"
}

// Start binds both listeners and serves in the background. It returns once
// both are listening, or with the error that stopped one.
func (s *Server) Start() error {
	var err error
	if s.publicLn, err = net.Listen("tcp", s.cfg.HTTP.Listen); err != nil {
		return fmt.Errorf("http.listen %s: %w", s.cfg.HTTP.Listen, err)
	}
	if s.adminLn, err = net.Listen("tcp", s.cfg.Admin.Listen); err != nil {
		s.publicLn.Close()
		return fmt.Errorf("admin.listen %s: %w", s.cfg.Admin.Listen, err)
	}
	s.public = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: time.Duration(s.cfg.HTTP.ReadHeaderTimeout),
		IdleTimeout:       time.Duration(s.cfg.HTTP.IdleTimeout),
		MaxHeaderBytes:    int(s.cfg.HTTP.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	adminHandler := s.AdminHandler()
	adminTLS := listenerTLSOf(s.cfg, "admin")
	if adminTLS != nil && adminTLS.clientAuth == routes.ClientAuthMutations {
		adminHandler = s.requireClientCertForChanges(adminHandler)
	}
	s.admin = &http.Server{
		Handler:           adminHandler,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	err = s.prepareTLS(s.public, listenerTLSOf(s.cfg, "http"), s.cfg.HTTP.H2C, time.Duration(s.cfg.HTTP.WriteTimeout))
	if err == nil {
		err = s.prepareTLS(s.admin, adminTLS, false, 0)
	}
	if err != nil {
		s.publicLn.Close()
		s.adminLn.Close()
		return err
	}
	if len(s.certs) > 0 {
		var wctx context.Context
		wctx, s.stopCertWatch = context.WithCancel(context.Background())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.watchCertificates(wctx, s.certCheckEvery)
		}()
	}
	for _, l := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{s.public, s.publicLn}, {s.admin, s.adminLn}} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			serve := l.srv.Serve
			if l.srv.TLSConfig != nil {
				// ServeTLS adds the ALPN protocols l.srv.Protocols allows;
				// the certificate comes from TLSConfig.GetCertificate.
				serve = func(ln net.Listener) error { return l.srv.ServeTLS(ln, "", "") }
			}
			if err := serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.fail(fmt.Errorf("listener %s: %w", l.ln.Addr(), err))
			}
		}()
	}
	s.startHistory()
	if err := s.startFleet(); err != nil {
		s.log.Warn("fleet stats are off: this replica's dashboard shows itself only", "error", err)
	}
	s.startLeader()
	s.startRollouts()
	s.startDiscovery()
	// The one line that says what this process is and where it serves.
	s.log.Info("natsgate serving", "version", buildinfo.Read().Version, "http", s.publicLn.Addr().String(), "admin", s.adminLn.Addr().String(),
		"nats", s.conn.nc.ConnectedUrlRedacted(), "routes", len(s.Table().Routes),
		"http_tls", s.cfg.HTTP.TLS != nil, "admin_tls", s.cfg.Admin.TLS != nil, "h2c", s.cfg.HTTP.H2C)
	return nil
}

// Addr is the public listener's address, once started.
func (s *Server) Addr() string { return s.publicLn.Addr().String() }

// AdminAddr is the admin listener's address, once started.
func (s *Server) AdminAddr() string { return s.adminLn.Addr().String() }

// Fatal delivers an error that means the process should exit non-zero: a
// listener failed, or the NATS connection closed for good.
func (s *Server) Fatal() <-chan error { return s.fatal }

func (s *Server) fail(err error) {
	s.fatalOnce.Do(func() {
		s.log.Error("natsgate cannot go on", "error", err)
		s.fatal <- err
	})
}

// Shutdown stops in order, each step bounded by ctx: readiness off, wait
// http.shutdown_delay, stop accepting and let in-flight requests finish, drain NATS, stop the
// embedded server, close the admin listener.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	if d := time.Duration(s.cfg.HTTP.ShutdownDelay); d > 0 && s.public != nil {
		// Readiness is off: give load balancers time to notice before the
		// listener closes.
		s.log.Info("readiness off; waiting before closing the listener", "shutdown_delay", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	var errs []error
	if s.public != nil {
		if err := s.public.Shutdown(ctx); err != nil {
			// The grace is over: cut what is left, and say so.
			s.log.Warn("requests still in flight when the shutdown grace ended; their connections are closed",
				"in_flight", s.inflight.Load(), "error", err)
			_ = s.public.Close()
			errs = append(errs, fmt.Errorf("finishing in-flight requests: %w", err))
		}
	}
	if s.access != nil {
		// Every answered request's line is written, unless the sink
		// blocks past ctx: then the rest are dropped and counted in
		// natsgate_log_dropped_total. A sink shared with the event log
		// is closed by its maker, after the last event line.
		s.access.closeWithin(ctx)
	}
	s.stopHistory()
	s.stopDiscovery()
	s.stopRollouts()
	s.stopFleet()  // before the connection drains
	s.stopLeader() // hands the lead back while the connection is up
	s.closeNATS()
	if s.admin != nil {
		if err := s.admin.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.stopCertWatch != nil {
		s.stopCertWatch()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// closeNATS drains the connection natsgate owns (finishing what it has
// sent), then stops an embedded server.
func (s *Server) closeNATS() {
	s.draining.Store(true)
	if s.cutoverWatch != nil {
		_ = s.cutoverWatch.Stop()
	}
	if s.conn != nil && s.conn.replies != nil {
		s.conn.replies.close()
	}
	if s.ownConn && s.conn != nil && !s.conn.nc.IsClosed() {
		done := make(chan struct{})
		s.conn.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := s.conn.nc.Drain(); err != nil {
			s.conn.nc.Close()
		} else {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				s.conn.nc.Close()
			}
		}
	}
	if s.embedded != nil {
		s.embedded.Shutdown()
		s.embedded = nil
	}
}
