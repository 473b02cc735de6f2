package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
	"github.com/sony/gobreaker/v2"
)

// natsConn is the NATS connection every route's NATS side shares, with the
// epoch that tells a request its connection dropped.
type natsConn struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	replies *replyMux // where request routes' replies arrive
	// epoch is canceled when the connection drops and replaced when it
	// comes back, so requests waiting on a lost connection end at once.
	epoch atomic.Pointer[connEpoch]
}

// connEpoch is one stretch of being connected: its context is canceled
// when the connection drops.
type connEpoch struct {
	context.Context
	cancel context.CancelFunc
}

func (c *natsConn) newEpoch() {
	ctx, cancel := context.WithCancel(context.Background())
	c.epoch.Store(&connEpoch{Context: ctx, cancel: cancel})
}

// dropEpoch ends the current epoch: requests in flight on it end at once.
func (c *natsConn) dropEpoch() {
	if ep := c.epoch.Load(); ep != nil {
		ep.cancel()
	}
	if c.replies != nil {
		c.replies.abandon() // after the cancel: they see the epoch over
	}
}

// natsSide is a route's NATS half: what it renders and sends, the
// connection it sends on, and its breaker. It records its own outcomes
// (the NATS hop, NATS errors by kind, the breaker) where the call is made.
type natsSide struct {
	rt   *routes.Route
	m    *metrics.Route
	conn *natsConn
	// breaker is replaced by a closed one when the connection comes back:
	// what it counted before was about a connection that is gone.
	breaker    atomic.Pointer[breaker]
	newBreaker func() *breaker
}

func newNATSSide(rt *routes.Route, m *metrics.Route, conn *natsConn, mk func(onChange func(gobreaker.State)) *breaker, gauge func(float64)) *natsSide {
	n := &natsSide{rt: rt, m: m, conn: conn}
	n.newBreaker = func() *breaker {
		gauge(breakerClosed)
		return mk(func(st gobreaker.State) { gauge(breakerValue(st)) })
	}
	n.breaker.Store(n.newBreaker())
	return n
}

// resetBreaker closes the breaker, reporting whether it was not closed.
func (n *natsSide) resetBreaker() bool {
	old := n.breaker.Swap(n.newBreaker())
	return old.cb.State() != gobreaker.StateClosed
}

// serve answers the request over NATS with the route's pattern. An error
// it returns is already classified (a *classified), so the handler and its
// fallback read the decision made here.
func (n *natsSide) serve(w *statusWriter, r *http.Request, ex *exchange) error {
	err := n.send(w, r, ex)
	if err == nil {
		return nil
	}
	c := &classified{failure: classify(err), err: err}
	if c.natsKind != "" && ex.backend == metrics.BackendNATS {
		n.m.NATSError(c.natsKind)
	}
	return c
}

func (n *natsSide) send(w *statusWriter, r *http.Request, ex *exchange) error {
	rt := n.rt
	var names, values []string
	if len(rt.Params) > 0 {
		var err error
		names, values, err = pathParams(r, ex.route, rt.Params, ex.out.params[:])
		if err != nil {
			return err
		}
	}
	subject, err := rt.Subject.Render(names, values, rt.MaxSubject)
	if err != nil {
		return err
	}
	// The body must arrive within the route's timeout (bodyDeadline).
	if hasBody(r) {
		lift := bodyDeadline(w, rt.Timeout)
		if ex.body, err = readBody(r, rt.MaxBody); err != nil {
			return err
		}
		lift()
	}
	var body []byte
	if ex.body != nil {
		body = ex.body.Bytes()
	}
	ex.backend = metrics.BackendNATS
	nc := n.conn.nc
	epoch := n.conn.epoch.Load()
	if !nc.IsConnected() || epoch.Err() != nil {
		return ErrDisconnected
	}
	// The body alone over max_payload is refused before the breaker; with
	// the headers, nats.go's exact check gives ErrMaxPayload. Either is a
	// 413, or the upstream's answer on a route with fallback.
	if int64(len(body)) > nc.MaxPayload() {
		return fmt.Errorf("%w: %d bytes", errOverMaxPayload, len(body))
	}
	// The message and its header's values live in the exchange; the
	// header map is pooled, and free again once the publish returned.
	hdr := natsHeaders.Get().(nats.Header)
	ex.out.msg.Header = hdr
	defer ex.out.releaseHeader()
	one := ex.out.values[:]
	if need := 5 + len(names); need > len(one) {
		one = make([]string, need)
	}
	fillRequestHeader(hdr, one, rt, r, ex.reqID, names, values)
	msg := &ex.out.msg
	*msg = nats.Msg{Subject: subject, Data: body, Header: hdr}

	p, err := n.breaker.Load().allow()
	if err != nil {
		return err
	}
	// A request in flight when the connection drops is answered at once,
	// not at its timeout: its reply can no longer arrive.
	switch rt.Pattern {
	case routes.Publish, routes.JetStream:
		err = n.publishWithin(w, r, msg, ex, epoch)
	default:
		err = n.request(w, r, msg, ex, epoch)
	}
	if err != nil && epoch.Err() != nil && !errors.Is(err, ErrClientGone) {
		err = errDroppedInFlight
	}
	switch {
	case err != nil:
		p.reportErr(err)
	case w.status >= 500: // a worker's Http-Status: 5xx
		p.report(unhealthy)
	default:
		p.report(healthy)
	}
	return err
}

// classified is an error with the failure classify made of it, so that
// nothing downstream decides again.
type classified struct {
	failure
	err error
}

func (c *classified) Error() string { return c.err.Error() }
func (c *classified) Unwrap() error { return c.err }

// errDroppedInFlight is a connection lost while the request was out: a
// worker may have received it and acted.
var errDroppedInFlight = fmt.Errorf("%w while the request was in flight", ErrDisconnected)

func (n *natsSide) request(w *statusWriter, r *http.Request, msg *nats.Msg, ex *exchange, epoch *connEpoch) error {
	t0 := time.Now()
	resp, err := n.conn.replies.request(msg, r.Context().Done(), n.rt.Timeout)
	ex.nats = time.Since(t0)
	metrics.Observe(n.m.NATS, ex.nats, ex.traceID)
	if err != nil {
		return natsError(r, err)
	}
	rep := mapReply(resp)
	if rep.workerTime >= 0 {
		ex.worker = rep.workerTime
		metrics.Observe(n.m.Worker, rep.workerTime, ex.traceID)
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

// publishWithin runs a publish or JetStream route's call under the
// route's timeout, ended early when the client leaves or the connection
// drops.
func (n *natsSide) publishWithin(w *statusWriter, r *http.Request, msg *nats.Msg, ex *exchange, epoch *connEpoch) error {
	ctx, cancel := context.WithTimeout(r.Context(), n.rt.Timeout)
	defer cancel()
	defer context.AfterFunc(epoch, cancel)()
	if n.rt.Pattern == routes.JetStream {
		return n.jetstream(ctx, w, r, msg, ex)
	}
	return n.publish(ctx, w, r, msg, ex)
}

// publish writes the message and flushes, so that 202 means the server has
// it: a message that only sits in a client buffer is never acknowledged.
func (n *natsSide) publish(ctx context.Context, w *statusWriter, r *http.Request, msg *nats.Msg, ex *exchange) error {
	nc := n.conn.nc
	t0 := time.Now()
	err := nc.PublishMsg(msg)
	if err == nil {
		err = nc.FlushWithContext(ctx)
	}
	ex.nats = time.Since(t0)
	metrics.Observe(n.m.NATS, ex.nats, ex.traceID)
	if err != nil {
		return natsError(r, err)
	}
	return writeAccepted(w, ex, map[string]any{"subject": msg.Subject})
}

// jetstream publishes to a stream and answers once the stream stored it. An
// Idempotency-Key becomes Nats-Msg-Id, so a retried request is stored once.
func (n *natsSide) jetstream(ctx context.Context, w *statusWriter, r *http.Request, msg *nats.Msg, ex *exchange) error {
	if key := r.Header.Get(HeaderIdempotency); key != "" {
		if len(key) > 256 {
			return fmt.Errorf("%w: Idempotency-Key is longer than 256 bytes", ErrBadRequest)
		}
		msg.Header[HeaderMsgID] = []string{key}
	}
	t0 := time.Now()
	ack, err := n.conn.js.PublishMsg(ctx, msg)
	ex.nats = time.Since(t0)
	metrics.Observe(n.m.NATS, ex.nats, ex.traceID)
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

// hasBody reports whether a request comes with a body to read.
func hasBody(r *http.Request) bool {
	return r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
}

// bodyDeadline gives the client until timeout from now to send its body,
// on NATS and legacy routes alike: one that declares a body and stalls or
// trickles it would otherwise hold its request, and an in-flight slot, for
// ever. The returned func lifts the deadline once the body is in, so that
// it cannot cut the answer short; on an error it stays, so that net/http's
// drain of the unread rest gives up too.
func bodyDeadline(w http.ResponseWriter, timeout time.Duration) (lift func()) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	return func() { _ = rc.SetReadDeadline(time.Time{}) }
}

// Request bodies are read into pooled buffers that grow with what arrives,
// never to the length a client declares: a client that declares a large
// body and sends none costs next to nothing. Buffers that grew past
// bodyPoolKeep go back to the garbage collector, not to the pool.
const bodyPoolKeep = 64 << 10

var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// releaseBody returns a body buffer to the pool.
func releaseBody(b *bytes.Buffer) {
	if b != nil && b.Cap() <= bodyPoolKeep {
		b.Reset()
		bodyBuffers.Put(b)
	}
}

// readBody reads a request body of at most max bytes as it arrives. A
// declared length over the limit is refused before anything is read; an
// undeclared one is read only up to the limit. The buffer is the
// caller's to release.
func readBody(r *http.Request, max int64) (*bytes.Buffer, error) {
	if r.ContentLength > max {
		return nil, fmt.Errorf("%w: %d bytes declared, the limit is %d", ErrBodyTooLarge, r.ContentLength, max)
	}
	if !hasBody(r) {
		return nil, nil
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	_, err := buf.ReadFrom(io.LimitReader(r.Body, max+1))
	switch {
	case err != nil:
		releaseBody(buf)
		return nil, readError(r, err)
	case int64(buf.Len()) > max:
		releaseBody(buf)
		return nil, fmt.Errorf("%w: the limit is %d bytes", ErrBodyTooLarge, max)
	case r.ContentLength > 0 && int64(buf.Len()) < r.ContentLength:
		releaseBody(buf)
		return nil, readError(r, io.ErrUnexpectedEOF)
	}
	return buf, nil
}

func readError(r *http.Request, err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The read deadline set in send; net/http cancels the request's
		// context on it too, so this comes first.
		return ErrBodyTimeout
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The body ended before its declared length or its last chunk:
		// 400, as on the legacy side. net/http cancels the context on the
		// connection's end too, yet a client that only half-closed is
		// still reading, and is owed the problem.
		return wrapf(ErrBadRequest, "the body ended before its declared length")
	}
	if r.Context().Err() != nil {
		return ErrClientGone
	}
	return fmt.Errorf("%w: reading the body: %v", ErrBadRequest, err)
}
