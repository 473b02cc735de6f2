package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// upstream is a legacy service: its transport (shared by every route that
// proxies to it, so connections are reused) and its breaker.
type upstream struct {
	cfg       *routes.Upstream
	transport http.RoundTripper
	breaker   *breaker

	mu sync.Mutex
	// gauges are the natsgate_breaker_state series of the routes that use
	// it in the table being served; a reload replaces them.
	gauges []prometheus.Gauge
}

// useGauges makes gauges the breaker's state series from now on.
func (u *upstream) useGauges(gauges []prometheus.Gauge) {
	u.mu.Lock()
	u.gauges = gauges
	u.mu.Unlock()
	// Read apart from u.mu: a state change holds the breaker's lock while
	// it takes u.mu.
	u.stateChanged(u.breaker.cb.State())
}

func (u *upstream) stateChanged(st gobreaker.State) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, g := range u.gauges {
		g.Set(breakerValue(st))
	}
}

func newTransport(tlsConfig *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig:       tlsConfig, // nil: the system's roots
		Proxy:                 nil,       // an upstream is reached directly, whatever the environment says
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
}

// callKey carries a request's legacyCall to the proxy's hooks and
// transport, which see only the outgoing request.
type callKey struct{}

// legacySide is a route's way to its upstream: the upstream it shares with
// other routes and the reverse proxy of this route, built once when the
// route is compiled.
type legacySide struct {
	up      *upstream
	proxy   *httputil.ReverseProxy
	m       *metrics.Route
	maxBody int64
	// idle ends a connection upgraded through the route (101 Switching
	// Protocols) after this long without a byte either way: the
	// listener's http.idle_timeout, since the upstream timeout is for
	// one answer, not for a session.
	idle time.Duration
	// log takes the cause of a failed exchange, which the client is not
	// shown: it names the upstream's address, and over TLS its
	// certificate.
	log *slog.Logger
}

// legacyCall is one request's trip through the legacy side: what the
// proxy's hooks learn on the way, read by serve once the proxy is done.
type legacyCall struct {
	ex     *exchange
	w      *statusWriter
	client context.Context // the client's own context: done when it left

	reqMu    sync.Mutex
	reqErr   error // the first error reading the client's body
	hasBody  bool  // the request came with a body to read
	bodyDone bool  // the client's body was read to its end
	// bodyRead lifts the read deadline the client's body was read under.
	bodyRead func()

	pass     pass          // the breaker's, while the answer's body is out
	body     *upstreamBody // the answer's body, as the proxy reads it
	switched *upgradedConn // set when the upstream switched protocols
	wait     *time.Timer   // an upgrade's upstream timeout, stopped by the 101
}

// newLegacySide builds the legacy side of one route. The proxy uses
// Rewrite, not Director, so a client's Connection header cannot strip the
// forwarding headers; hop-by-hop headers are removed by ReverseProxy
// itself. httputil's own log lines go to log, as JSON like the rest.
func newLegacySide(up *upstream, rt *routes.Route, m *metrics.Route, trusted []*net.IPNet, idle time.Duration, log *slog.Logger) *legacySide {
	target := up.cfg.URL
	l := &legacySide{up: up, m: m, maxBody: rt.MaxBody, idle: idle, log: log.With("route", rt.Name, "upstream", up.cfg.Name)}
	l.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the legacy service sees the host the client asked for
			if pr.In.Method == http.MethodHead {
				// An upstream that answers a HEAD with a body leaves those
				// bytes on the connection, where the next request on it,
				// another client's, would read them as its answer. A HEAD
				// gets a connection of its own, closed after the answer.
				pr.Out.Close = true
			}
			fromProxy := peerTrusted(pr.In.RemoteAddr, trusted)
			if fromProxy {
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			}
			pr.SetXForwarded()
			if fromProxy {
				keepForwardedProtoHost(pr.Out.Header, pr.In.Header)
			}
			// SetURL joins the paths; keep the client's raw path when the
			// upstream has no prefix, so escaping passes through unchanged.
			if target.Path == "" || target.Path == "/" {
				pr.Out.URL.Path, pr.Out.URL.RawPath = pr.In.URL.Path, pr.In.URL.RawPath
			}
			// The upstream logs natsgate's request id, so the two logs join.
			if call, ok := pr.In.Context().Value(callKey{}).(*legacyCall); ok {
				pr.Out.Header[HeaderRequestID] = call.ex.hv[0:1:1]
			}
		},
		Transport:      &proxyTransport{l: l},
		ModifyResponse: modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// Leave the error to the route handler, which writes every
			// problem body in one place.
			if sw, ok := w.(*statusWriter); ok {
				sw.proxyErr = err
				return
			}
			w.WriteHeader(http.StatusBadGateway)
		},
		// 0, as httputil defaults: an answer of unknown length (chunked)
		// and text/event-stream are flushed as they come, by httputil
		// itself; one with a Content-Length goes out with its head in one
		// write. -1 would flush the head on its own first, on a timer that
		// fires at once: a second write for every answer, and a second
		// read for the client.
		FlushInterval: 0,
		BufferPool:    copyBuffers,
		ErrorLog:      slog.NewLogLogger(log.With("route", rt.Name, "upstream", up.cfg.Name).Handler(), slog.LevelWarn),
	}
	return l
}

// modifyResponse makes natsgate's headers the only ones of their names:
// the upstream's own X-Request-Id or X-Natsgate-Backend would otherwise be
// added beside them. They are set on the client's header map here, after
// any 1xx answer (after which httputil clears that map).
func modifyResponse(resp *http.Response) error {
	call, ok := resp.Request.Context().Value(callKey{}).(*legacyCall)
	if !ok {
		return nil
	}
	for _, k := range []string{HeaderRequestID, HeaderBackend, HeaderServerTiming} {
		delete(resp.Header, k)
	}
	h := call.w.Header()
	h[HeaderRequestID] = call.ex.hv[0:1:1]
	h[HeaderBackend] = backendLegacy
	setServerTiming(h, call.ex)
	return nil
}

// serve proxies the request to the upstream. Whatever happens to the
// answer's body, the exchange is recorded: when the body breaks off after
// the head went out, serve returns the error and sets ex.aborted, and the
// route handler, once it has recorded the exchange, aborts the client's
// connection so that the client sees a broken answer, never a clean short
// one.
func (l *legacySide) serve(w *statusWriter, r *http.Request, ex *exchange) (err error) {
	ex.backend = metrics.BackendLegacy
	if r.ContentLength > l.maxBody {
		return fmt.Errorf("%w: %d bytes declared, the limit is %d", ErrBodyTooLarge, r.ContentLength, l.maxBody)
	}
	call := &legacyCall{ex: ex, w: w, client: r.Context()}
	if hasBody(r) {
		// The body must arrive within the upstream's timeout, as a NATS
		// route's within its own (bodyDeadline): a client that stalls or
		// trickles it is answered 408 and never counted against the
		// upstream.
		call.hasBody = true
		call.bodyRead = bodyDeadline(w, l.up.cfg.Timeout)
		r.Body = &clientBody{ReadCloser: http.MaxBytesReader(w, r.Body, l.maxBody), call: call}
	}
	w.Header()[HeaderBackend] = backendLegacy
	dropH2CUpgrade(r.Header)
	// The upstream's timeout covers the whole exchange, body included. A
	// request to upgrade the connection is the exception: its timeout
	// covers getting the 101, and the upgraded connection then has the
	// idle limit instead.
	ctx := context.WithValue(r.Context(), callKey{}, call)
	var cancel func()
	if r.Header.Get("Upgrade") != "" && hasToken(r.Header["Connection"], "upgrade") {
		var cancelCause context.CancelCauseFunc
		ctx, cancelCause = context.WithCancelCause(ctx)
		call.wait = time.AfterFunc(l.up.cfg.Timeout, func() { cancelCause(context.DeadlineExceeded) })
		cancel = func() { call.wait.Stop(); cancelCause(context.Canceled) }
		w.noWriteDeadline() // the session has the idle limit instead
	} else {
		ctx, cancel = context.WithTimeout(ctx, l.up.cfg.Timeout)
	}
	defer cancel()

	finished := false
	defer func() {
		if finished {
			return
		}
		p := recover()
		err = l.settle(call, true)
		switch p {
		case nil: // runtime.Goexit: nothing to recover
		case http.ErrAbortHandler:
			ex.aborted = true
		default:
			panic(p)
		}
	}()
	l.proxy.ServeHTTP(w, r.WithContext(ctx))
	finished = true

	if call.switched != nil && !w.wrote {
		// The connection was hijacked and the 101 written on it.
		w.status, w.wrote = http.StatusSwitchingProtocols, true
		w.bytes = call.switched.sent.Load()
	}
	if err := l.settle(call, false); err != nil {
		return err
	}
	if w.proxyErr != nil && !w.wrote {
		// A 1xx answer may have cleared the header map.
		w.Header()[HeaderRequestID] = ex.hv[0:1:1]
		return w.proxyErr
	}
	return nil
}

// dropH2CUpgrade removes a client's request to switch to cleartext
// HTTP/2 (Upgrade: h2c, RFC 7540 §3.2), so that the request goes to the
// upstream as plain HTTP/1.1. An upstream that honoured it would speak
// HTTP/2 on the spliced connection, and the client could then send it
// requests for any path and method, past the route that grants one
// (h2c smuggling). Other upgrades (WebSocket) are the route's to pass.
func dropH2CUpgrade(h http.Header) {
	if !hasToken(h["Upgrade"], "h2c") {
		return
	}
	delete(h, "Upgrade")
	delete(h, "Http2-Settings")
}

// hasToken reports whether a comma-separated header holds token, in any
// case (Connection: keep-alive, Upgrade).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// settle tells the upstream's breaker how an answer whose head arrived
// ended, and returns the error to record. A body copied to its end is a
// success. A body that broke off on the upstream's side (cut, stalled past
// the timeout) is an upstream failure; one that stopped because the client
// left is neither. aborted says httputil gave up copying.
func (l *legacySide) settle(call *legacyCall, aborted bool) error {
	if call.pass.done == nil {
		return nil // no answer came; RoundTrip told the breaker
	}
	p := call.pass
	call.pass = pass{}
	var err error
	switch b := call.body; {
	case call.client.Err() != nil && (aborted || b.err != nil):
		err = ErrClientGone
	case b.err != nil:
		cause := b.err.Error()
		if errors.Is(b.err, context.DeadlineExceeded) {
			cause = fmt.Sprintf("nothing more within the upstream timeout of %v", l.up.cfg.Timeout)
		}
		err = fmt.Errorf("%w: upstream body cut short after %d bytes: %s", ErrUpstream, b.n, cause)
		call.ex.broken = true
		l.m.UpstreamError(metrics.UpstreamBodyCut)
	case aborted:
		err = ErrClientGone // the copy failed writing to the client
	}
	p.reportErr(err)
	return err
}

// proxyTransport times the upstream hop, applies the upstream's breaker,
// and turns transport failures into natsgate's errors. The breaker counts
// only what says the upstream is unwell: it could not be reached, failed
// on the wire, or was too slow. Any answer is a success, a 5xx included
// (it is the application's answer, passed on as it is), unless its body
// then breaks off (see settle). A client that left or sent too much says
// nothing about the upstream, and is not counted.
type proxyTransport struct{ l *legacySide }

func (t *proxyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	up := t.l.up
	p, err := up.breaker.allow()
	if err != nil {
		return nil, err
	}
	call, _ := req.Context().Value(callKey{}).(*legacyCall)
	start := time.Now()
	resp, err := up.transport.RoundTrip(req)
	d := time.Since(start)
	if call != nil {
		call.ex.upstream = d
	}
	trace := ""
	if call != nil {
		trace = call.ex.traceID // parsed once, as the request came in
	}
	metrics.Observe(t.l.m.Upstream, d, trace)
	if err != nil {
		err = t.failure(req, call, err)
		p.reportErr(err)
		return nil, err
	}
	if call == nil {
		p.report(healthy)
		return resp, nil
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if call.wait != nil {
			call.wait.Stop() // the upstream answered in time; the idle limit takes over
		}
		p.report(healthy)
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			c := newUpgradedConn(rwc, t.l.idle)
			call.switched = c
			resp.Body = c
		}
		return resp, nil
	}
	call.pass = p
	call.body = &upstreamBody{ReadCloser: resp.Body}
	resp.Body = call.body
	return resp, nil
}

// failure maps an error of the upstream hop to natsgate's, and counts
// those that are the upstream's.
func (t *proxyTransport) failure(req *http.Request, call *legacyCall, err error) error {
	var tooLarge *http.MaxBytesError
	var reqErr error
	client := req.Context()
	if call != nil {
		reqErr, client = call.requestError(), call.client
	}
	up := t.l.up.cfg
	deadline := errors.Is(context.Cause(req.Context()), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)
	switch {
	case errors.Is(reqErr, os.ErrDeadlineExceeded), deadline && call != nil && call.bodyPending():
		// The client did not send its body in time: the upstream was
		// waiting for it, and is not to blame.
		return wrapf(ErrBodyTimeout, "the body did not arrive within %v", up.Timeout)
	case errors.Is(reqErr, io.ErrUnexpectedEOF):
		return wrapf(ErrBadRequest, "the body ended before its declared length")
	case client.Err() != nil:
		return ErrClientGone
	case errors.As(err, &tooLarge), errors.As(reqErr, &tooLarge):
		return wrapf(ErrBodyTooLarge, "the limit is %d bytes", tooLarge.Limit)
	case reqErr != nil && isConnError(reqErr):
		// The client's connection broke under its body: it left.
		return ErrClientGone
	case reqErr != nil:
		// The client is still there and sent a malformed body (bad
		// chunking): it is owed a 400 problem, as on a NATS route.
		return wrapf(ErrBadRequest, "reading the body: %v", reqErr)
	case deadline:
		t.l.m.UpstreamError(metrics.UpstreamTimeout)
		return wrapf(ErrUpstreamTimeout, "upstream %s did not answer within %v", up.Name, up.Timeout)
	}
	t.l.m.UpstreamError(metrics.UpstreamFailed)
	t.l.log.Warn("upstream exchange failed", "request_id", requestID(req), "error", err)
	return wrapf(ErrUpstream, "upstream %s could not be reached, or failed on the wire", up.Name)
}

// isConnError reports whether a body read failed on the connection itself
// (reset, closed), not on what the client sent.
func isConnError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed)
}

// clientBody is the client's request body on its way to the upstream. It
// keeps the first read error, so that a body the client broke off is not
// taken for an upstream failure.
type clientBody struct {
	io.ReadCloser
	call *legacyCall
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.call.reqMu.Lock()
		first := !b.call.bodyDone
		b.call.bodyDone = true
		b.call.reqMu.Unlock()
		if first && b.call.bodyRead != nil {
			b.call.bodyRead()
		}
	case err != nil:
		b.call.reqMu.Lock()
		if b.call.reqErr == nil {
			b.call.reqErr = err
		}
		b.call.reqMu.Unlock()
	}
	return n, err
}

// bodyPending reports whether the client's body was still being waited
// for.
func (c *legacyCall) bodyPending() bool {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	return c.hasBody && !c.bodyDone && c.reqErr == nil
}

func (c *legacyCall) requestError() error {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	return c.reqErr
}

// upstreamBody is an answer's body as the proxy copies it to the client:
// how much came and the error it broke off with, if any. The proxy reads
// it on the request's goroutine.
type upstreamBody struct {
	io.ReadCloser
	n   int64
	err error // the first read error other than io.EOF
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// upgradedConn is the upstream's side of an upgraded connection. It is
// closed after idle without a byte either way, which ends the proxy's
// copying in both directions; sent counts the bytes to the client.
type upgradedConn struct {
	io.ReadWriteCloser
	idle  time.Duration
	timer *time.Timer
	sent  atomic.Int64
}

func newUpgradedConn(rwc io.ReadWriteCloser, idle time.Duration) *upgradedConn {
	c := &upgradedConn{ReadWriteCloser: rwc, idle: idle}
	c.timer = time.AfterFunc(idle, func() { _ = rwc.Close() })
	return c
}

func (c *upgradedConn) Read(p []byte) (int, error) {
	n, err := c.ReadWriteCloser.Read(p)
	if n > 0 {
		c.sent.Add(int64(n))
		c.timer.Reset(c.idle)
	}
	return n, err
}

func (c *upgradedConn) Write(p []byte) (int, error) {
	n, err := c.ReadWriteCloser.Write(p)
	if n > 0 {
		c.timer.Reset(c.idle)
	}
	return n, err
}

func (c *upgradedConn) Close() error {
	c.timer.Stop()
	return c.ReadWriteCloser.Close()
}

// keepForwardedProtoHost puts back the X-Forwarded-Proto and
// X-Forwarded-Host a trusted proxy sent (one that terminated TLS knows the
// client's scheme and host; natsgate only knows its own connection's),
// each when it is one plain value: "http" or "https" (any case), and a
// host or host:port of the bytes a host may hold. Anything else keeps
// what SetXForwarded set from natsgate's own connection.
func keepForwardedProtoHost(out, in http.Header) {
	if v := in["X-Forwarded-Proto"]; len(v) == 1 {
		if p := strings.ToLower(v[0]); p == "http" || p == "https" {
			out["X-Forwarded-Proto"] = []string{p}
		}
	}
	if v := in["X-Forwarded-Host"]; len(v) == 1 && validForwardedHost(v[0]) {
		out["X-Forwarded-Host"] = v
	}
}

// validForwardedHost reports whether h is a host or host:port (a name, an
// IPv4 address, or an IPv6 one in brackets) of at most 255 bytes.
func validForwardedHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// peerTrusted reports whether the direct peer is a trusted proxy, whose
// X-Forwarded-For may be kept.
func peerTrusted(remoteAddr string, trusted []*net.IPNet) bool {
	if len(trusted) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, n := range trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// wrapf wraps a sentinel with a detail: errors.Is still finds the sentinel.
func wrapf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

// copyBuffers lends the reverse proxy its 32 KiB copy buffers, instead of
// one allocated per proxied response. It is a free list on a channel, not
// a sync.Pool: ReverseProxy hands buffers back as []byte, and putting one
// into a sync.Pool would allocate a pointer to it every time. Up to
// copyBuffersKept wait for reuse; more go to the garbage collector.
var copyBuffers = &bufferPool{free: make(chan []byte, copyBuffersKept)}

const copyBuffersKept = 256 // 8 MiB at most

type bufferPool struct{ free chan []byte }

func (p *bufferPool) Get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, 32<<10)
	}
}

func (p *bufferPool) Put(b []byte) {
	if cap(b) != 32<<10 {
		return
	}
	select {
	case p.free <- b[:cap(b)]:
	default:
	}
}
