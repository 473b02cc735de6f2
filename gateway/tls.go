package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// certCheckInterval is how often a listener's certificate files are read
// again to see whether they changed (SIGHUP reads them at once).
const certCheckInterval = 2 * time.Second

// h2MaxConcurrentStreams bounds the streams of one HTTP/2 connection, as
// Go's own default does; every stream still counts against
// http.max_inflight, as an HTTP/1 request does.
const h2MaxConcurrentStreams = 250

// listenerTLS is one listener's tls section, the public's and the
// admin's read into one shape.
type listenerTLS struct {
	listener   string // "http" or "admin": the metric label, and the config section
	certFile   string
	keyFile    string
	minVersion string
	clientCA   string // admin only
	clientAuth string // admin only: routes.ClientAuthRequire or routes.ClientAuthMutations
}

// listenersTLS returns the tls sections a config sets.
func listenersTLS(cfg routes.Config) []listenerTLS {
	var out []listenerTLS
	if l := cfg.HTTP.TLS; l != nil {
		out = append(out, listenerTLS{listener: "http", certFile: l.CertFile, keyFile: l.KeyFile, minVersion: l.MinVersion})
	}
	if a := cfg.Admin.TLS; a != nil {
		out = append(out, listenerTLS{listener: "admin", certFile: a.CertFile, keyFile: a.KeyFile, minVersion: a.MinVersion,
			clientCA: a.ClientCAFile, clientAuth: a.ClientAuth})
	}
	return out
}

// checkTLSFiles reads every file the config's tls sections name and
// reports each that cannot serve: unreadable, not PEM, a key that does not
// match its certificate, a CA file without a certificate. It is LoadConfig's
// I/O half of the checks routes.Compile makes, so `natsgate validate`
// reports these too, each naming file, line and field.
func checkTLSFiles(t *routes.Table) []error {
	var errs []error
	for _, l := range listenersTLS(t.Config) {
		p := l.listener + ".tls"
		if _, _, _, err := loadPair(l.certFile, l.keyFile); err != nil {
			errs = append(errs, pairProblem(t, p, err))
		}
		if l.clientCA != "" {
			if _, err := loadCAPool(l.clientCA); err != nil {
				errs = append(errs, t.Problem(p+".client_ca_file", "%v", err))
			}
		}
	}
	for name, u := range t.Config.Upstreams {
		if u.TLS == nil {
			continue
		}
		p := "upstreams." + name + ".tls"
		if u.TLS.CAFile != "" {
			if _, err := loadCAPool(u.TLS.CAFile); err != nil {
				errs = append(errs, t.Problem(p+".ca_file", "%v", err))
			}
		}
		if u.TLS.CertFile != "" && u.TLS.KeyFile != "" {
			if _, _, _, err := loadPair(u.TLS.CertFile, u.TLS.KeyFile); err != nil {
				errs = append(errs, pairProblem(t, p, err))
			}
		}
	}
	return errs
}

// pairError is why a certificate and key cannot serve, and which of the
// two fields is at fault.
type pairError struct {
	field string // "cert_file" or "key_file"
	err   error
}

func (e *pairError) Error() string { return e.err.Error() }
func (e *pairError) Unwrap() error { return e.err }

func pairProblem(t *routes.Table, section string, err error) error {
	field := "cert_file"
	var pe *pairError
	if errors.As(err, &pe) {
		field = pe.field
	}
	return t.Problem(section+"."+field, "%v", err)
}

// loadPair reads a PEM certificate (a chain may follow the leaf) and its
// key, and checks that they belong together. It returns the files' bytes
// too, so a watcher can tell when they change.
func loadPair(certFile, keyFile string) (*tls.Certificate, []byte, []byte, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, nil, &pairError{"cert_file", fmt.Errorf("cannot read the certificate: %w", err)}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, nil, &pairError{"key_file", fmt.Errorf("cannot read the key: %w", err)}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		field := "key_file"
		if strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "does not match") {
			field = "cert_file" // no certificate in the file, or one that does not parse
		}
		if strings.Contains(err.Error(), "does not match") {
			err = fmt.Errorf("the key in %s does not match the certificate in %s: %w", keyFile, certFile, err)
		}
		return nil, nil, nil, &pairError{field, err}
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, nil, nil, &pairError{"cert_file", err}
		}
	}
	return &cert, certPEM, keyPEM, nil
}

// loadCAPool reads a PEM file of authorities.
func loadCAPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the authorities: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// certificate is the pair a listener serves. It is read again when its
// files change; handshakes take whichever pair is current, so a rotation
// drops no connection, and a new pair that does not load is logged while
// the old one keeps serving.
type certificate struct {
	listener          string
	certFile, keyFile string
	log               *slog.Logger
	expiry            prometheus.Gauge

	cur atomic.Pointer[tls.Certificate]

	mu                sync.Mutex // one reload at a time
	lastCert, lastKey []byte     // the bytes cur was read from
	badCert, badKey   []byte     // the last pair that failed, logged once
	badUntil          time.Time  // when a bad pair that was not valid yet is tried again
}

func newCertificate(l listenerTLS, log *slog.Logger, expiry prometheus.Gauge) (*certificate, error) {
	c := &certificate{listener: l.listener, certFile: l.certFile, keyFile: l.keyFile, log: log, expiry: expiry}
	cert, certPEM, keyPEM, err := loadPair(l.certFile, l.keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s.tls: %w", l.listener, err)
	}
	c.use(cert, certPEM, keyPEM)
	// At start there is no older pair to keep serving: one outside its
	// validity is served, and said loudly, as every client will refuse it
	// (natsgate_tls_certificate_expiry_seconds shows it too).
	if _, err := inValidity(cert.Leaf, l.certFile, time.Now()); err != nil {
		log.Error("TLS certificate outside its validity; it is served, as there is no other, and clients will refuse it",
			"listener", l.listener, "cert_file", l.certFile, "error", err)
	}
	return c, nil
}

func (c *certificate) use(cert *tls.Certificate, certPEM, keyPEM []byte) {
	c.cur.Store(cert)
	c.lastCert, c.lastKey = certPEM, keyPEM
	c.badCert, c.badKey, c.badUntil = nil, nil, time.Time{}
	c.expiry.Set(float64(cert.Leaf.NotAfter.Unix()))
}

// get is the listener's tls.Config.GetCertificate.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// reload reads the files and serves the pair they hold if it changed and
// loads. It reports whether a new pair is served.
func (c *certificate) reload() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	certPEM, err1 := os.ReadFile(c.certFile)
	keyPEM, err2 := os.ReadFile(c.keyFile)
	if err1 == nil && err2 == nil && bytes.Equal(certPEM, c.lastCert) && bytes.Equal(keyPEM, c.lastKey) {
		return false
	}
	if err1 == nil && err2 == nil && bytes.Equal(certPEM, c.badCert) && bytes.Equal(keyPEM, c.badKey) &&
		(c.badUntil.IsZero() || time.Now().Before(c.badUntil)) {
		return false // already logged
	}
	cert, certPEM, keyPEM, err := loadPair(c.certFile, c.keyFile)
	var until time.Time
	if err == nil {
		until, err = inValidity(cert.Leaf, c.certFile, time.Now())
	}
	if err != nil {
		c.badCert, c.badKey, _ = readBoth(c.certFile, c.keyFile)
		c.badUntil = until
		c.log.Error("TLS certificate not reloaded; the old one keeps serving", "listener", c.listener,
			"cert_file", c.certFile, "key_file", c.keyFile, "error", err)
		return false
	}
	c.use(cert, certPEM, keyPEM)
	c.log.Info("TLS certificate reloaded", "listener", c.listener, "cert_file", c.certFile,
		"serial", cert.Leaf.SerialNumber.String(), "not_after", cert.Leaf.NotAfter)
	return true
}

// inValidity refuses a rotated certificate that no client would accept
// now: one that has expired, or one not valid yet (the old pair serves on;
// the returned time is when the latter is tried again, so a certificate
// issued a moment ahead of this host's clock is taken once it is due).
func inValidity(leaf *x509.Certificate, file string, now time.Time) (time.Time, error) {
	switch {
	case now.After(leaf.NotAfter):
		return time.Time{}, fmt.Errorf("the certificate in %s expired at %s", file, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return leaf.NotBefore, fmt.Errorf("the certificate in %s is not valid before %s", file, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return time.Time{}, nil
}

func readBoth(a, b string) ([]byte, []byte, error) {
	x, err := os.ReadFile(a)
	if err != nil {
		return nil, nil, err
	}
	y, err := os.ReadFile(b)
	return x, y, err
}

// tlsVersion maps min_version to crypto/tls's constant.
func tlsVersion(v string) uint16 {
	if v == routes.TLS13 {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// serverTLS builds a listener's tls.Config around its certificate. The
// HTTP server adds the ALPN protocols ("h2", "http/1.1") it serves.
func serverTLS(l listenerTLS, c *certificate) (*tls.Config, error) {
	tc := &tls.Config{GetCertificate: c.get, MinVersion: tlsVersion(l.minVersion)}
	if l.clientCA != "" {
		pool, err := loadCAPool(l.clientCA)
		if err != nil {
			return nil, fmt.Errorf("%s.tls.client_ca_file: %w", l.listener, err)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		if l.clientAuth == routes.ClientAuthMutations {
			tc.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	return tc, nil
}

// prepareTLS sets up srv for its listener's tls section, if any: the
// rotating certificate, HTTPS with HTTP/2 and HTTP/1.1 by ALPN, and the
// HTTP/2 limits that match the HTTP/1 ones. h2c asks for cleartext HTTP/2
// on a listener without tls. writeTimeout is the listener's
// http.write_timeout (0: none).
func (s *Server) prepareTLS(srv *http.Server, l *listenerTLS, h2c bool, writeTimeout time.Duration) error {
	if l == nil && !h2c {
		return nil // plain HTTP/1.1, as before
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	if l != nil {
		c, err := newCertificate(*l, s.log, s.metrics.TLSCertificateExpiry.WithLabelValues(l.listener))
		if err != nil {
			return err
		}
		if srv.TLSConfig, err = serverTLS(*l, c); err != nil {
			return err
		}
		s.certs = append(s.certs, c)
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	srv.Protocols = p
	// http.Server.MaxHeaderBytes bounds an HTTP/2 request's header list
	// too, and IdleTimeout its idle connections. A stalled body gets 408
	// through the same per-request read deadline (bodyDeadline), which
	// HTTP/2 honours per stream.
	srv.HTTP2 = &http.HTTP2Config{
		MaxConcurrentStreams: h2MaxConcurrentStreams,
		// A peer that takes no byte of pending frames for this long loses
		// the connection, as http.write_timeout cuts an HTTP/1 client.
		WriteByteTimeout: writeTimeout,
	}
	return nil
}

// listenerTLSOf returns the tls section of one listener, or nil.
func listenerTLSOf(cfg routes.Config, listener string) *listenerTLS {
	for _, l := range listenersTLS(cfg) {
		if l.listener == listener {
			return &l
		}
	}
	return nil
}

// ReloadCertificates reads every listener's certificate files again and
// serves the pairs that changed and load (on SIGHUP, and every few seconds
// by the watcher). A pair that does not load is logged; the old one keeps
// serving.
func (s *Server) ReloadCertificates() {
	for _, c := range s.certs {
		c.reload()
	}
}

// watchCertificates re-reads the certificate files every interval until
// ctx ends.
func (s *Server) watchCertificates(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.ReloadCertificates()
		}
	}
}

// requireClientCertForChanges lets a request that changes anything (any
// method but GET, HEAD and OPTIONS) through only over a connection whose
// client certificate was verified against admin.tls.client_ca_file: the
// admin listener's "client_auth: mutations" mode, where anyone may read.
func (s *Server) requireClientCertForChanges(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			next.ServeHTTP(w, r)
			return
		}
		route := ""
		if rest, ok := strings.CutPrefix(r.URL.Path, "/admin/routes/"); ok {
			route, _, _ = strings.Cut(rest, "/")
		}
		s.adminProblem(w, r, http.StatusForbidden, "client_certificate_required", route,
			"changes on the admin listener need a client certificate from admin.tls.client_ca_file")
	})
}

// upstreamTLS builds the TLS client side of an https upstream; nil when
// the upstream sets nothing, so the transport uses the system's roots.
func upstreamTLS(u *routes.Upstream, log *slog.Logger) (*tls.Config, error) {
	if u.TLS == nil {
		return nil, nil
	}
	tc := &tls.Config{ServerName: u.TLS.ServerName, InsecureSkipVerify: u.TLS.InsecureSkipVerify}
	if u.TLS.CAFile != "" {
		pool, err := loadCAPool(u.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstreams.%s.tls.ca_file: %w", u.Name, err)
		}
		tc.RootCAs = pool
	}
	if u.TLS.CertFile != "" {
		cert, _, _, err := loadPair(u.TLS.CertFile, u.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstreams.%s.tls: %w", u.Name, err)
		}
		tc.Certificates = []tls.Certificate{*cert}
	}
	if tc.InsecureSkipVerify {
		log.Warn("upstream TLS: insecure_skip_verify is on; any certificate the upstream shows is accepted",
			"upstream", u.Name, "url", u.URL.String())
	}
	return tc, nil
}
