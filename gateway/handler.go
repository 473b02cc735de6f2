package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
)

// exchange is one request's record: what answered, how long each hop took.
// The access log line, the metrics and Server-Timing are made from it.
type exchange struct {
	start    time.Time
	reqID    string
	traceID  string // of a valid, sampled W3C traceparent, for exemplars; "" otherwise
	backend  string
	status   int
	bytes    int64
	nats     time.Duration // -1: no NATS hop
	worker   time.Duration // -1: the worker did not say
	upstream time.Duration // -1: no upstream hop
	err      error         // the failure the client was told of, if any
	shadowed bool          // a copy went to NATS in the background
	fellBack bool          // NATS failed and the upstream answered
	aborted  bool          // the answer broke off after its head went out: the connection is to be aborted
	broken   bool          // the upstream broke its answer off: logged at error level
	body     *bytes.Buffer // the request body as read for NATS, kept for a fallback
	// route is chi's routing context, with the path parameters the route
	// matched: read while the handler runs, never after it returned (it
	// is reused).
	route *chi.Context
	// hv backs the single-valued response headers natsgate sets (request
	// id, Content-Length, Server-Timing), so they cost no slice each.
	hv [3]string
	// out is the NATS message of a request route, built in place.
	out outbound
}

// served is what a route's handler keeps for one request, in one
// allocation: the request's record and the writer that watches its
// answer. Both outlive the handler's frame (the access log, the legacy
// proxy and a shadow copy hold them), so each would otherwise be an
// allocation of its own.
type served struct {
	ex exchange
	sw statusWriter
}

// routeHandler serves one compiled route.
type routeHandler struct {
	gw *Server
	rt *routes.Route
	m  *metrics.Route

	stage  atomic.Pointer[stageState] // the config's, or a run-time override
	nats   *natsSide                  // nil without a NATS side
	legacy *legacySide                // nil without an upstream

	writeTimeout time.Duration // http.write_timeout
}

// ServeHTTP serves a request chi routed (see compiled.route for the ones
// natsgate routes itself), with the routing context chi put in its
// context.
func (h *routeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.serveHTTP(w, r, chi.RouteContext(r.Context()))
}

// serveHTTP serves a request with the routing context of its match.
func (h *routeHandler) serveHTTP(w http.ResponseWriter, r *http.Request, route *chi.Context) {
	start := time.Now()
	trace, drop := traceContext(r.Header)
	if drop {
		r = withoutTraceContext(r) // not passed on to NATS nor the upstream
	}
	st := &served{ex: exchange{start: start, reqID: requestID(r), traceID: trace, route: route, nats: -1, worker: -1, upstream: -1}}
	ex, sw := &st.ex, &st.sw
	ex.hv[0] = ex.reqID
	w.Header()[HeaderRequestID] = ex.hv[0:1:1]
	h.m.Inflight.Inc()
	defer h.m.Inflight.Dec()

	// Server.Handler set the write deadline as the request came in; it is
	// moved only once a good part of it has gone.
	*sw = statusWriter{ResponseWriter: w, writeTimeout: h.writeTimeout, deadline: ex.start.Add(h.writeTimeout)}
	err := h.serve(sw, r, ex)
	if err != nil {
		ex.err = err
		if !sw.wrote {
			setServerTiming(sw.Header(), ex)
			// Say which side failed, as a success says which answered.
			switch ex.backend {
			case metrics.BackendNATS:
				sw.Header()[HeaderBackend] = backendNATS
			case metrics.BackendLegacy:
				sw.Header()[HeaderBackend] = backendLegacy
			}
			writeProblem(sw, r, classify(err), h.rt.Name, ex.reqID)
		}
	}
	ex.status, ex.bytes = sw.status, sw.bytes
	if ex.backend == "" {
		ex.backend = metrics.BackendNone
	}
	h.gw.finish(h.rt, h.m, r, ex)
	releaseBody(ex.body)
	if ex.aborted {
		// Recorded; now let net/http cut the connection, so the client
		// cannot take the short answer for a whole one.
		panic(http.ErrAbortHandler)
	}
}

// serve answers the request on the backend its stage picks.
func (h *routeHandler) serve(w *statusWriter, r *http.Request, ex *exchange) error {
	st := h.stage.Load()
	switch st.stage {
	case routes.Legacy:
		return h.legacy.serve(w, r, ex)
	case routes.Shadow:
		return h.serveShadow(w, r, ex)
	case routes.Canary:
		if !h.toNATS(r, st.percent) {
			return h.legacy.serve(w, r, ex)
		}
	}
	err := h.nats.serve(w, r, ex)
	if err != nil && !w.wrote && h.rt.Fallback && h.legacy != nil && classify(err).mayFallBack(r.Method) {
		h.gw.log.Debug("falling back to the upstream", "route", h.rt.Name, "request_id", ex.reqID, "error", err)
		h.replayBody(r, ex)
		ex.fellBack = true
		return h.legacy.serve(w, r, ex)
	}
	return err
}

// replayBody gives the request its buffered body again, for the upstream.
// The buffer is the upstream's from then on: a transport may still read a
// request body after it has returned the response, so it never goes back
// to the pool.
func (h *routeHandler) replayBody(r *http.Request, ex *exchange) {
	var body []byte
	if ex.body != nil {
		body = ex.body.Bytes()
		ex.body = nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// pathParams reads the route's path parameters, unescaped. chi matches on
// the raw path when the request has one, so its values are then still
// percent-encoded; otherwise they are already decoded and must not be
// decoded twice. Values may not hold white space, control or format
// characters, nor invalid UTF-8 (routes.CheckParamValue): they travel in
// NATS headers. The values are put in room, when it is large enough.
func pathParams(r *http.Request, route *chi.Context, names []string, room []string) ([]string, []string, error) {
	escaped := r.URL.RawPath != ""
	values := room[:0:len(room)]
	if len(names) > len(room) {
		values = make([]string, 0, len(names))
	}
	values = values[:len(names)]
	for i, name := range names {
		v := route.URLParam(name)
		if escaped {
			u, err := url.PathUnescape(v)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: parameter %q: bad percent-encoding", routes.ErrBadParam, name)
			}
			v = u
		}
		if err := routes.CheckParamValue(name, v); err != nil {
			return nil, nil, err
		}
		values[i] = v
	}
	return names, values, nil
}

// setServerTiming writes the hops natsgate measured, so devtools and curl
// show the split without Prometheus.
func setServerTiming(h http.Header, ex *exchange) {
	var buf [96]byte
	b := appendTiming(buf[:0], "edge", time.Since(ex.start))
	if ex.nats >= 0 {
		b = appendTiming(append(b, ", "...), "nats", ex.nats)
	}
	if ex.worker >= 0 {
		b = appendTiming(append(b, ", "...), "worker", ex.worker)
	}
	if ex.upstream >= 0 {
		b = appendTiming(append(b, ", "...), "upstream", ex.upstream)
	}
	ex.hv[2] = string(b)
	h[HeaderServerTiming] = ex.hv[2:3:3]
}

// appendTiming appends one Server-Timing metric, its duration in
// milliseconds to the microsecond: "nats;dur=0.25", "edge;dur=12".
// Written from the integer microseconds, digit by digit, it costs a tenth
// of a shortest-form float conversion, on every answer.
func appendTiming(b []byte, name string, d time.Duration) []byte {
	b = append(b, name...)
	b = append(b, ";dur="...)
	us := d.Microseconds()
	if us < 0 {
		b = append(b, '-')
		us = -us
	}
	b = strconv.AppendInt(b, us/1000, 10)
	if frac := us % 1000; frac != 0 {
		digits := [4]byte{'.', byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
		n := 4
		for digits[n-1] == '0' {
			n--
		}
		b = append(b, digits[:n]...)
	}
	return b
}

// backendNATS is the X-Natsgate-Backend value of NATS answers, shared so
// the hot path does not allocate it.
var (
	backendNATS   = []string{metrics.BackendNATS}
	backendLegacy = []string{metrics.BackendLegacy}
)

// statusWriter remembers the status and counts the bytes written. It
// also keeps the client to http.write_timeout: before each wait on the
// client the write deadline moves to that far ahead, so a client that
// takes no byte for that long is cut, while one that keeps reading a long
// answer never is.
type statusWriter struct {
	http.ResponseWriter
	status   int
	bytes    int64
	wrote    bool
	proxyErr error    // set by the reverse proxy's ErrorHandler
	capture  *capture // when shadowing: keeps the legacy answer's body

	writeTimeout time.Duration // 0: no write deadline
	deadline     time.Time     // the write deadline last set
}

// writeChunk bounds what one Write hands the connection, so that the
// deadline measures progress, not the time a whole large answer takes.
const writeChunk = 64 << 10

// deadliner is what http.ResponseController uses to set a connection's
// write deadline, asked for directly so that it costs no allocation.
type deadliner interface{ SetWriteDeadline(time.Time) error }

// keepWriting moves the write deadline write_timeout ahead, unless it was
// moved there a moment ago.
func (w *statusWriter) keepWriting() {
	if w.writeTimeout <= 0 {
		return
	}
	now := time.Now()
	if w.deadline.Sub(now) > w.writeTimeout-w.writeTimeout/4 {
		return
	}
	w.deadline = now.Add(w.writeTimeout)
	if d, ok := w.ResponseWriter.(deadliner); ok {
		_ = d.SetWriteDeadline(w.deadline)
	}
}

// noWriteDeadline lifts the write deadline for good, for a connection
// about to be handed over (an upgrade), which has limits of its own.
func (w *statusWriter) noWriteDeadline() {
	w.writeTimeout = 0
	if d, ok := w.ResponseWriter.(deadliner); ok {
		_ = d.SetWriteDeadline(time.Time{})
	}
}

// WriteHeader passes an informational answer (103 Early Hints) on without
// taking it for the status: the final one is still to come.
func (w *statusWriter) WriteHeader(code int) {
	w.keepWriting()
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	written := 0
	for {
		chunk := b[written:]
		if len(chunk) > writeChunk {
			chunk = chunk[:writeChunk]
		}
		w.keepWriting()
		n, err := w.ResponseWriter.Write(chunk)
		w.bytes += int64(n)
		if w.capture != nil {
			_, _ = w.capture.Write(chunk[:n])
		}
		written += n
		if err != nil || written == len(b) {
			return written, err
		}
	}
}

// Flush lets a streamed upstream response through as it comes.
func (w *statusWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	w.keepWriting()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
