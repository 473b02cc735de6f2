package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
)

// exchange is one request's record: what answered, how long each hop took.
// The access log line, the metrics and Server-Timing are made from it.
type exchange struct {
	start    time.Time
	reqID    string
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
	body     []byte        // the request body as read for NATS, kept for a fallback
	// hv backs the single-valued response headers natsgate sets (request
	// id, Content-Length, Server-Timing), so they cost no slice each.
	hv [3]string
}

// routeHandler serves one compiled route.
type routeHandler struct {
	gw *Server
	rt *routes.Route
	m  *metrics.Route

	stage       atomic.Pointer[stageState] // the config's, or a run-time override
	natsBreaker *breaker                   // nil without a NATS side
	legacy      *legacySide                // nil without an upstream
}

func (h *routeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := exchange{start: time.Now(), reqID: requestID(r), nats: -1, worker: -1, upstream: -1}
	ex.hv[0] = ex.reqID
	w.Header()[HeaderRequestID] = ex.hv[0:1:1]
	h.m.Inflight.Inc()
	defer h.m.Inflight.Dec()

	sw := statusWriter{ResponseWriter: w}
	err := h.serve(&sw, r, &ex)
	if err != nil {
		ex.err = err
		f := classify(err)
		if f.natsKind != "" && ex.backend == metrics.BackendNATS {
			h.m.NATSError(f.natsKind)
		}
		if !sw.wrote {
			setServerTiming(sw.Header(), &ex)
			// Say which side failed, as a success says which answered.
			switch ex.backend {
			case metrics.BackendNATS:
				sw.Header()[HeaderBackend] = backendNATS
			case metrics.BackendLegacy:
				sw.Header()[HeaderBackend] = backendLegacy
			}
			writeProblem(&sw, r, f, h.rt.Name, ex.reqID)
		}
	}
	ex.status, ex.bytes = sw.status, sw.bytes
	if ex.backend == "" {
		ex.backend = metrics.BackendNone
	}
	h.gw.finish(h.rt, h.m, r, &ex)
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
	err := h.serveNATS(w, r, ex)
	if err != nil && !w.wrote && h.canFallBack(r, err) {
		h.gw.log.Debug("falling back to the upstream", "route", h.rt.Name, "request_id", ex.reqID, "error", err)
		h.replayBody(r, ex.body)
		ex.fellBack = true
		return h.legacy.serve(w, r, ex)
	}
	return err
}

// canFallBack reports whether a NATS failure may be answered by the
// upstream: on no responders, an open breaker or a lost connection, where
// nothing reached a worker; after a timeout only for idempotent methods,
// since a worker may have acted.
func (h *routeHandler) canFallBack(r *http.Request, err error) bool {
	if !h.rt.Fallback || h.legacy == nil {
		return false
	}
	switch f := classify(err); f.kind {
	case "no_responders", "no_stream", "breaker_open":
		return true
	case "nats_disconnected":
		if !errors.Is(err, errDroppedInFlight) {
			return true // nothing was sent
		}
		fallthrough // a worker may have acted, as after a timeout
	case "timeout":
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
			return true
		}
	}
	return false
}

// replayBody gives the request its buffered body again, for the upstream.
func (h *routeHandler) replayBody(r *http.Request, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// errDroppedInFlight is a connection lost while the request was out: a
// worker may have received it and acted.
var errDroppedInFlight = fmt.Errorf("%w while the request was in flight", ErrDisconnected)

// serveNATS answers over NATS with the route's pattern.
func (h *routeHandler) serveNATS(w *statusWriter, r *http.Request, ex *exchange) error {
	rt := h.rt
	var names, values []string
	if len(rt.Params) > 0 {
		var err error
		names, values, err = pathParams(r, rt.Params)
		if err != nil {
			return err
		}
	}
	subject, err := rt.Subject.Render(names, values, rt.MaxSubject)
	if err != nil {
		return err
	}
	// The body must arrive within the route's timeout: a client that
	// declares a body and stops sending would otherwise hold its request,
	// and an in-flight slot, for ever. The deadline is lifted once the
	// body is in, so that it cannot cut the wait for the reply short; on
	// an error it stays, so that net/http's drain of the unread rest
	// gives up too.
	var body []byte
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(rt.Timeout))
		if body, err = readBody(r, rt.MaxBody); err != nil {
			return err
		}
		_ = rc.SetReadDeadline(time.Time{})
	}
	ex.body = body
	ex.backend = metrics.BackendNATS
	nc := h.gw.nc
	epoch := h.gw.epoch.Load()
	if !nc.IsConnected() || epoch.Err() != nil {
		return ErrDisconnected
	}
	// The body alone over max_payload is refused before the breaker; with
	// the headers, nats.go's exact check gives ErrMaxPayload, also 413.
	if int64(len(body)) > nc.MaxPayload() {
		return fmt.Errorf("%w: %d bytes is over the NATS server's max_payload", ErrBodyTooLarge, len(body))
	}
	msg := &nats.Msg{Subject: subject, Data: body, Header: requestHeader(rt, r, ex.reqID, names, values)}

	done, err := h.natsBreaker.allow()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), rt.Timeout)
	defer cancel()
	// A request in flight when the connection drops is answered at once,
	// not at its timeout: its reply can no longer arrive.
	defer context.AfterFunc(epoch, cancel)()
	switch rt.Pattern {
	case routes.Publish:
		err = h.publish(ctx, w, r, msg, ex)
	case routes.JetStream:
		err = h.jetstream(ctx, w, r, msg, ex)
	default:
		err = h.request(ctx, w, r, msg, ex)
	}
	if err != nil && epoch.Err() != nil && !errors.Is(err, ErrClientGone) {
		err = errDroppedInFlight
	}
	if err == nil && w.status >= 500 {
		done(errServerError)
	} else {
		done(err)
	}
	return err
}

func (h *routeHandler) request(ctx context.Context, w *statusWriter, r *http.Request, msg *nats.Msg, ex *exchange) error {
	t0 := time.Now()
	resp, err := h.gw.nc.RequestMsgWithContext(ctx, msg)
	ex.nats = time.Since(t0)
	metrics.Observe(h.m.NATS, ex.nats, traceID(r))
	if err != nil {
		return natsError(r, err)
	}
	rep := mapReply(resp)
	if rep.workerTime >= 0 {
		ex.worker = rep.workerTime
		metrics.Observe(h.m.Worker, rep.workerTime, traceID(r))
	}
	if rep.workerErr != nil {
		return rep.workerErr
	}
	hdr := w.Header()
	for k, v := range rep.header {
		hdr[k] = v
	}
	ex.hv[1] = strconv.Itoa(len(rep.body))
	hdr["Content-Length"] = ex.hv[1:2:2]
	hdr[HeaderBackend] = backendNATS
	setServerTiming(hdr, ex)
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body)
	return nil
}

// publish writes the message and flushes, so that 202 means the server has
// it: a message that only sits in a client buffer is never acknowledged.
func (h *routeHandler) publish(ctx context.Context, w *statusWriter, r *http.Request, msg *nats.Msg, ex *exchange) error {
	nc := h.gw.nc
	t0 := time.Now()
	err := nc.PublishMsg(msg)
	if err == nil {
		err = nc.FlushWithContext(ctx)
	}
	ex.nats = time.Since(t0)
	metrics.Observe(h.m.NATS, ex.nats, traceID(r))
	if err != nil {
		return natsError(r, err)
	}
	return writeAccepted(w, ex, map[string]any{"subject": msg.Subject})
}

// jetstream publishes to a stream and answers once the stream stored it. An
// Idempotency-Key becomes Nats-Msg-Id, so a retried request is stored once.
func (h *routeHandler) jetstream(ctx context.Context, w *statusWriter, r *http.Request, msg *nats.Msg, ex *exchange) error {
	if key := r.Header.Get(HeaderIdempotency); key != "" {
		if len(key) > 256 {
			return fmt.Errorf("%w: Idempotency-Key is longer than 256 bytes", ErrBadRequest)
		}
		msg.Header[HeaderMsgID] = []string{key}
	}
	t0 := time.Now()
	ack, err := h.gw.js.PublishMsg(ctx, msg)
	ex.nats = time.Since(t0)
	metrics.Observe(h.m.NATS, ex.nats, traceID(r))
	if err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			return ErrNoStream
		}
		return natsError(r, err)
	}
	return writeAccepted(w, ex, map[string]any{"stream": ack.Stream, "seq": ack.Sequence, "duplicate": ack.Duplicate})
}

func writeAccepted(w *statusWriter, ex *exchange, body map[string]any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	hdr := w.Header()
	hdr["Content-Type"] = []string{"application/json"}
	ex.hv[1] = strconv.Itoa(len(b))
	hdr["Content-Length"] = ex.hv[1:2:2]
	hdr[HeaderBackend] = backendNATS
	setServerTiming(hdr, ex)
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
	return nil
}

// natsError tells a client that left apart from a timeout of the route.
func natsError(r *http.Request, err error) error {
	if r.Context().Err() != nil {
		return ErrClientGone
	}
	return err
}

// pathParams reads the route's path parameters, unescaped. chi matches on
// the raw path when the request has one, so its values are then still
// percent-encoded; otherwise they are already decoded and must not be
// decoded twice. Values may not hold control characters: they travel in
// NATS headers.
func pathParams(r *http.Request, names []string) ([]string, []string, error) {
	rctx := chi.RouteContext(r.Context())
	escaped := r.URL.RawPath != ""
	values := make([]string, len(names))
	for i, name := range names {
		v := rctx.URLParam(name)
		if escaped {
			u, err := url.PathUnescape(v)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: parameter %q: bad percent-encoding", routes.ErrBadParam, name)
			}
			v = u
		}
		for j := 0; j < len(v); j++ {
			if c := v[j]; c < ' ' || c == 0x7f {
				return nil, nil, fmt.Errorf("%w: parameter %q: contains a control character", routes.ErrBadParam, name)
			}
		}
		values[i] = v
	}
	return names, values, nil
}

// readBody reads a request body of at most max bytes. A declared length
// over the limit is refused before anything is read; an undeclared one is
// read only up to the limit.
func readBody(r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, fmt.Errorf("%w: %d bytes declared, the limit is %d", ErrBodyTooLarge, r.ContentLength, max)
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	if r.ContentLength > 0 {
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return nil, readError(r, err)
		}
		return buf, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, readError(r, err)
	}
	if int64(len(buf)) > max {
		return nil, fmt.Errorf("%w: the limit is %d bytes", ErrBodyTooLarge, max)
	}
	return buf, nil
}

func readError(r *http.Request, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The read deadline set in serveNATS; net/http cancels the
		// request's context on it too, so this comes first.
		return ErrBodyTimeout
	}
	if r.Context().Err() != nil {
		return ErrClientGone
	}
	return fmt.Errorf("%w: reading the body: %v", ErrBadRequest, err)
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

func appendTiming(b []byte, name string, d time.Duration) []byte {
	b = append(b, name...)
	b = append(b, ";dur="...)
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', -1, 64)
}

// backendNATS is the X-Natsgate-Backend value of NATS answers, shared so
// the hot path does not allocate it.
var (
	backendNATS   = []string{metrics.BackendNATS}
	backendLegacy = []string{metrics.BackendLegacy}
)

// statusWriter remembers the status and counts the bytes written.
type statusWriter struct {
	http.ResponseWriter
	status   int
	bytes    int64
	wrote    bool
	proxyErr error    // set by the reverse proxy's ErrorHandler
	capture  *capture // when shadowing: keeps the legacy answer's body
}

// WriteHeader passes an informational answer (103 Early Hints) on without
// taking it for the status: the final one is still to come.
func (w *statusWriter) WriteHeader(code int) {
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
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	if w.capture != nil {
		_, _ = w.capture.Write(b[:n])
	}
	return n, err
}

// Flush lets a streamed upstream response through as it comes.
func (w *statusWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
