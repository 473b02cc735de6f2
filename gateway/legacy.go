package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
)

// upstream is a legacy service: its transport (shared by every route that
// proxies to it, so connections are reused) and its breaker.
type upstream struct {
	cfg       *routes.Upstream
	transport http.RoundTripper
	breaker   *breaker
}

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // an upstream is reached directly, whatever the environment says
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
}

// exchangeKey carries a request's exchange to the proxy's transport and
// response hooks, which see only the outgoing request.
type exchangeKey struct{}

// legacySide is a route's way to its upstream: the upstream it shares with
// other routes and the reverse proxy of this route, built once when the
// route is compiled.
type legacySide struct {
	up      *upstream
	proxy   *httputil.ReverseProxy
	maxBody int64
}

// newLegacySide builds the legacy side of one route. The proxy uses
// Rewrite, not Director, so a client's Connection header cannot strip the
// forwarding headers; hop-by-hop headers are removed by ReverseProxy
// itself.
func newLegacySide(up *upstream, rt *routes.Route, m *metrics.Route, trusted []*net.IPNet) *legacySide {
	target := up.cfg.URL
	l := &legacySide{up: up, maxBody: rt.MaxBody}
	l.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the legacy service sees the host the client asked for
			if peerTrusted(pr.In.RemoteAddr, trusted) {
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			}
			pr.SetXForwarded()
			// SetURL joins the paths; keep the client's raw path when the
			// upstream has no prefix, so escaping passes through unchanged.
			if target.Path == "" || target.Path == "/" {
				pr.Out.URL.Path, pr.Out.URL.RawPath = pr.In.URL.Path, pr.In.URL.RawPath
			}
		},
		Transport: &proxyTransport{up: up, m: m},
		ModifyResponse: func(resp *http.Response) error {
			if ex, ok := resp.Request.Context().Value(exchangeKey{}).(*exchange); ok {
				setServerTiming(resp.Header, ex)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// Leave the error to the route handler, which writes every
			// problem body in one place.
			if sw, ok := w.(*statusWriter); ok {
				sw.proxyErr = err
				return
			}
			w.WriteHeader(http.StatusBadGateway)
		},
		FlushInterval: -1, // stream bodies as they come
		BufferPool:    copyBuffers,
		ErrorLog:      nil,
	}
	return l
}

// serve proxies the request to the upstream.
func (l *legacySide) serve(w *statusWriter, r *http.Request, ex *exchange) error {
	ex.backend = metrics.BackendLegacy
	if r.ContentLength > l.maxBody {
		return fmt.Errorf("%w: %d bytes declared, the limit is %d", ErrBodyTooLarge, r.ContentLength, l.maxBody)
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, l.maxBody)
	}
	w.Header()[HeaderBackend] = backendLegacy
	// The upstream's timeout covers the whole exchange, body included; the
	// exchange rides along for the transport to time the hop.
	ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), exchangeKey{}, ex), l.up.cfg.Timeout)
	defer cancel()
	l.proxy.ServeHTTP(w, r.WithContext(ctx))
	if w.proxyErr != nil && !w.wrote {
		return w.proxyErr
	}
	return nil
}

// proxyTransport times the upstream hop, applies the upstream's breaker,
// and turns transport failures into natsgate's errors. The upstream's
// timeout is on the request's context (see legacySide.serve), so it covers the
// response body as well.
type proxyTransport struct {
	up *upstream
	m  *metrics.Route
}

func (t *proxyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	done, err := t.up.breaker.allow()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := t.up.transport.RoundTrip(req)
	d := time.Since(start)
	if ex, ok := req.Context().Value(exchangeKey{}).(*exchange); ok {
		ex.upstream = d
	}
	metrics.Observe(t.m.Upstream, d, traceID(req))
	if err != nil {
		var tooLarge *http.MaxBytesError
		switch ctxErr := req.Context().Err(); {
		case errors.Is(ctxErr, context.Canceled):
			err = ErrClientGone
		case errors.As(err, &tooLarge):
			err = wrapf(ErrBodyTooLarge, "the limit is %d bytes", tooLarge.Limit)
		case errors.Is(ctxErr, context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
			err = wrapf(ErrUpstreamTimeout, "upstream %s did not answer within %v", t.up.cfg.Name, t.up.cfg.Timeout)
		default:
			err = wrapf(ErrUpstream, "upstream %s: %v", t.up.cfg.Name, err)
		}
		done(err)
		return nil, err
	}
	if resp.StatusCode >= 500 {
		done(errServerError)
	} else {
		done(nil)
	}
	return resp, nil
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
// one allocated per proxied response.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }
