package gateway

// Attacks on HTTPS, HTTP/2 and h2c at the edge: what a hostile client, a
// hostile upstream or a botched rotation can do, each against real
// listeners and a real nats-server.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/internal/testpki"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLegacyRefusesH2CUpgrade: a client's "Upgrade: h2c" is not passed to
// a legacy upstream. An upstream that honours it would switch the
// connection to HTTP/2 and the client would then send it requests for
// any path and method on the tunnel, past the route that only grants
// one path (h2c smuggling). The request is served as plain HTTP/1.1.
func TestLegacyRefusesH2CUpgrade(t *testing.T) {
	var sawH2C, sawPreface atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "h2c") {
			_, _ = io.WriteString(w, "plain "+r.URL.Path)
			return
		}
		// An upstream speaking h2c by upgrade, as golang.org/x/net/http2/h2c
		// and others do: 101, then HTTP/2 on the same connection.
		sawH2C.Store(true)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		_ = brw.Flush()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		preface := make([]byte, 24)
		if _, err := io.ReadFull(brw, preface); err == nil && string(preface) == "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
			sawPreface.Store(true)
		}
	}))
	t.Cleanup(up.Close)
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
upstreams:
  legacy: {url: `+up.URL+`, timeout: 2s}
routes:
  - {name: public-page, method: GET, path: /public, upstream: legacy}
`)
	conn, err := net.DialTimeout("tcp", gw.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET /public HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
		"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nX-Request-Id: smuggle-1\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// What the attacker does next: HTTP/2 to the upstream, any path.
		_, _ = io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
		natstest.Eventually(t, 15*time.Second, "the upstream to read the preface", func() bool { return sawPreface.Load() })
		t.Fatalf("the gateway switched the connection to h2c with the upstream (upstream read the HTTP/2 preface: %v); "+
			"the client now reaches every path of the upstream past the route", sawPreface.Load())
	}
	if sawH2C.Load() {
		t.Errorf("the upstream was asked to upgrade to h2c")
	}
	if resp.StatusCode != 200 || string(body) != "plain /public" {
		t.Errorf("got %d %q, want the route's plain answer 200 %q", resp.StatusCode, body, "plain /public")
	}
}

// shownSerial is the serial of the certificate a new handshake is shown,
// whether or not it verifies.
func shownSerial(t *testing.T, addr string) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestRotationToAnUnusablePairKeepsTheOldOne: files rotated to a pair
// that would fail every client (expired, not valid yet, emptied, written
// halfway) are logged and the old pair keeps serving, with the expiry
// gauge still its; a pair swapped in by symlink, as a Kubernetes secret
// volume does (..data), is taken.
func TestRotationToAnUnusablePairKeepsTheOldOne(t *testing.T) {
	gw := startTLSGateway(t, "http:\n  tls: {cert_file: $CERT, key_file: $KEY}\nroutes:"+tlsRoute)
	gw.stopCertWatch() // only ReloadCertificates (SIGHUP) reads the files here
	now := time.Now()
	expired := mustIssue(t, gw.ca, "natsgate", testpki.Valid(now.Add(-48*time.Hour), now.Add(-time.Hour)))
	early := mustIssue(t, gw.ca, "natsgate", testpki.Valid(now.Add(time.Hour), now.Add(48*time.Hour)))
	half := issue(t, gw.ca, "natsgate", false, time.Hour)
	expiry := func() float64 { return testutil.ToFloat64(gw.metrics.TLSCertificateExpiry.WithLabelValues("http")) }
	for _, tc := range []struct {
		name, inLog string
		cert, key   []byte
	}{
		{"expired", "expired", expired.CertPEM, expired.KeyPEM},
		{"not valid yet", "not valid before", early.CertPEM, early.KeyPEM},
		{"emptied", "", nil, nil},
		{"written halfway", "", half.CertPEM[:len(half.CertPEM)/2], half.KeyPEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logged := len(gw.log.String())
			writeFile(t, gw.certFile, tc.cert)
			writeFile(t, gw.keyFile, tc.key)
			gw.ReloadCertificates()
			if got := shownSerial(t, gw.Addr()); got.Cmp(gw.served.Cert.SerialNumber) != 0 {
				t.Errorf("serving serial %v after rotating to an unusable pair, want the old %v", got, gw.served.Cert.SerialNumber)
			}
			if got, want := expiry(), float64(gw.served.Cert.NotAfter.Unix()); got != want {
				t.Errorf("the expiry gauge is %v, want the served pair's %v", got, want)
			}
			msg := gw.log.String()[logged:]
			if !strings.Contains(msg, "TLS certificate not reloaded; the old one keeps serving") || !strings.Contains(msg, tc.inLog) {
				t.Errorf("the unusable pair was not logged with %q:\n%s", tc.inLog, msg)
			}
		})
	}
	t.Run("not valid yet, then due", func(t *testing.T) {
		// Issued a moment ahead of this host's clock: refused, then
		// taken by a later reload once it is valid, without new files.
		due := time.Now().Add(2 * time.Second)
		soon := mustIssue(t, gw.ca, "natsgate", testpki.Valid(due, time.Now().Add(time.Hour)))
		writeFile(t, gw.certFile, soon.CertPEM)
		writeFile(t, gw.keyFile, soon.KeyPEM)
		gw.ReloadCertificates()
		if shownSerial(t, gw.Addr()).Cmp(soon.Cert.SerialNumber) == 0 && time.Now().Before(due) {
			t.Fatalf("a pair not valid yet was served at once")
		}
		natstest.Eventually(t, 15*time.Second, "the pair to be taken once valid", func() bool {
			gw.ReloadCertificates()
			return shownSerial(t, gw.Addr()).Cmp(soon.Cert.SerialNumber) == 0
		})
	})
	t.Run("symlink swap", func(t *testing.T) {
		// <dir>/..data -> ..v1 holds the pair; cert_file and key_file are
		// links through ..data, and the swap renames a new link over it.
		dir := t.TempDir()
		next := issue(t, gw.ca, "natsgate", false, 2*time.Hour)
		v1 := filepath.Join(dir, "..v1")
		if err := os.Mkdir(v1, 0o700); err != nil {
			t.Fatal(err)
		}
		tlsFiles(t, v1, "server", next)
		if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{gw.certFile, gw.keyFile} {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(dir, "..data", filepath.Base(f)), f); err != nil {
				t.Fatal(err)
			}
		}
		gw.ReloadCertificates()
		if got := shownSerial(t, gw.Addr()); got.Cmp(next.Cert.SerialNumber) != 0 {
			t.Fatalf("serving serial %v after the first link, want %v", got, next.Cert.SerialNumber)
		}
		after := issue(t, gw.ca, "natsgate", false, 3*time.Hour)
		v2 := filepath.Join(dir, "..v2")
		if err := os.Mkdir(v2, 0o700); err != nil {
			t.Fatal(err)
		}
		tlsFiles(t, v2, "server", after)
		if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		gw.ReloadCertificates()
		if got := shownSerial(t, gw.Addr()); got.Cmp(after.Cert.SerialNumber) != 0 {
			t.Errorf("serving serial %v after the swap, want %v", got, after.Cert.SerialNumber)
		}
		if got, want := expiry(), float64(after.Cert.NotAfter.Unix()); got != want {
			t.Errorf("the expiry gauge is %v after the swap, want %v", got, want)
		}
	})
}

// TestStalledHandshakesAreClosed: a client that opens a connection and
// stops (before its ClientHello, halfway through it, or after the TLS
// handshake without the HTTP/2 preface; on the h2c listener before its
// preface) is closed within http.read_header_timeout, well short of any
// idle limit, so that stalled connections cannot pile up.
func TestStalledHandshakesAreClosed(t *testing.T) {
	gw := startTLSGateway(t, "http:\n  read_header_timeout: 1s\n  idle_timeout: 60s\n  tls: {cert_file: $CERT, key_file: $KEY}\nroutes:"+tlsRoute)
	ns := natstest.RunServer(t)
	h2c := startGateway(t, ns, "http:\n  h2c: true\n  read_header_timeout: 1s\n  idle_timeout: 60s\nroutes:"+tlsRoute)
	// The start of a ClientHello record: type 22, version, a length of 512
	// bytes of which only these few arrive.
	halfHello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	for _, tc := range []struct {
		name string
		addr string
		open func(net.Conn) (net.Conn, error)
	}{
		{"no ClientHello", gw.Addr(), func(c net.Conn) (net.Conn, error) { return c, nil }},
		{"half a ClientHello", gw.Addr(), func(c net.Conn) (net.Conn, error) { _, err := c.Write(halfHello); return c, err }},
		{"h2 without a preface", gw.Addr(), func(c net.Conn) (net.Conn, error) {
			tc := tls.Client(c, &tls.Config{RootCAs: gw.ca.Pool(), ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
			if err := tc.Handshake(); err != nil {
				return nil, err
			}
			if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
				t.Fatalf("ALPN negotiated %q, want h2", p)
			}
			return tc, nil
		}},
		{"h2c half a preface", h2c.Addr(), func(c net.Conn) (net.Conn, error) { _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n"); return c, err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.DialTimeout("tcp", tc.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			start := time.Now()
			c, err := tc.open(raw)
			if err != nil {
				t.Fatal(err)
			}
			_ = raw.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err = io.Copy(io.Discard, c) // until the gateway closes it
			held := time.Since(start)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the gateway still held the stalled connection after %v", held)
			}
			if held > 15*time.Second {
				t.Errorf("the stalled connection was held %v; read_header_timeout is 1s", held)
			}
			t.Logf("closed after %v", held.Round(10*time.Millisecond))
		})
	}
}

// rawH2 is a bare HTTP/2 client over TLS, frame by frame, for what Go's
// own client refuses to send: a receive window of 0, header lists past
// the server's limit, headers HTTP/2 forbids. Header blocks are HPACK
// literals without indexing or Huffman coding.
type rawH2 struct {
	t    *testing.T
	conn *tls.Conn
}

// dialH2 opens a TLS connection negotiating h2, sends the preface and
// SETTINGS with the given (id, value) pairs.
func dialH2(t *testing.T, addr string, pool *x509.CertPool, settings ...uint32) *rawH2 {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN negotiated %q, want h2", p)
	}
	h := &rawH2{t: t, conn: c}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	var p []byte
	for i := 0; i+1 < len(settings); i += 2 {
		p = append(p, byte(settings[i]>>8), byte(settings[i]))
		p = append(p, byte(settings[i+1]>>24), byte(settings[i+1]>>16), byte(settings[i+1]>>8), byte(settings[i+1]))
	}
	h.frame(0x4, 0, 0, p)
	return h
}

func (h *rawH2) frame(typ, flags byte, stream uint32, payload []byte) {
	h.t.Helper()
	n := len(payload)
	hdr := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}
	if _, err := h.conn.Write(append(hdr, payload...)); err != nil {
		h.t.Fatalf("writing a frame: %v", err)
	}
}

// hpackInt appends n with a prefix of bits bits under the first byte's
// high bits first.
func hpackInt(b []byte, first byte, bits uint, n int) []byte {
	max := 1<<bits - 1
	if n < max {
		return append(b, first|byte(n))
	}
	b = append(b, first|byte(max))
	for n -= max; n >= 128; n >>= 7 {
		b = append(b, byte(n%128+128))
	}
	return append(b, byte(n))
}

// headers sends one HEADERS frame (END_HEADERS, and END_STREAM when end)
// on stream holding fields as name, value pairs in order.
func (h *rawH2) headers(stream uint32, end bool, fields ...string) {
	h.t.Helper()
	var block []byte
	for i := 0; i+1 < len(fields); i += 2 {
		block = append(block, 0)
		block = hpackInt(block, 0, 7, len(fields[i]))
		block = append(block, fields[i]...)
		block = hpackInt(block, 0, 7, len(fields[i+1]))
		block = append(block, fields[i+1]...)
	}
	flags := byte(0x4)
	if end {
		flags |= 0x1
	}
	h.frame(0x1, flags, stream, block)
}

// h2Frame is a frame the server sent.
type h2Frame struct {
	typ, flags byte
	stream     uint32
	payload    []byte
}

// next reads the server's next frame, acknowledging its SETTINGS and
// answering PING as a live client does; it returns an error once the
// connection ends or the deadline passes.
func (h *rawH2) next() (h2Frame, error) {
	for {
		var hdr [9]byte
		if _, err := io.ReadFull(h.conn, hdr[:]); err != nil {
			return h2Frame{}, err
		}
		f := h2Frame{typ: hdr[3], flags: hdr[4], stream: uint32(hdr[5]&0x7f)<<24 | uint32(hdr[6])<<16 | uint32(hdr[7])<<8 | uint32(hdr[8])}
		f.payload = make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(h.conn, f.payload); err != nil {
			return h2Frame{}, err
		}
		switch {
		case f.typ == 0x4 && f.flags&0x1 == 0:
			h.frame(0x4, 0x1, 0, nil)
			continue
		case f.typ == 0x6 && f.flags&0x1 == 0:
			h.frame(0x6, 0x1, 0, f.payload)
			continue
		}
		return f, nil
	}
}

// status decodes the :status of a HEADERS frame from Go's server, which
// sends it from HPACK's static table (indexes 8 to 14) or as a literal
// with the indexed name :status (index 8).
func (f h2Frame) status() int {
	p := f.payload
	if f.flags&0x8 != 0 { // PADDED
		p = p[1:]
	}
	if f.flags&0x20 != 0 { // PRIORITY
		p = p[5:]
	}
	if len(p) == 0 {
		return 0
	}
	if p[0]&0x80 != 0 {
		if s, ok := map[byte]int{8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}[p[0]&0x7f]; ok {
			return s
		}
		return 0
	}
	// A literal with an indexed name: 4 (without indexing, 0000xxxx), 6
	// (incremental, 01xxxxxx) or 4 (never indexed, 0001xxxx) prefix bits.
	var name byte
	var rest []byte
	switch {
	case p[0]&0xc0 == 0x40:
		name, rest = p[0]&0x3f, p[1:]
	default:
		name, rest = p[0]&0x0f, p[1:]
	}
	if name != 8 || len(rest) < 4 || rest[0]&0x80 != 0 || rest[0] != 3 {
		return 0 // Huffman-coded or not :status
	}
	n := 0
	for _, c := range rest[1:4] {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestH2RequestsRefusedBeforeTheRoute: over HTTP/2, a header list past
// http.max_header_bytes (sent plainly, or as an HPACK bomb that repeats
// one indexed entry), and headers HTTP/2 forbids (Connection, Upgrade,
// TE other than trailers, Keep-Alive) or a :path that is not a path,
// never reach the worker: the stream is refused or answered 4xx.
func TestH2RequestsRefusedBeforeTheRoute(t *testing.T) {
	gw := startTLSGateway(t, "http:\n  max_header_bytes: 4KiB\n  tls: {cert_file: $CERT, key_file: $KEY}\nroutes:"+tlsRoute)
	var reached atomic.Int64
	respond(t, natstest.Connect(t, gw.NS), "users.*.get", func(m *nats.Msg) *nats.Msg {
		reached.Add(1)
		return &nats.Msg{Data: []byte("hello")}
	})
	base := func(path string) []string {
		return []string{":method", "GET", ":scheme", "https", ":authority", gw.Addr(), ":path", path}
	}
	// The bomb: one 3,000-byte entry put in the dynamic table, then named
	// 400 times by its index (62) in one byte each: 1.2 MB decoded.
	bomb := []byte{0x40}
	bomb = hpackInt(bomb, 0, 7, len("x-bomb"))
	bomb = append(bomb, "x-bomb"...)
	bomb = hpackInt(bomb, 0, 7, 3000)
	bomb = append(bomb, strings.Repeat("b", 3000)...)
	for range 400 {
		bomb = append(bomb, 0x80|62)
	}
	for _, tc := range []struct {
		name   string
		fields []string
		raw    []byte // a header block appended after fields
	}{
		{"control: served", base("/users/1"), nil},
		{"header list past max_header_bytes", append(base("/users/1"), "x-big", strings.Repeat("a", 10000)), nil},
		{"HPACK bomb", base("/users/1"), bomb},
		{"connection", append(base("/users/1"), "connection", "keep-alive"), nil},
		{"upgrade", append(base("/users/1"), "upgrade", "h2c"), nil},
		{"keep-alive", append(base("/users/1"), "keep-alive", "timeout=5"), nil},
		{"te gzip", append(base("/users/1"), "te", "gzip"), nil},
		{":path without a slash", base("users/1"), nil},
		{":path empty", base(""), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := reached.Load()
			h := dialH2(t, gw.Addr(), gw.ca.Pool())
			var block []byte
			for i := 0; i+1 < len(tc.fields); i += 2 {
				block = append(block, 0)
				block = hpackInt(block, 0, 7, len(tc.fields[i]))
				block = append(block, tc.fields[i]...)
				block = hpackInt(block, 0, 7, len(tc.fields[i+1]))
				block = append(block, tc.fields[i+1]...)
			}
			h.frame(0x1, 0x5, 1, append(block, tc.raw...))
			status, refused := 0, ""
			for status == 0 && refused == "" {
				f, err := h.next()
				if err != nil {
					refused = "connection closed: " + err.Error()
					break
				}
				switch {
				case f.typ == 0x1 && f.stream == 1:
					status = f.status()
					if status == 0 {
						// A head this test cannot decode: a Huffman-coded
						// status, which Go's server sends only for codes
						// outside HPACK's static table (its 2xx answers
						// here are 200); the worker count decides.
						status = -1
					}
				case f.typ == 0x3 && f.stream == 1:
					refused = "RST_STREAM"
				case f.typ == 0x7:
					refused = "GOAWAY"
				}
			}
			control := strings.HasPrefix(tc.name, "control")
			if control {
				if status != 200 {
					t.Fatalf("a plain request got status %d (%s), want 200", status, refused)
				}
				return
			}
			if status >= 200 && status < 300 {
				t.Errorf("served with %d", status)
			}
			if n := reached.Load() - before; n != 0 {
				t.Errorf("the worker was reached %d times", n)
			}
			t.Logf("status %d %s", status, refused)
		})
	}
}

// TestH2ClientThatNeverReadsIsCut: an HTTP/2 client that opens no flow
// control window (SETTINGS_INITIAL_WINDOW_SIZE 0) while a legacy answer
// streams takes no byte of it; http.write_timeout ends the stream, so the
// gateway's handler and the upstream request are freed rather than held
// as long as the client keeps the connection.
func TestH2ClientThatNeverReadsIsCut(t *testing.T) {
	var upstreamDone atomic.Int64 // unix nanos when the upstream's request ended
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { upstreamDone.Store(time.Now().UnixNano()) }()
		chunk := []byte(strings.Repeat("x", 8<<10))
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(up.Close)
	gw := startTLSGateway(t, `
http:
  write_timeout: 1s
  idle_timeout: 60s
  tls: {cert_file: $CERT, key_file: $KEY}
upstreams:
  legacy: {url: `+up.URL+`, timeout: 60s}
routes:
  - {name: stream, method: GET, path: /stream, upstream: legacy}
`)
	h := dialH2(t, gw.Addr(), gw.ca.Pool(), 0x4, 0) // SETTINGS_INITIAL_WINDOW_SIZE = 0
	start := time.Now()
	h.headers(1, true, ":method", "GET", ":scheme", "https", ":authority", gw.Addr(), ":path", "/stream")
	ended := ""
	for ended == "" {
		f, err := h.next()
		switch {
		case err != nil:
			ended = "connection closed"
		case f.typ == 0x0 && f.stream == 1 && len(f.payload) > 0:
			t.Fatalf("DATA sent into a window of 0")
		case f.typ == 0x3 && f.stream == 1:
			ended = "RST_STREAM"
		case f.typ == 0x7:
			ended = "GOAWAY"
		}
	}
	natstest.Eventually(t, 15*time.Second, "the upstream request to end", func() bool { return upstreamDone.Load() != 0 })
	natstest.Eventually(t, 15*time.Second, "the gateway's handler to finish", func() bool { return gw.inflight.Load() == 0 })
	t.Logf("stream ended by %s after %v; the upstream request after %v", ended, time.Since(start).Round(10*time.Millisecond),
		time.Unix(0, upstreamDone.Load()).Sub(start).Round(10*time.Millisecond))
}

// TestAdminMutualTLSTricks: with client_auth require, a certificate from
// client_ca_file that has expired, or that is for servers only
// (ExtKeyUsage serverAuth), is refused at the handshake. With mutations,
// no way of dressing a change as a read moves a route without the
// certificate: a method override header, a lower-case method, HEAD and
// OPTIONS with bodies, a PUT over HTTP/2.
func TestAdminMutualTLSTricks(t *testing.T) {
	legacy := startLegacy(t)
	clients := newTestCA(t, "clients CA")
	start := func(t *testing.T, mode string) *tlsGateway {
		t.Helper()
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "clients.pem"), clients.PEM)
		return startTLSGateway(t, adminTLSConfig(legacy.URL, filepath.Join(dir, "clients.pem"), mode))
	}
	t.Run("require", func(t *testing.T) {
		gw := start(t, "require")
		expired := issue(t, clients, "ops", true, -time.Minute).TLSCertificate()
		serverOnly := issue(t, clients, "ops", false, time.Hour).TLSCertificate()
		good := issue(t, clients, "ops", true, time.Hour).TLSCertificate()
		for name, cert := range map[string]tls.Certificate{"expired": expired, "server only": serverOnly} {
			if resp, _, err := get(t, tlsClient(gw.ca.Pool(), true, cert), "GET", gw.AdminHTTPS+"/healthz", nil, nil); err == nil {
				t.Errorf("a client certificate %s was served: %d", name, resp.StatusCode)
			}
		}
		if resp, _, err := get(t, tlsClient(gw.ca.Pool(), true, good), "GET", gw.AdminHTTPS+"/healthz", nil, nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("control, a good client certificate: %v %v", resp, err)
		}
	})
	t.Run("mutations", func(t *testing.T) {
		gw := start(t, "mutations")
		auth := http.Header{"Authorization": {"Bearer secret"}}
		body := `{"cutover":"nats"}`
		for _, tc := range []struct {
			name, method string
			header       http.Header
			h2           bool
		}{
			{"GET with X-HTTP-Method-Override", "GET", http.Header{"X-Http-Method-Override": {"PUT"}, "X-Method-Override": {"PUT"}}, false},
			{"POST with X-HTTP-Method-Override", "POST", http.Header{"X-Http-Method-Override": {"PUT"}}, false},
			{"lower-case put", "put", nil, false},
			{"HEAD with a body", "HEAD", nil, false},
			{"OPTIONS with a body", "OPTIONS", nil, false},
			{"PUT over HTTP/2", "PUT", nil, true},
			{"PUT over HTTP/1.1", "PUT", nil, false},
		} {
			h := http.Header{HeaderRequestID: {"trick"}}
			for k, v := range auth {
				h[k] = v
			}
			for k, v := range tc.header {
				h[k] = v
			}
			resp, got, err := get(t, tlsClient(gw.ca.Pool(), tc.h2), tc.method, gw.AdminHTTPS+"/admin/routes/get-user/cutover", strings.NewReader(body), h)
			if err == nil && resp.StatusCode < 300 {
				t.Errorf("%s without a certificate: %d %s", tc.name, resp.StatusCode, got)
			}
			if stage := stageOf(gw.testGateway, "get-user").Stage; stage != "legacy" {
				t.Fatalf("%s without a certificate moved the route to %s", tc.name, stage)
			}
		}
	})
}

// TestHostileHTTPSUpstreams: an https upstream that speaks plain HTTP,
// offers only TLS 1.0, presents an expired certificate, or accepts the
// connection and never answers the ClientHello gets the client a problem
// (502 or 504) naming the route and the request id, promptly: never a
// hang, never a 200.
func TestHostileHTTPSUpstreams(t *testing.T) {
	ca := newTestCA(t, "upstream CA")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, ca.PEM)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "served") })
	plain := httptest.NewServer(ok)
	t.Cleanup(plain.Close)
	startTLS := func(cfg *tls.Config) *httptest.Server {
		s := httptest.NewUnstartedServer(ok)
		s.TLS = cfg
		s.StartTLS()
		t.Cleanup(s.Close)
		return s
	}
	tls10 := startTLS(&tls.Config{Certificates: []tls.Certificate{issue(t, ca, "up", false, time.Hour).TLSCertificate()}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10})
	expired := startTLS(&tls.Config{Certificates: []tls.Certificate{issue(t, ca, "up", false, -time.Minute).TLSCertificate()}})
	good := startTLS(&tls.Config{Certificates: []tls.Certificate{issue(t, ca, "up", false, time.Hour).TLSCertificate()}})
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var held []net.Conn // accepted and never answered, until the test ends
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for range 50 {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	https := func(u string) string { return strings.Replace(u, "http://", "https://", 1) }
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, fmt.Sprintf(`
upstreams:
  plain: {url: %[1]s, timeout: 20s, tls: {ca_file: %[5]s}}
  tls10: {url: %[2]s, timeout: 20s, tls: {ca_file: %[5]s}}
  expired: {url: %[3]s, timeout: 20s, tls: {ca_file: %[5]s}}
  silent: {url: https://%[4]s, timeout: 20s, tls: {ca_file: %[5]s}}
  good: {url: %[6]s, timeout: 20s, tls: {ca_file: %[5]s}}
routes:
  - {name: plain, method: GET, path: /plain, upstream: plain}
  - {name: tls10, method: GET, path: /tls10, upstream: tls10}
  - {name: expired, method: GET, path: /expired, upstream: expired}
  - {name: silent, method: GET, path: /silent, upstream: silent}
  - {name: good, method: GET, path: /good, upstream: good}
`, https(plain.URL), tls10.URL, expired.URL, silent.Addr(), caFile, good.URL))
	for _, name := range []string{"good", "plain", "tls10", "expired", "silent"} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			resp, body := do(t, "GET", gw.URL+"/"+name, nil, http.Header{HeaderRequestID: {"up-" + name}})
			took := time.Since(start)
			if name == "good" {
				if resp.StatusCode != 200 || body != "served" {
					t.Fatalf("control: %d %s", resp.StatusCode, body)
				}
				return
			}
			if resp.StatusCode != 502 && resp.StatusCode != 504 {
				t.Errorf("got %d %s, want 502 or 504", resp.StatusCode, body)
			}
			if !strings.Contains(body, `"route":"`+name+`"`) || !strings.Contains(body, `"request_id":"up-`+name+`"`) {
				t.Errorf("the problem %s does not name the route and the request id", body)
			}
			// The upstream timeout is 20s; a TLS failure is known far sooner
			// (the handshake timeout is 5s).
			if took > 15*time.Second {
				t.Errorf("answered after %v", took)
			}
			t.Logf("%d after %v: %s", resp.StatusCode, took.Round(time.Millisecond), body)
		})
	}
}
