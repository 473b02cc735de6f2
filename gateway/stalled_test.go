package gateway

import (
	"bytes"
	"encoding/json"
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
	"github.com/natsgate/natsgate/routes"
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
  write_timeout: 2s
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
			// Every route, upstream, idle and write timeout here is 2 s:
			// well past them, a reading client must be served again.
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

// TestCutoverBucketByIsBoundedLikeTheAdminAPI: the admin API only ever
// stores a "by" of at most 128 bytes of printable characters (actor), and
// a bucket value is to be accepted exactly when the admin API would store
// it. A value written straight into the bucket with a "by" of 100 KiB, or
// one holding terminal escapes, must not reach GET /admin/routes as it is:
// refused (the config's stage) or cut down, either way no such "by" shown.
func TestCutoverBucketByIsBoundedLikeTheAdminAPI(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	natsWorker(t, ns)
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "legacy", ""))
	_, bucket := testBucket(t, ns)
	kv := bucket()
	for _, tc := range []struct{ name, by string }{
		{"100 KiB", strings.Repeat("a", 100<<10)},
		{"terminal escape", "\x1b]0;owned\x07\x1b[2J"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A good value first, so that the bad one's effect is seen.
			kvPut(t, kv, "get-user", `{"cutover":"canary","canary_percent":20,"by":"ops"}`)
			natstest.Eventually(t, watchWait, "the good override to apply", func() bool {
				return stageOf(gw, "get-user").Stage == routes.Canary
			})
			by, _ := json.Marshal(tc.by)
			kvPut(t, kv, "get-user", `{"cutover":"nats","by":`+string(by)+`}`)
			var st RouteStatus
			natstest.Eventually(t, watchWait, "the watcher to read the value", func() bool {
				st = stageOf(gw, "get-user")
				return st.Stage != routes.Canary
			})
			if o := st.Override; o != nil && (len(o.By) > 128 || !validFieldValue(o.By)) {
				t.Fatalf("a bucket value the admin API could never store was applied (stage %s) with a %d-byte \"by\" %.40q…; the admin API's actor is at most 128 printable bytes",
					st.Stage, len(o.By), o.By)
			}
		})
	}
}
