package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// stalledReaders opens n connections that each send 16 pipelined GETs
// for path and then never read a byte of the answers, with a small
// receive buffer: the answers fill the sockets' buffers and natsgate's
// writes block. They are closed when the test ends.
func stalledReaders(t *testing.T, addr, path string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.(*net.TCPConn).SetReadBuffer(4096)
		t.Cleanup(func() { _ = conn.Close() })
		req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		if _, err := io.WriteString(conn, strings.Repeat(req, 16)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClientThatNeverReadsDoesNotHoldASlotForever: a client that asks for
// answers and never reads them must not hold an in-flight slot, and an
// answer's memory, for ever. With no write deadline, max_inflight such
// clients take the gateway off line for everyone (503 overloaded) for as
// long as they keep their connections open.
func TestClientThatNeverReadsDoesNotHoldASlotForever(t *testing.T) {
	ns := natstest.RunServer(t)
	big := bytes.Repeat([]byte("x"), 900<<10) // under the default 1 MiB max_payload
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(big)
	}))
	t.Cleanup(upstream.Close)
	gw := startGateway(t, ns, `
http:
  max_inflight: 4
  idle_timeout: 2s
upstreams:
  legacy: {url: `+upstream.URL+`, timeout: 2s}
routes:
  - name: big
    method: GET
    path: /big
    nats: {subject: big.get, timeout: 2s}
  - name: big-legacy
    method: GET
    path: /legacy/big
    upstream: legacy
  - name: small
    method: GET
    path: /small
    nats: {subject: small.get, timeout: 2s}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, "big.get", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: big} })
	respond(t, worker, "small.get", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("ok")} })
	addr := strings.TrimPrefix(gw.URL, "http://")

	for _, path := range []string{"/big", "/legacy/big"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			stalledReaders(t, addr, path, 4)
			// Every route timeout, upstream timeout and idle timeout here is
			// 2 s: well past them, a reading client must be served again.
			deadline := time.Now().Add(20 * time.Second)
			var last string
			for time.Now().Before(deadline) {
				resp, err := http.Get(gw.URL + "/small")
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						return
					}
					last = fmt.Sprintf("%d %s", resp.StatusCode, b)
				} else {
					last = err.Error()
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Fatalf("4 clients that never read an answer still hold all 4 in-flight slots 20 s later: GET /small got %s", last)
		})
	}
}
