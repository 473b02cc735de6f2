package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
	"github.com/sony/gobreaker/v2"
)

// TestClassify is the error → status table: one row per error natsgate
// can meet on the way to a client.
func TestClassify(t *testing.T) {
	const (
		none = notCounted
		ok   = healthy
		bad  = unhealthy
	)
	apiErr := func(code int, desc string) error {
		return fmt.Errorf("nats: %w", &jetstream.APIError{Code: 503, ErrorCode: jetstream.ErrorCode(code), Description: desc})
	}
	tests := []struct {
		name       string
		err        error
		status     int
		kind       Kind
		natsKind   string
		retryAfter bool
		breaker    effect
		delivery   delivery
		byClient   bool
	}{
		{"worker error code", &workerError{code: 404, message: "no such user"}, 404, KindWorkerError, "", false, ok, answered, false},
		{"wrapped worker error", fmt.Errorf("route x: %w", &workerError{code: 503, message: "busy"}), 503, KindWorkerError, "", false, bad, answered, false},
		{"client gone", ErrClientGone, StatusClientClosed, KindClientClosed, "", false, none, maybeDelivered, true},
		{"context canceled", fmt.Errorf("request: %w", context.Canceled), StatusClientClosed, KindClientClosed, "", false, none, maybeDelivered, true},
		{"bad param", fmt.Errorf("parameter %q: %w", "id", routes.ErrBadParam), 400, KindBadParam, "", false, none, notSent, true},
		{"subject too long", routes.ErrSubjectTooLong, 414, KindSubjectTooLong, "", false, none, notSent, true},
		{"body too large", fmt.Errorf("%w: 2 MiB", ErrBodyTooLarge), 413, KindBodyTooLarge, "", false, none, notSent, true},
		{"over max_payload", nats.ErrMaxPayload, 413, KindBodyTooLarge, metrics.KindPayload, false, none, notSent, false},
		{"body over max_payload", fmt.Errorf("%w: 32768 bytes", errOverMaxPayload), 413, KindBodyTooLarge, "", false, none, notSent, false},
		{"body timeout", ErrBodyTimeout, 408, KindBodyTimeout, "", false, none, notSent, true},
		{"bad request", fmt.Errorf("%w: Idempotency-Key too long", ErrBadRequest), 400, KindBadRequest, "", false, none, notSent, true},
		{"breaker open", ErrBreakerOpen, 503, KindBreakerOpen, "", true, none, notSent, false},
		{"breaker open error", &openError{target: "route x", retryAfter: 30 * time.Second}, 503, KindBreakerOpen, "", true, none, notSent, false},
		{"gobreaker open", gobreaker.ErrOpenState, 503, KindBreakerOpen, "", true, none, notSent, false},
		{"gobreaker half-open busy", gobreaker.ErrTooManyRequests, 503, KindBreakerOpen, "", true, none, notSent, false},
		{"no responders", nats.ErrNoResponders, 503, KindNoResponders, metrics.KindNoResponders, true, none, notSent, false},
		{"no stream response", jetstream.ErrNoStreamResponse, 503, KindNoStream, metrics.KindNoResponders, true, none, notSent, false},
		{"no stream", ErrNoStream, 503, KindNoStream, metrics.KindNoResponders, true, none, notSent, false},
		{"stream full (max_msgs)", apiErr(10077, "maximum messages exceeded"), 503, KindStreamFull, metrics.KindRefused, true, none, answered, false},
		{"stream full (max_bytes)", apiErr(10077, "maximum bytes exceeded"), 503, KindStreamFull, metrics.KindRefused, true, none, answered, false},
		{"stream full (per subject)", apiErr(10077, "maximum messages per subject exceeded"), 503, KindStreamFull, metrics.KindRefused, true, none, answered, false},
		{"storage exhausted", apiErr(10047, "insufficient storage resources available"), 503, KindStreamFull, metrics.KindRefused, true, none, answered, false},
		{"stream message size", apiErr(10054, "message size exceeds maximum allowed"), 413, KindBodyTooLarge, metrics.KindPayload, false, none, answered, true},
		{"store failed: too large", apiErr(10077, "message too large"), 413, KindBodyTooLarge, metrics.KindPayload, false, none, answered, true},
		{"jetstream off", apiErr(10076, "jetstream not enabled"), 503, KindNoStream, metrics.KindNoResponders, true, none, notSent, false},
		{"other jetstream refusal", apiErr(10999, "something new"), 502, KindNATSError, metrics.KindOther, false, bad, answered, false},
		{"disconnected", ErrDisconnected, 503, KindDisconnected, metrics.KindDisconnected, true, none, notSent, false},
		{"dropped in flight", errDroppedInFlight, 503, KindDisconnected, metrics.KindDisconnected, true, none, maybeDelivered, false},
		{"connection closed", nats.ErrConnectionClosed, 503, KindDisconnected, metrics.KindDisconnected, true, none, notSent, false},
		{"reconnecting", nats.ErrConnectionReconnecting, 503, KindDisconnected, metrics.KindDisconnected, true, none, notSent, false},
		{"reconnect buffer", nats.ErrReconnectBufExceeded, 503, KindDisconnected, metrics.KindDisconnected, true, none, notSent, false},
		{"draining", nats.ErrConnectionDraining, 503, KindDisconnected, metrics.KindDisconnected, true, none, notSent, false},
		{"nats disconnected", nats.ErrDisconnected, 503, KindDisconnected, metrics.KindDisconnected, true, none, notSent, false},
		{"deadline", context.DeadlineExceeded, 504, KindTimeout, metrics.KindTimeout, false, bad, maybeDelivered, false},
		{"nats timeout", nats.ErrTimeout, 504, KindTimeout, metrics.KindTimeout, false, bad, maybeDelivered, false},
		{"overloaded", ErrOverloaded, 503, KindOverloaded, "", true, none, notSent, false},
		{"not found", ErrNotFound, 404, KindNotFound, "", false, none, notSent, true},
		{"method not allowed", ErrMethodNotAllowed, 405, KindMethodNotAllowed, "", false, none, notSent, true},
		{"upstream timeout", ErrUpstreamTimeout, 504, KindUpstreamTimeout, "", false, bad, maybeDelivered, false},
		{"upstream error", ErrUpstream, 502, KindUpstreamError, "", false, bad, maybeDelivered, false},
		{"anything else", errors.New("nats: bad subject"), 502, KindNATSError, metrics.KindOther, false, bad, maybeDelivered, false},
		// A client that left wins over the deadline its leaving caused.
		{"client gone and deadline", fmt.Errorf("%w (%w)", ErrClientGone, context.DeadlineExceeded), StatusClientClosed, KindClientClosed, "", false, none, maybeDelivered, true},
		// A failure classified once is read, never decided again.
		{"classified", fmt.Errorf("x: %w", &classified{failure: failure{status: 418, kind: KindBadRequest, detail: "kept"}, err: nats.ErrTimeout}), 418, KindBadRequest, "", false, none, notSent, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := classify(tt.err)
			if f.status != tt.status || f.kind != tt.kind || f.natsKind != tt.natsKind {
				t.Errorf("classify(%v) = %d %s %q, want %d %s %q", tt.err, f.status, f.kind, f.natsKind, tt.status, tt.kind, tt.natsKind)
			}
			if f.breaker != tt.breaker || f.delivery != tt.delivery || f.byClient != tt.byClient {
				t.Errorf("classify(%v): breaker %d, delivery %d, byClient %v; want %d, %d, %v", tt.err, f.breaker, f.delivery, f.byClient, tt.breaker, tt.delivery, tt.byClient)
			}
			if (f.retryAfter > 0) != tt.retryAfter {
				t.Errorf("classify(%v).retryAfter = %v", tt.err, f.retryAfter)
			}
			if f.detail == "" && f.status != StatusClientClosed {
				t.Errorf("classify(%v) has no detail", tt.err)
			}
			var api *jetstream.APIError
			if errors.As(tt.err, &api) && strings.Contains(f.detail, api.Description) {
				t.Errorf("classify(%v).detail %q passes the server's text on", tt.err, f.detail)
			}
		})
	}
}

// TestMayFallBack: the upstream answers for a failed NATS side only when
// nothing was sent, or a worker may have acted and the method is safe to
// repeat; never for what the client caused or a backend answered.
func TestMayFallBack(t *testing.T) {
	tests := []struct {
		err     error
		method  string
		fallsTo bool
	}{
		{nats.ErrNoResponders, "POST", true},
		{ErrNoStream, "POST", true},
		{ErrBreakerOpen, "POST", true},
		{ErrDisconnected, "POST", true},
		{errDroppedInFlight, "GET", true},
		{errDroppedInFlight, "POST", false},
		{context.DeadlineExceeded, "PUT", true},
		{context.DeadlineExceeded, "PATCH", false},
		{&workerError{code: 500, message: "boom"}, "GET", false},
		{routes.ErrBadParam, "GET", false},
		{ErrBodyTooLarge, "GET", false},
		{ErrClientGone, "GET", false},
		{&jetstream.APIError{ErrorCode: 10077, Description: "maximum messages exceeded"}, "POST", false},
	}
	for _, tt := range tests {
		if got := classify(tt.err).mayFallBack(tt.method); got != tt.fallsTo {
			t.Errorf("%v on %s: mayFallBack %v, want %v", tt.err, tt.method, got, tt.fallsTo)
		}
	}
}

func TestWriteProblem(t *testing.T) {
	r := httptest.NewRequest("GET", "/users/a%2Eb", nil)
	w := httptest.NewRecorder()
	writeProblem(w, r, classify(nats.ErrNoResponders), "get-user", "req-1")
	res := w.Result()
	if res.StatusCode != 503 || res.Header.Get("Content-Type") != "application/problem+json" || res.Header.Get("Retry-After") != "1" {
		t.Fatalf("got %d %q Retry-After %q", res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Retry-After"))
	}
	var p map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "about:blank", "title": "Service Unavailable", "status": 503.0, "kind": "no_responders",
		"route": "get-user", "request_id": "req-1", "instance": "/users/a%2Eb"}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("%s = %v, want %v", k, p[k], v)
		}
	}

	// No route: "route" is null, not absent and not "".
	w = httptest.NewRecorder()
	writeProblem(w, r, classify(ErrNotFound), "", "req-2")
	if !strings.Contains(w.Body.String(), `"route":null`) {
		t.Errorf("unrouted problem %s lacks \"route\":null", w.Body)
	}

	// A client that left gets nothing written.
	w = httptest.NewRecorder()
	writeProblem(w, r, classify(ErrClientGone), "get-user", "req-3")
	if w.Code != StatusClientClosed || w.Body.Len() != 0 {
		t.Errorf("client gone: %d %q", w.Code, w.Body)
	}
}

func natsMsg(data string, kv ...string) *nats.Msg {
	m := &nats.Msg{Data: []byte(data), Header: nats.Header{}}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Header[kv[i]] = append(m.Header[kv[i]], kv[i+1])
	}
	return m
}

func TestMapReply(t *testing.T) {
	tests := []struct {
		name       string
		msg        *nats.Msg
		status     int
		workerErr  string // the worker error's message, "" for none
		header     http.Header
		workerTime time.Duration
	}{
		{"plain reply", &nats.Msg{Data: []byte("hi")}, 200, "", http.Header{"Content-Type": {"application/octet-stream"}}, -1},
		{"a typed body keeps its type", natsMsg("hi", "Content-Type", "text/plain"), 200, "", http.Header{"Content-Type": {"text/plain"}}, -1},
		{"an empty type is none", natsMsg("hi", "Content-Type", ""), 200, "", http.Header{"Content-Type": {"application/octet-stream"}}, -1},
		{"the worker cannot allow sniffing", natsMsg("", "x-content-type-options", "sniff-away"), 200, "", nil, -1},
		{
			"values with control bytes are dropped",
			natsMsg("", "X-Nul", "a\x00b", "X-Cr", "a\rb", "X-Lf", "a\nb", "X-Del", "\x7f", "X-Esc", "\x1b[0m",
				"X-Mixed", "ok", "X-Mixed", "bad\x01", "X-Tab", "a\tb", "X-Utf8", "zo\u00eb"),
			200, "",
			http.Header{"X-Mixed": {"ok"}, "X-Tab": {"a\tb"}, "X-Utf8": {"zo\u00eb"}},
			-1,
		},
		{
			"spellings of one name are merged, canonical first, then by spelling",
			natsMsg("", "set-cookie", "a=1", "Set-Cookie", "b=2", "Set-Cookie", "c=3", "SET-COOKIE", "d=4", "sEt-CoOkIe", "e=5", "x-only", "1"),
			200, "",
			http.Header{"Set-Cookie": {"b=2", "c=3", "d=4", "e=5", "a=1"}, "X-Only": {"1"}},
			-1,
		},
		{"a merged spelling's bad values are dropped", natsMsg("", "x-a", "1\x00", "X-A", "2", "X-a", "3"), 200, "", http.Header{"X-A": {"2", "3"}}, -1},
		{"Http-Status", natsMsg("", "Http-Status", "201"), 201, "", nil, -1},
		{"Http-Status with spaces", natsMsg("", "Http-Status", " 404 "), 404, "", nil, -1},
		{"Http-Status 204", natsMsg("", "Http-Status", "204"), 204, "", nil, -1},
		{"Http-Status not a number", natsMsg("", "Http-Status", "ok"), 502, `invalid Http-Status "ok"`, nil, -1},
		{"Http-Status 1xx", natsMsg("", "Http-Status", "101"), 502, "invalid Http-Status", nil, -1},
		{"Http-Status 600", natsMsg("", "Http-Status", "600"), 502, "invalid Http-Status", nil, -1},
		{"micro error", natsMsg("", "Nats-Service-Error-Code", "404", "Nats-Service-Error", "no such user"), 404, "no such user", nil, -1},
		{"micro error 503", natsMsg("", "Nats-Service-Error-Code", "503", "Nats-Service-Error", "busy"), 503, "busy", nil, -1},
		{"micro error wins over Http-Status", natsMsg("", "Http-Status", "200", "Nats-Service-Error-Code", "409", "Nats-Service-Error", "conflict"), 409, "conflict", nil, -1},
		{"micro error code 200", natsMsg("", "Nats-Service-Error-Code", "200", "Nats-Service-Error", "odd"), 502, `error code "200"`, nil, -1},
		{"micro error code 302", natsMsg("", "Nats-Service-Error-Code", "302", "Nats-Service-Error", "moved"), 502, `error code "302"`, nil, -1},
		{"micro error code 600", natsMsg("", "Nats-Service-Error-Code", "600", "Nats-Service-Error", "x"), 502, `error code "600"`, nil, -1},
		{"micro error code text", natsMsg("", "Nats-Service-Error-Code", "E_BAD", "Nats-Service-Error", "x"), 502, `error code "E_BAD"`, nil, -1},
		{
			"headers pass, protocol and hop-by-hop ones do not",
			natsMsg("", "Content-Type", "application/json", "X-Custom", "a", "X-Custom", "b", "Set-Cookie", "s=1",
				"Http-Route", "x", "Http-Foo", "x", "Nats-Msg-Id", "x", "nats-expected-stream", "x", "NATS-TTL", "1s",
				"Connection", "close", "Keep-Alive", "timeout=5", "Transfer-Encoding", "chunked", "Content-Length", "999",
				"Upgrade", "h2c", "Te", "trailers", "Trailer", "X", "Proxy-Authenticate", "Basic", "X-Request-Id", "worker-id"),
			200, "",
			http.Header{"Content-Type": {"application/json"}, "X-Custom": {"a", "b"}, "Set-Cookie": {"s=1"}},
			-1,
		},
		{"header names are canonicalized", natsMsg("", "x-lower", "1"), 200, "", http.Header{"X-Lower": {"1"}}, -1},
		{"headers named by Connection are hop-by-hop", natsMsg("", "Connection", "X-Hop, close", "X-Hop", "1", "X-Keep", "2"), 200, "", http.Header{"X-Keep": {"2"}}, -1},
		{
			"headers named by Connection are hop-by-hop in any spelling",
			natsMsg("", "connection", "x-hop", "CONNECTION", "X-Other", "X-HOP", "1", "x-hop", "2", "x-other", "3", "x-keep", "4"),
			200, "", http.Header{"X-Keep": {"4"}}, -1,
		},
		{"a Server-Timing named by Connection is not the worker's", natsMsg("", "Connection", "server-timing", "Server-Timing", "worker;dur=5"), 200, "", nil, -1},
		{"invalid header names are dropped", natsMsg("", "nats-x y", "1", "X\x00", "1", "Bad:Name", "1", "X-Ok", "1"), 200, "", http.Header{"X-Ok": {"1"}}, -1},
		{"worker time", natsMsg("", "Server-Timing", "worker;dur=12.5"), 200, "", nil, 12500 * time.Microsecond},
		{"worker time among others", natsMsg("", "Server-Timing", "db;dur=3, worker;desc=\"w\";dur=7"), 200, "", nil, 7 * time.Millisecond},
		{"worker time quoted", natsMsg("", "Server-Timing", `worker;dur="5"`), 200, "", nil, 5 * time.Millisecond},
		{"worker time negative", natsMsg("", "Server-Timing", "worker;dur=-1"), 200, "", nil, -1},
		{"worker time NaN", natsMsg("", "Server-Timing", "worker;dur=NaN"), 200, "", nil, -1},
		{"worker time Inf", natsMsg("", "Server-Timing", "worker;dur=Inf"), 200, "", nil, -1},
		{"worker time absent", natsMsg("", "Server-Timing", "db;dur=3"), 200, "", nil, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := mapReply(tt.msg)
			if rep.status != tt.status {
				t.Errorf("status = %d, want %d", rep.status, tt.status)
			}
			switch {
			case tt.workerErr == "" && rep.workerErr != nil:
				t.Errorf("unexpected worker error %v", rep.workerErr)
			case tt.workerErr != "" && rep.workerErr == nil:
				t.Errorf("no worker error, want %q", tt.workerErr)
			case tt.workerErr != "":
				if !strings.Contains(rep.workerErr.message, tt.workerErr) || rep.workerErr.code != tt.status {
					t.Errorf("worker error = %d %q, want %d ~%q", rep.workerErr.code, rep.workerErr.message, tt.status, tt.workerErr)
				}
			}
			// Every answer carries nosniff besides the worker's headers.
			want := http.Header{"X-Content-Type-Options": {"nosniff"}}
			for k, v := range tt.header {
				want[k] = v
			}
			if fmt.Sprint(rep.header) != fmt.Sprint(want) {
				t.Errorf("header = %q, want %q", rep.header, want)
			}
			if rep.workerTime != tt.workerTime {
				t.Errorf("workerTime = %v, want %v", rep.workerTime, tt.workerTime)
			}
			if string(rep.body) != string(tt.msg.Data) {
				t.Errorf("body = %q, want %q", rep.body, tt.msg.Data)
			}
		})
	}
}

// isReservedResponseHeader reports a header that must never reach a client
// from a worker's reply.
func isReservedResponseHeader(name string) bool {
	lower := strings.ToLower(name)
	return strings.HasPrefix(lower, "http-") || strings.HasPrefix(lower, "nats-") ||
		hopByHop[http.CanonicalHeaderKey(name)] || strings.EqualFold(name, HeaderRequestID)
}

func FuzzMapReply(f *testing.F) {
	f.Add("201", "", "", "X-Custom", "v")
	f.Add("", "404", "not found", "Content-Type", "text/plain")
	f.Add("abc", "200", "", "nats-msg-id", "1")
	f.Add(" 99 ", "E1", "x", "Connection", "X-Custom")
	f.Add("+204", "-503", "", "http-status", "200")
	f.Add("", "", "", "X-Bad", "a\r\nSet-Cookie: x=1")
	f.Add("", "", "", "X-Nul", "a\x00b")
	f.Add("", "", "", "X-Esc", "\x1b[31m")
	f.Add("", "", "", "x-custom", "second")
	f.Add("", "", "", "X-CUSTOM", "bad\x7f")
	f.Add("", "", "", "content-type", "")
	f.Add("", "", "", "Content-Type", "text/html")
	f.Add("", "", "", "x-content-type-options", "none")
	f.Fuzz(func(t *testing.T, status, code, text, key, value string) {
		m := &nats.Msg{Data: []byte("body"), Header: nats.Header{}}
		if status != "" {
			m.Header[HeaderStatus] = []string{status}
		}
		if code != "" {
			m.Header[HeaderServiceErrCode] = []string{code}
			m.Header[HeaderServiceErr] = []string{text}
		}
		m.Header[key] = append(m.Header[key], value)
		m.Header["X-Custom"] = []string{"kept"}
		rep := mapReply(m)
		if rep.status < 200 || rep.status > 599 {
			t.Fatalf("status %d from Http-Status %q, error code %q", rep.status, status, code)
		}
		if rep.workerErr != nil && (rep.workerErr.code != rep.status || rep.status < 400) {
			t.Fatalf("worker error %d with status %d", rep.workerErr.code, rep.status)
		}
		for k := range rep.header {
			if isReservedResponseHeader(k) {
				t.Fatalf("reply header %q leaked into the response", k)
			}
			if !validHeaderName(k) {
				t.Fatalf("invalid header name %q in the response", k)
			}
		}
		if !strings.EqualFold(key, "X-Custom") && rep.header.Get("X-Custom") != "kept" && !strings.EqualFold(key, "Connection") {
			t.Fatalf("an ordinary header was dropped: %v", rep.header)
		}
		for k, vs := range rep.header {
			for _, v := range vs {
				for i := 0; i < len(v); i++ {
					if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
						t.Fatalf("header %s: value %q with control byte %#x in the response", k, v, c)
					}
				}
			}
		}
		if got := rep.header["X-Content-Type-Options"]; len(got) != 1 || got[0] != "nosniff" {
			t.Fatalf("X-Content-Type-Options %q, want [nosniff]", got)
		}
		if ct := rep.header["Content-Type"]; len(ct) == 0 || ct[0] == "" {
			t.Fatalf("a body without a Content-Type: %q", ct)
		}
		// Another spelling of X-Custom is merged after the canonical one.
		if key != "X-Custom" && strings.EqualFold(key, "X-Custom") && validFieldValue(value) {
			if got := rep.header["X-Custom"]; len(got) != 2 || got[0] != "kept" || got[1] != value {
				t.Fatalf("X-Custom %q, want [kept %q]", got, value)
			}
		}
	})
}

// testRoute compiles one route for unit tests.
func testRoute(t testing.TB, yamlText string) *routes.Route {
	t.Helper()
	tb, err := routes.Load("unit.yaml", []byte(yamlText), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return tb.Routes[0]
}

const fuzzRouteYAML = `routes:
  - name: put-user
    method: PUT
    path: /users/{id}
    forward_headers: [X-Tenant, Authorization, X-Request-Id]
    nats: {subject: "users.{id}.put"}
`

func FuzzRequestHeader(f *testing.F) {
	f.Add("Nats-Msg-Id: 1\r\nHttp-Status: 200\r\nX-Tenant: acme", "/users/7?x=1")
	f.Add("nats-rollup: all\r\nNATS-TTL: 1s\r\nhttp-method: DELETE\r\nHttp-Param-id: 8", "/users/7")
	f.Add("Nats-Expected-Last-Sequence: 4\r\nNats-Expected-Stream: S\r\nAccept: */*\r\ntraceparent: 00-x", "/users/a%2Eb")
	f.Add("X-Request-Id: a\r\nX-Request-Id: b\r\nContent-Type: text/plain", "/users/%25")
	f.Add("Authorization: Bearer t\r\nX-Other: 1\r\n Folded: line", "/users/x")
	rt := testRoute(f, fuzzRouteYAML)
	f.Fuzz(func(t *testing.T, headers, target string) {
		raw := "PUT " + target + " HTTP/1.1\r\nHost: gw\r\n" + headers + "\r\n\r\n"
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // not a request a client could send
		}
		values := []string{"7"}
		h := requestHeader(rt, r, "rid-1", rt.Params, values)
		gateway := map[string]string{
			HeaderMethod: r.Method, HeaderPath: r.URL.EscapedPath(), HeaderQuery: r.URL.RawQuery,
			HeaderRoute: rt.Name, HeaderParam + "id": "7",
		}
		allowed := map[string]bool{"Content-Type": true, "Content-Encoding": true, "Accept": true, "traceparent": true, "tracestate": true, "X-Tenant": true, "Authorization": true}
		for k, vs := range h {
			lower := strings.ToLower(k)
			switch {
			case strings.HasPrefix(lower, "nats-"):
				t.Fatalf("client header %q reached NATS: %v", k, h)
			case strings.HasPrefix(lower, "http-"):
				want, ok := gateway[k]
				if !ok || len(vs) != 1 || vs[0] != want {
					t.Fatalf("%s = %q, want the gateway's %q (%v)", k, vs, want, ok)
				}
			case k == HeaderRequestID:
				if len(vs) != 1 || vs[0] != "rid-1" {
					t.Fatalf("X-Request-Id = %q, want the gateway's rid-1", vs)
				}
			case !allowed[k]:
				t.Fatalf("header %q is neither the protocol's nor the route's", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(k+v, "\r\n\x00") {
					t.Fatalf("header %q: %q carries a line break or NUL onto NATS", k, v)
				}
			}
		}
	})
}
