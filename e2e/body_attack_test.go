package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// bodySeen is one body a backend acted on, by request id.
type bodySeen struct {
	backend string
	sum     string
	n       int
}

// bodyLedger records what each backend received.
type bodyLedger struct {
	mu   sync.Mutex
	seen map[string][]bodySeen
}

func (l *bodyLedger) add(reqID string, s bodySeen) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[reqID] = append(l.seen[reqID], s)
}

func (l *bodyLedger) of(reqID string) []bodySeen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]bodySeen(nil), l.seen[reqID]...)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sendBody sends one request with body on a new connection, framed by
// hand (Content-Length, or two chunks), and returns the status, the
// backend that answered and the answer's body.
func sendBody(t *testing.T, addr, method, path, reqID string, body []byte, chunked bool) (int, string, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	framing := fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	if chunked {
		cut := len(body) / 2
		framing = fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", cut, body[:cut], len(body)-cut, body[cut:])
	}
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: natsgate\r\nX-Request-Id: %s\r\nConnection: close\r\n%s", method, path, reqID, framing)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Natsgate-Backend"), string(b)
}

// A natsgate process whose route falls back carries each body whole to
// the backend that acts on it, through a nats-server frozen with SIGSTOP
// and then killed: while it is frozen a POST times out (the worker may
// get it later, whole) and is never replayed to the upstream, while a PUT
// falls back whole; while it is down every method falls back whole and no
// worker ever sees those requests, not even once NATS is back.
func TestBodiesWholeThroughAFrozenAndKilledNATS(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	ledger := &bodyLedger{seen: map[string][]bodySeen{}}
	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.QueueSubscribe("things.*", "workers", func(m *nats.Msg) {
		ledger.add(m.Header.Get("X-Request-Id"), bodySeen{backend: "nats", sum: sha(m.Data), n: len(m.Data)})
		_ = m.Respond([]byte("nats:" + sha(m.Data)))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest) // a broken body: not acted on
			return
		}
		ledger.add(r.Header.Get("X-Request-Id"), bodySeen{backend: "legacy", sum: sha(b), n: len(b)})
		_, _ = io.WriteString(w, "legacy:"+sha(b))
	}))
	t.Cleanup(up.Close)
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: "  reconnect_wait: 50ms", Body: `
upstreams:
  legacy: {url: ` + up.URL + `, timeout: 5s}
routes:
  - name: things
    method: "*"
    path: /things/{id}
    upstream: legacy
    cutover: nats
    fallback: true
    max_body: 64KiB
    breaker: {min_requests: 1000000}
    nats: {subject: "things.{id}", timeout: 400ms}
`})
	client := newClient(t)
	bodies := func(i int) []byte {
		b := make([]byte, 1+i*4099%(64<<10))
		for j := range b {
			b[j] = byte('a' + (i+j)%26)
		}
		return b
	}
	type sentReq struct {
		reqID, method string
		body          []byte
		status        int
		backend, text string
	}
	var sent []sentReq
	send := func(phase string, i int, method string) sentReq {
		reqID := fmt.Sprintf("%s-%d", phase, i)
		body := bodies(i)
		status, backend, text := sendBody(t, g.Addr, method, "/things/1", reqID, body, i%2 == 1)
		s := sentReq{reqID, method, body, status, backend, text}
		sent = append(sent, s)
		return s
	}
	// actedWhole checks that the request's sightings are all of its whole
	// body, and returns them.
	actedWhole := func(s sentReq) []bodySeen {
		seen := ledger.of(s.reqID)
		for _, b := range seen {
			if b.n != len(s.body) || b.sum != sha(s.body) {
				t.Errorf("%s %s: %s acted on %d bytes (%s), the client sent %d (%s)", s.method, s.reqID, b.backend, b.n, b.sum[:12], len(s.body), sha(s.body)[:12])
			}
		}
		return seen
	}

	for i := 0; i < 6; i++ {
		s := send("healthy", i, []string{"POST", "PUT"}[i%2])
		if s.status != 200 || s.backend != "nats" || s.text != "nats:"+sha(s.body) {
			t.Fatalf("healthy %s: %d from %q: %.80q, want the worker's answer to the whole body", s.method, s.status, s.backend, s.text)
		}
	}

	ns.Pause()
	var frozen []sentReq
	for i := 0; i < 6; i++ {
		frozen = append(frozen, send("frozen", i, []string{"POST", "PUT"}[i%2]))
	}
	ns.Resume()
	for _, s := range frozen {
		switch s.method {
		case "POST":
			if s.status != http.StatusGatewayTimeout {
				t.Errorf("frozen POST %s: %d from %q, want 504: the worker may have it, so it is not replayed", s.reqID, s.status, s.backend)
			}
		case "PUT":
			if s.status != 200 || s.backend != "legacy" || s.text != "legacy:"+sha(s.body) {
				t.Errorf("frozen PUT %s: %d from %q: %.80q, want the upstream's answer to the whole body", s.reqID, s.status, s.backend, s.text)
			}
		}
	}

	ns.Kill()
	eventually(t, 10*time.Second, "natsgate to see NATS gone", func() bool { return httpStatus(client, g.AdminURL+"/readyz") != 200 })
	var down []sentReq
	for i := 0; i < 6; i++ {
		s := send("down", i, []string{"POST", "PUT", "PATCH"}[i%3])
		down = append(down, s)
		if s.status != 200 || s.backend != "legacy" || s.text != "legacy:"+sha(s.body) {
			t.Errorf("%s %s with NATS down: %d from %q: %.80q, want the upstream's answer to the whole body", s.method, s.reqID, s.status, s.backend, s.text)
		}
	}
	// A body cut by a half-close while NATS is down: a 400 problem to a
	// client still reading, and no backend acts on its half.
	conn, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	half := bodies(3)
	_, _ = fmt.Fprintf(conn, "POST /things/1 HTTP/1.1\r\nHost: natsgate\r\nX-Request-Id: half-1\r\nContent-Length: %d\r\n\r\n%s", len(half), half[:len(half)/2])
	_ = conn.(*net.TCPConn).CloseWrite()
	status, text := readStatus(conn)
	conn.Close()
	if status != http.StatusBadRequest || !strings.Contains(text, `"request_id":"half-1"`) || !strings.Contains(text, `"route":"things"`) {
		t.Errorf("a half-closed body with NATS down: %d %.300q, want a 400 problem naming the route and request", status, text)
	}
	ns.Start()
	eventually(t, 20*time.Second, "a request through NATS again", func() bool {
		status, backend, _ := sendBody(t, g.Addr, "POST", "/things/1", "probe", []byte("p"), false)
		return status == 200 && backend == "nats"
	})

	if n := len(ledger.of("half-1")); n != 0 {
		t.Errorf("a body cut in half was acted on by %d backends, want none", n)
	}
	acted := map[string]int{}
	for _, s := range sent {
		seen := actedWhole(s)
		for _, b := range seen {
			acted[s.reqID[:4]+" "+s.method+" by "+b.backend]++
		}
		legacy, worker := 0, 0
		for _, b := range seen {
			if b.backend == "legacy" {
				legacy++
			} else {
				worker++
			}
		}
		switch {
		case s.reqID[:6] == "frozen" && s.method == "POST":
			if legacy != 0 || worker > 1 {
				t.Errorf("frozen POST %s: the upstream acted %d times, the worker %d: want the upstream never, the worker at most once", s.reqID, legacy, worker)
			}
		case s.reqID[:6] == "frozen":
			// PUT is idempotent: it falls back after a timeout, and the
			// worker may act on its copy once NATS goes on.
			if legacy != 1 || worker > 1 {
				t.Errorf("frozen PUT %s: the upstream acted %d times, the worker %d: want the upstream once", s.reqID, legacy, worker)
			}
		case s.reqID[:4] == "down":
			if legacy != 1 || worker != 0 {
				t.Errorf("%s %s with NATS down: the upstream acted %d times, the worker %d: want the upstream once, the worker never", s.method, s.reqID, legacy, worker)
			}
		default:
			if worker != 1 || legacy != 0 {
				t.Errorf("%s %s: the worker acted %d times, the upstream %d: want the worker once", s.method, s.reqID, worker, legacy)
			}
		}
	}
	t.Logf("acted on: %v", acted)
}
