package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// bodyHash names a body in a few bytes, for a worker or an upstream to
// say which body it got.
func bodyHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// echoed is what the echo worker says it received: everything a client
// needs to tell its own request's answer from another's.
type echoed struct {
	ID      string            `json:"id"`
	Subject string            `json:"subject"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Params  map[string]string `json:"params"`
	Body    string            `json:"body"`
	Headers []string          `json:"headers"` // the names, sorted
}

// poolRoutes have 0, 1 and 6 parameters, a body, a short timeout, so
// that the pooled header maps, value slices, waiters and timers pass
// between requests of every shape.
const poolRoutes = `
nats: {reconnect_wait: 20ms}
routes:
  - {name: zero, method: GET, path: /zero, nats: {subject: echo.zero, timeout: 5s}}
  - {name: one, method: GET, path: "/one/{a}", nats: {subject: "echo.one.{a}", timeout: 5s}}
  - {name: six, method: GET, path: "/six/{a}/{b}/{c}/{d}/{e}/{f}", nats: {subject: "echo.six.{a}.{b}.{c}.{d}.{e}.{f}", timeout: 5s}}
  - {name: body, method: POST, path: "/body/{a}", forward_headers: [X-Body-Hash], nats: {subject: "echo.body.{a}", timeout: 5s}}
  - {name: slow, method: GET, path: "/slow/{a}", breaker: {min_requests: 100000}, nats: {subject: "echo.slow.{a}", timeout: 100ms}}
`

// poolWorker answers echo.> with what it received, as a hostile worker
// would: headers that collide with natsgate's own (X-Request-Id,
// Server-Timing, Content-Length, Http-Status, X-Natsgate-Backend), one
// name in two spellings, many names, a huge value, each carrying the
// request's id. By the request's mode it also answers late (past the
// route's timeout, or after the client left), twice (the second answer
// marked as a duplicate), or with a status of its own.
func poolWorker(t *testing.T, nc *nats.Conn) {
	t.Helper()
	respond(t, nc, "echo.>", func(m *nats.Msg) *nats.Msg {
		id := m.Header.Get(HeaderRequestID)
		e := echoed{ID: id, Subject: m.Subject, Path: m.Header.Get(HeaderPath), Query: m.Header.Get(HeaderQuery), Params: map[string]string{}}
		for k := range m.Header {
			e.Headers = append(e.Headers, k)
			if name, ok := strings.CutPrefix(k, HeaderParam); ok {
				e.Params[name] = m.Header.Get(k)
			}
		}
		sort.Strings(e.Headers)
		if len(m.Data) > 0 {
			e.Body = bodyHash(m.Data)
		}
		data, _ := json.Marshal(e)
		q, _ := url.ParseQuery(e.Query)
		out := nats.NewMsg("")
		out.Data = data
		h := out.Header
		h["X-Request-Id"] = []string{"forged-" + id}
		h["x-request-id"] = []string{"forged-lower-" + id}
		h["Server-Timing"] = []string{"worker;dur=1, forged;desc=" + id}
		h["Content-Length"] = []string{strconv.Itoa(len(data) + 1000)}
		h["X-Natsgate-Backend"] = []string{"forged"}
		h["X-Echo-Id"] = []string{id}
		h["x-echo-id"] = []string{id}
		h["Content-Type"] = []string{"application/json"}
		for i := range 40 {
			h["X-K-"+strconv.Itoa(i)] = []string{id}
		}
		h["X-Huge"] = []string{strings.Repeat("h", 8<<10) + id}
		if s := q.Get("status"); s != "" {
			h[HeaderStatus] = []string{s}
		}
		switch q.Get("mode") {
		case "late": // past the route's timeout, or after the client left
			go func() {
				time.Sleep(150 * time.Millisecond)
				_ = m.RespondMsg(out)
			}()
			return nil
		case "twice":
			_ = m.RespondMsg(out)
			dup := nats.NewMsg("")
			dup.Header["X-Echo-Id"] = []string{"duplicate-" + id}
			dup.Header["X-Dup-Only"] = []string{id}
			dup.Data = []byte("duplicate of " + id)
			return dup
		}
		return out
	})
}

// poolCase is one request shape and what its own answer must say.
type poolCase struct {
	path   string // under the gateway, before the query
	params map[string]string
	body   []byte
	mode   string // the worker's: "", "late" or "twice"
	ask    string // the Http-Status the worker is asked to answer with
	leave  bool   // the client leaves before the answer comes
	status int    // the status the client must get
}

// query is the request's query, which tells the worker what to do.
func (pc poolCase) query() string {
	q := url.Values{"mode": {pc.mode}}
	if pc.ask != "" {
		q.Set("status", pc.ask)
	}
	return q.Encode()
}

// poolCases gives request i of client c its shape: every route, long and
// empty values, every mode, in an order that mixes them.
func poolCases(c, i int) poolCase {
	tag := fmt.Sprintf("c%di%d", c, i)
	long := strings.Repeat("v", 1+(i*37)%90)
	switch i % 9 {
	case 0:
		return poolCase{path: "/zero", status: 200}
	case 1:
		return poolCase{path: "/one/" + tag, params: map[string]string{"a": tag}, status: 200}
	case 2:
		vals := []string{tag, long, "x", tag + long, "y" + tag, long[:1]}
		names := []string{"a", "b", "c", "d", "e", "f"}
		p := map[string]string{}
		for k, n := range names {
			p[n] = vals[k]
		}
		return poolCase{path: "/six/" + strings.Join(vals, "/"), params: p, status: 200}
	case 3:
		b := bytes.Repeat([]byte(tag), 1+(i*13)%2000)
		return poolCase{path: "/body/" + tag, params: map[string]string{"a": tag}, body: b, status: 200}
	case 4:
		return poolCase{path: "/one/" + tag, params: map[string]string{"a": tag}, mode: "twice", status: 200}
	case 5:
		return poolCase{path: "/slow/" + tag, params: map[string]string{"a": tag}, mode: "late", status: 504}
	case 6:
		return poolCase{path: "/one/" + tag, params: map[string]string{"a": tag}, mode: "late", ask: "299", leave: true}
	case 7:
		return poolCase{path: "/zero", ask: "201", status: 201}
	default:
		return poolCase{path: "/six/" + strings.Repeat(tag+"/", 5) + tag, params: map[string]string{"a": tag, "b": tag, "c": tag, "d": tag, "e": tag, "f": tag}, status: 200}
	}
}

// checkOwnAnswer says what in an answer is not its own request's, or "".
func checkOwnAnswer(pc poolCase, id string, resp *http.Response, body []byte) string {
	if resp.StatusCode != pc.status {
		return fmt.Sprintf("status %d, want %d: %.200s", resp.StatusCode, pc.status, body)
	}
	if v := resp.Header.Values(HeaderRequestID); len(v) != 1 || v[0] != id {
		return fmt.Sprintf("X-Request-Id %q", v)
	}
	if v := resp.Header.Values(HeaderBackend); len(v) != 1 || v[0] != "nats" {
		return fmt.Sprintf("X-Natsgate-Backend %q", v)
	}
	if v := resp.Header.Values(HeaderServerTiming); len(v) != 1 || strings.Contains(v[0], "forged") {
		return fmt.Sprintf("Server-Timing %q", v)
	}
	if resp.ContentLength != int64(len(body)) {
		return fmt.Sprintf("Content-Length %d for %d bytes", resp.ContentLength, len(body))
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, "forged") || strings.Contains(v, "duplicate") || k == "X-Dup-Only" {
				return fmt.Sprintf("header %s: %.80q", k, v)
			}
			// Every id a worker put in a header is this request's own.
			if i := strings.Index(v, "pool-"); i >= 0 && !strings.HasSuffix(v, id) {
				return fmt.Sprintf("header %s carries another request's id: %.80q", k, v[i:])
			}
		}
	}
	if pc.status >= 400 {
		var p problem
		if err := json.Unmarshal(body, &p); err != nil || p.RequestID != id || p.Instance != pc.path {
			return fmt.Sprintf("problem body %.300s", body)
		}
		return ""
	}
	if v := resp.Header.Values("X-Echo-Id"); len(v) != 2 || v[0] != id || v[1] != id {
		return fmt.Sprintf("X-Echo-Id %q", v)
	}
	if len(resp.Header) > 60 {
		return fmt.Sprintf("%d header names", len(resp.Header))
	}
	var e echoed
	if err := json.Unmarshal(body, &e); err != nil {
		return fmt.Sprintf("body %.200q", body)
	}
	if e.ID != id || e.Path != pc.path || e.Body != bodyHashOrEmpty(pc.body) {
		return fmt.Sprintf("echo %+v", e)
	}
	if len(e.Params) != len(pc.params) {
		return fmt.Sprintf("params %v, want %v", e.Params, pc.params)
	}
	for k, v := range pc.params {
		if e.Params[k] != v {
			return fmt.Sprintf("params %v, want %v", e.Params, pc.params)
		}
	}
	if e.Query != pc.query() {
		return fmt.Sprintf("query %q, want %q", e.Query, pc.query())
	}
	for _, k := range e.Headers {
		switch {
		case k == "X-Body-Hash" && pc.body != nil, k == HeaderMethod, k == HeaderPath, k == HeaderQuery, k == HeaderRoute, k == HeaderRequestID,
			strings.HasPrefix(k, HeaderParam), k == "Content-Type" && pc.body != nil, k == "Accept":
		default:
			return fmt.Sprintf("the request carried header %s", k)
		}
	}
	return ""
}

// freePort is a loopback port free a moment ago, for a server that is
// to come back on the same port.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func bodyHashOrEmpty(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return bodyHash(b)
}

// Request routes reuse their header maps, value slices, reply waiters,
// timers and body buffers from one request to the next. Many clients at
// once, on routes with 0, 1 and 6 parameters of every length, with
// bodies, against a worker whose headers collide with natsgate's and
// that answers late, twice, after the client left or with a status of
// its own, while the NATS server restarts under them (every wait
// abandoned at once): every answer, a success or a problem, is its own
// request's, whole, and nothing a worker sent for one request shows up
// on another's.
func TestPooledRequestPathAnswersOnlyWithItsOwnRequest(t *testing.T) {
	opts := natstest.Options(t)
	opts.Port = freePort(t)
	ns := natstest.RunServerWith(t, opts)
	gw := startGateway(t, ns, poolRoutes)
	poolWorker(t, natstest.Connect(t, ns, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond)))

	const clients, each = 8, 180
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var wg sync.WaitGroup
	var bad atomic.Int64
	var answered, failed atomic.Int64
	report := func(format string, args ...any) {
		if bad.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	restart := make(chan struct{})
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if c == 0 && i == each/3 {
					close(restart)
				}
				pc := poolCases(c, i)
				id := fmt.Sprintf("pool-%d-%d", c, i)
				timeout := 10 * time.Second
				if pc.leave {
					timeout = 40 * time.Millisecond
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				var body io.Reader
				method := "GET"
				if pc.body != nil {
					body, method = bytes.NewReader(pc.body), "POST"
				}
				req, _ := http.NewRequestWithContext(ctx, method, gw.URL+pc.path+"?"+pc.query(), body)
				req.Header.Set(HeaderRequestID, id)
				if pc.body != nil {
					req.Header.Set("X-Body-Hash", bodyHash(pc.body))
				}
				resp, err := client.Do(req)
				if err != nil {
					cancel()
					if !pc.leave {
						report("request %s %s: %v", id, pc.path, err)
					}
					continue
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				if err != nil {
					report("request %s %s: reading the answer: %v", id, pc.path, err)
					continue
				}
				if pc.leave {
					continue // answered before the client left: the worker is slower
				}
				if resp.StatusCode == 503 || resp.StatusCode == 502 {
					// The restart: a problem, but its own.
					pc.status = resp.StatusCode
					failed.Add(1)
					time.Sleep(20 * time.Millisecond) // while NATS comes back
				}
				if why := checkOwnAnswer(pc, id, resp, got); why != "" {
					report("request %s %s: %s", id, pc.path, why)
				}
				answered.Add(1)
			}
		}()
	}
	<-restart
	ns.Shutdown()
	ns.WaitForShutdown()
	natstest.RunServerWith(t, opts)
	wg.Wait()
	t.Logf("%d answers checked, %d of them failures during the restart", answered.Load(), failed.Load())
	if answered.Load() < clients*each/2 {
		t.Errorf("only %d answers checked", answered.Load())
	}
}

// legacyAnswer is the body an echo upstream answers request id with, of
// about size bytes: the id over and over, so that any stretch of it tells
// whose it is.
func legacyAnswer(id string, size int) []byte {
	unit := id + ";"
	return bytes.Repeat([]byte(unit), 1+size/len(unit))
}

// The legacy proxy copies answers through free-listed 32 KiB buffers and
// every answer's access log line is encoded in a pooled buffer. Answers
// cut mid-body (with a Content-Length, chunked), answers whose client
// leaves mid-body, small and large ones, at once: every answer a client
// reads is its own request's (a cut one a clean prefix of its own, never
// bytes of another), and every access log line names its own request's
// path and the status its client was given, once.
func TestLegacyAnswersAndLogLinesAreEachTheirOwnRequests(t *testing.T) {
	modes := []string{"ok", "cut-length", "cut-chunked", "leave", "teapot", "ok-large"}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/legacy/"), "/")
		id, mode := parts[0], parts[1]
		if r.Header.Get(HeaderRequestID) != id {
			w.WriteHeader(http.StatusConflict)
			return
		}
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		body := legacyAnswer(id, size)
		switch mode {
		case "teapot":
			w.WriteHeader(http.StatusTeapot)
			_, _ = w.Write(body[:len(id)+1])
		case "cut-length":
			w.Header().Set("Content-Length", strconv.Itoa(2*len(body)))
			_, _ = w.Write(body)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection closes short
		case "cut-chunked":
			_, _ = w.Write(body)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // no last chunk
		case "leave":
			w.Header().Set("Content-Length", strconv.Itoa(2*len(body)))
			_, _ = w.Write(body)
			w.(http.Flusher).Flush()
			select { // the client leaves meanwhile
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
			_, _ = w.Write(body)
		default:
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		}
	}))
	t.Cleanup(up.Close)
	ns := natstest.RunServer(t)
	logBuf := &syncBuffer{}
	gw := startGatewayLogging(t, ns, fmt.Sprintf(`
log: {format: json, level: info}
upstreams:
  legacy: {url: %q, timeout: 5s, breaker: {min_requests: 100000}}
routes:
  - {name: legacy-echo, method: GET, path: "/legacy/*", upstream: legacy}
`, up.URL), logBuf)

	const clients, each = 6, 60
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var mu sync.Mutex
	statuses := map[string]int{} // by request id: what its client was given
	var bad atomic.Int64
	report := func(format string, args ...any) {
		if bad.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				mode := modes[(c+i)%len(modes)]
				id := fmt.Sprintf("legacy-%d-%d", c, i)
				size := 1 + (i*4099)%(40<<10)
				if mode == "ok-large" {
					size = 100<<10 + i*1000 // several copy buffers
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/legacy/%s/%s?size=%d", gw.URL, id, mode, size), nil)
				req.Header.Set(HeaderRequestID, id)
				resp, err := client.Do(req)
				if err != nil {
					cancel()
					if !strings.HasPrefix(mode, "cut-") {
						report("request %s (%s): %v", id, mode, err)
					}
					// A short cut answer may break off with its head:
					// its client was given the upstream's 200 all the
					// same.
					mu.Lock()
					statuses[id] = http.StatusOK
					mu.Unlock()
					continue
				}
				mu.Lock()
				statuses[id] = resp.StatusCode
				mu.Unlock()
				if v := resp.Header.Values(HeaderRequestID); len(v) != 1 || v[0] != id {
					report("request %s (%s): X-Request-Id %q", id, mode, v)
				}
				want := legacyAnswer(id, size)
				var got []byte
				if mode == "leave" {
					got = make([]byte, 10)
					_, err = io.ReadFull(resp.Body, got)
				} else {
					got, err = io.ReadAll(resp.Body)
				}
				resp.Body.Close()
				cancel()
				switch mode {
				case "ok", "ok-large":
					if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, want) {
						report("request %s (%s): %d, %d bytes, %v: not its own whole answer: %.60q", id, mode, resp.StatusCode, len(got), err, got)
					}
				case "leave":
					if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, want[:10]) {
						report("request %s (%s): %d, %v: %.60q", id, mode, resp.StatusCode, err, got)
					}
				case "teapot":
					if resp.StatusCode != http.StatusTeapot || string(got) != id+";" {
						report("request %s (%s): %d %.60q", id, mode, resp.StatusCode, got)
					}
				default:
					if err == nil {
						report("request %s (%s): a cut answer read as a whole one", id, mode)
					}
					if !bytes.HasPrefix(want, got) && !bytes.HasPrefix(bytes.Repeat(want, 2), got) {
						report("request %s (%s): %d bytes not its own: %.60q", id, mode, len(got), got)
					}
				}
			}
		}()
	}
	wg.Wait()

	// Every request's line, once, with its own path and the status its
	// client was given (the 200 whose body broke off, or whose client
	// left, included).
	natstest.Eventually(t, 10*time.Second, "an access log line for every request", func() bool {
		log := logBuf.String()
		for id := range statuses {
			if !strings.Contains(log, `"request_id":"`+id+`"`) {
				return false
			}
		}
		return true
	})
	seen := map[string]int{}
	for _, l := range strings.Split(logBuf.String(), "\n") {
		var m struct {
			Msg, Route, Path, RequestID string
			Status                      int
		}
		var raw map[string]any
		if json.Unmarshal([]byte(l), &raw) != nil || raw["msg"] != "request" {
			continue
		}
		_ = json.Unmarshal([]byte(l), &m)
		m.RequestID, _ = raw["request_id"].(string)
		seen[m.RequestID]++
		parts := strings.Split(strings.TrimPrefix(m.Path, "/legacy/"), "/")
		if len(parts) != 2 || parts[0] != m.RequestID || m.Route != "legacy-echo" {
			report("access line of %s names path %q, route %q: %s", m.RequestID, m.Path, m.Route, l)
			continue
		}
		mu.Lock()
		given, ok := statuses[m.RequestID]
		mu.Unlock()
		if !ok || m.Status != given {
			report("access line of %s (%s): status %d, its client was given %d: %s", m.RequestID, parts[1], m.Status, given, l)
		}
	}
	for id := range statuses {
		// A GET that got nothing back at all (a cut answer short enough
		// to break off with its head) is sent again by the client's
		// transport, under the same id: a line for each time.
		if seen[id] == 2 && strings.HasPrefix(modes[idMode(id, len(modes))], "cut-") {
			continue
		}
		if seen[id] != 1 {
			report("request %s has %d access log lines", id, seen[id])
		}
	}
}

// idMode is the index in modes of request "legacy-<c>-<i>".
func idMode(id string, modes int) int {
	var c, i int
	_, _ = fmt.Sscanf(id, "legacy-%d-%d", &c, &i)
	return (c + i) % modes
}

// A shadow copy's job and the legacy answer's capture buffer are pooled.
// Legacy answers of 0 B, 1 KiB, past bodyPoolKeep and past compareLimit,
// some copies answered the same as the upstream and some not, many at
// once: every copy is compared with its own request's legacy answer (the
// same ones all match, a too large one is an error), and every mismatch
// record holds one request's id, path and both its answers.
func TestShadowComparisonsAndRecordsAreEachTheirOwnRequests(t *testing.T) {
	sizes := []int{0, 1 << 10, bodyPoolKeep + 5000, compareLimit + 1000, 7}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/shadow/")
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		if size > 0 {
			_, _ = w.Write(legacyAnswer(id, size))
		}
	}))
	t.Cleanup(up.Close)
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, fmt.Sprintf(`
defaults:
  shadow_max_inflight: 1000
upstreams:
  legacy: {url: %q, timeout: 5s}
routes:
  - name: shadowed
    method: GET
    path: "/shadow/{id}"
    upstream: legacy
    cutover: shadow
    nats: {subject: "shadow.{id}", timeout: 5s}
`, up.URL))
	respond(t, natstest.Connect(t, ns), "shadow.*", func(m *nats.Msg) *nats.Msg {
		id := m.Header.Get(HeaderParam + "id")
		q, _ := url.ParseQuery(m.Header.Get(HeaderQuery))
		size, _ := strconv.Atoi(q.Get("size"))
		switch {
		case q.Get("differ") != "":
			return &nats.Msg{Data: []byte("nats:" + id)}
		case size > compareLimit:
			return &nats.Msg{Data: []byte("too large to answer the same")}
		case size == 0:
			return &nats.Msg{}
		}
		return &nats.Msg{Data: legacyAnswer(id, size)}
	})

	const clients, each = 6, 50
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var want struct{ match, mismatch, errors atomic.Int64 }
	var bad atomic.Int64
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("sh%d-%d", c, i)
				size := sizes[(c+i)%len(sizes)]
				differ := i%3 == 0
				q := "size=" + strconv.Itoa(size)
				switch {
				case size > compareLimit:
					want.errors.Add(1)
				case differ && size > 0:
					q += "&differ=1"
					want.mismatch.Add(1)
				default:
					want.match.Add(1)
				}
				req, _ := http.NewRequest("GET", gw.URL+"/shadow/"+id+"?"+q, nil)
				req.Header.Set(HeaderRequestID, id)
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("request %s: %v", id, err)
					bad.Add(1)
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if wantBody := legacyAnswer(id, size); resp.StatusCode != 200 || (size > 0 && !bytes.Equal(got, wantBody)) || (size == 0 && len(got) != 0) {
					t.Errorf("request %s: %d, %d bytes: not its own legacy answer", id, resp.StatusCode, len(got))
					bad.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() > 0 {
		return
	}
	shadow := gw.metrics.ShadowComparisons
	count := func(result string) int64 {
		return int64(testutil.ToFloat64(shadow.WithLabelValues("shadowed", result)))
	}
	natstest.Eventually(t, 20*time.Second, "an outcome for every copy", func() bool {
		return count("match")+count("mismatch")+count("error")+count("dropped") >= clients*each
	})
	if count("match") != want.match.Load() || count("mismatch") != want.mismatch.Load() || count("error") != want.errors.Load() {
		t.Errorf("match %d, mismatch %d, error %d (dropped %d); want %d, %d, %d: a copy was compared with another request's answer",
			count("match"), count("mismatch"), count("error"), count("dropped"), want.match.Load(), want.mismatch.Load(), want.errors.Load())
	}
	records := gw.Mismatches("shadowed")
	if len(records) == 0 {
		t.Fatal("no mismatch record kept")
	}
	for _, m := range records {
		if m.Path != "/shadow/"+m.RequestID || m.NATS.Body != "nats:"+m.RequestID ||
			!strings.HasPrefix(string(legacyAnswer(m.RequestID, compareLimit)), m.Legacy.Body) || len(m.Legacy.Body) == 0 {
			t.Errorf("a mismatch record mixes requests: id %s, path %s, nats %.40q, legacy %.40q", m.RequestID, m.Path, m.NATS.Body, m.Legacy.Body)
		}
	}
}
