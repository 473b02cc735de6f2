package gateway

// Attacks on HTTPS, HTTP/2 and h2c at the edge: what a hostile client, a
// hostile upstream or a botched rotation can do, each against real
// listeners and a real nats-server.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
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

	"github.com/natsgate/natsgate/internal/natstest"
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
		natstest.Eventually(t, 5*time.Second, "the upstream to read the preface", func() bool { return sawPreface.Load() })
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

// issueValid signs a server certificate for 127.0.0.1 valid from
// notBefore to notAfter: one that has expired, or is not valid yet.
func (ca *testCA) issueValid(t *testing.T, notBefore, notAfter time.Time) issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(testSerial.Add(1)),
		Subject:      pkix.Name{CommonName: "natsgate"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return issued{certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), serial: tmpl.SerialNumber, notAfter: notAfter}
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
	expired := gw.ca.issueValid(t, now.Add(-48*time.Hour), now.Add(-time.Hour))
	early := gw.ca.issueValid(t, now.Add(time.Hour), now.Add(48*time.Hour))
	half := gw.ca.issue(t, "natsgate", false, time.Hour)
	expiry := func() float64 { return testutil.ToFloat64(gw.metrics.TLSCertificateExpiry.WithLabelValues("http")) }
	for _, tc := range []struct {
		name, inLog string
		cert, key   []byte
	}{
		{"expired", "expired", expired.certPEM, expired.keyPEM},
		{"not valid yet", "not valid before", early.certPEM, early.keyPEM},
		{"emptied", "", nil, nil},
		{"written halfway", "", half.certPEM[:len(half.certPEM)/2], half.keyPEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logged := len(gw.log.String())
			writeFile(t, gw.certFile, tc.cert)
			writeFile(t, gw.keyFile, tc.key)
			gw.ReloadCertificates()
			if got := shownSerial(t, gw.Addr()); got.Cmp(gw.served.serial) != 0 {
				t.Errorf("serving serial %v after rotating to an unusable pair, want the old %v", got, gw.served.serial)
			}
			if got, want := expiry(), float64(gw.served.notAfter.Unix()); got != want {
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
		soon := gw.ca.issueValid(t, due, time.Now().Add(time.Hour))
		writeFile(t, gw.certFile, soon.certPEM)
		writeFile(t, gw.keyFile, soon.keyPEM)
		gw.ReloadCertificates()
		if shownSerial(t, gw.Addr()).Cmp(soon.serial) == 0 && time.Now().Before(due) {
			t.Fatalf("a pair not valid yet was served at once")
		}
		natstest.Eventually(t, 15*time.Second, "the pair to be taken once valid", func() bool {
			gw.ReloadCertificates()
			return shownSerial(t, gw.Addr()).Cmp(soon.serial) == 0
		})
	})
	t.Run("symlink swap", func(t *testing.T) {
		// <dir>/..data -> ..v1 holds the pair; cert_file and key_file are
		// links through ..data, and the swap renames a new link over it.
		dir := t.TempDir()
		next := gw.ca.issue(t, "natsgate", false, 2*time.Hour)
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
		if got := shownSerial(t, gw.Addr()); got.Cmp(next.serial) != 0 {
			t.Fatalf("serving serial %v after the first link, want %v", got, next.serial)
		}
		after := gw.ca.issue(t, "natsgate", false, 3*time.Hour)
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
		if got := shownSerial(t, gw.Addr()); got.Cmp(after.serial) != 0 {
			t.Errorf("serving serial %v after the swap, want %v", got, after.serial)
		}
		if got, want := expiry(), float64(after.notAfter.Unix()); got != want {
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
			tc := tls.Client(c, &tls.Config{RootCAs: gw.ca.pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
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
