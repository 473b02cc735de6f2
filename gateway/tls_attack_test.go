package gateway

// Attacks on HTTPS, HTTP/2 and h2c at the edge: what a hostile client, a
// hostile upstream or a botched rotation can do, each against real
// listeners and a real nats-server.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
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
