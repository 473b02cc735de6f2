package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startGatewayAccessTo is a gateway whose access log, and only it, goes
// to sink (the event log is discarded, so that a sink that fails or
// blocks holds up nothing but the access log's writer). The test shuts
// it down itself.
func startGatewayAccessTo(t *testing.T, sink io.Writer) (*testGateway, *nats.Conn) {
	t.Helper()
	return startGatewayLogs(t, Options{AccessLog: sink, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// startGatewayLogs is a gateway with one request route (users.*.get,
// answered "ok" by the worker it returns) and the log options of opts;
// the test shuts it down itself.
func startGatewayLogs(t *testing.T, opts Options) (*testGateway, *nats.Conn) {
	t.Helper()
	ns := natstest.RunServer(t)
	cfg, err := routes.Parse("test.yaml", []byte(`
routes:
  - {name: get-user, method: GET, path: "/users/{id}", nats: {subject: "users.{id}.get", timeout: 2s}}
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.NATS.URL = ns.ClientURL()
	off := false
	cfg.Discovery.Enabled = &off
	cfg.HTTP.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
	table, err := routes.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts.Table, opts.Registry = table, reg
	gw, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	worker := natstest.Connect(t, ns)
	respond(t, worker, "users.*.get", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("ok")} })
	return &testGateway{Server: gw, URL: "http://" + gw.Addr(), AdminURL: "http://" + gw.AdminAddr(), NS: ns, Registry: reg}, worker
}

// droppedLines is natsgate_log_dropped_total.
func droppedLines(t *testing.T, gw *testGateway) int {
	t.Helper()
	return int(testutil.ToFloat64(gw.metrics.LogDropped))
}

// serveUsers sends n requests and checks each is answered, at once,
// whatever the access log's sink does.
func serveUsers(t *testing.T, gw *testGateway, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		t0 := time.Now()
		resp, body := do(t, "GET", gw.URL+"/users/7", nil, nil)
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q, want 200 ok", i, resp.StatusCode, body)
		}
		if d := time.Since(t0); d > notAHang {
			t.Fatalf("request %d took %v: it waited for the access log's sink", i, d)
		}
	}
}

// A sink nobody reads (a FIFO without a reader, a pipe whose reader hung)
// blocks the access log's writer for ever. Requests must not wait for it,
// and Shutdown must end within its deadline rather than wait for ever on
// the blocked write; the lines that never reached the sink are counted as
// dropped, so that dropped + written is every request served.
func TestShutdownEndsWhenTheAccessLogSinkBlocksForEver(t *testing.T) {
	pr, pw := io.Pipe() // nobody reads pr until the end
	gw, _ := startGatewayAccessTo(t, pw)
	const served = 40
	serveUsers(t, gw, served)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- gw.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = pr.Close() // lets the writer and Shutdown go, for the other tests
		<-done
		t.Fatal("Shutdown with a 1s deadline still waited after 10s on an access log sink nobody reads")
	}
	// The reader hangs up: the blocked write fails, and its lines are
	// dropped like the rest. Nothing was written, so all are dropped.
	_ = pr.CloseWithError(errors.New("reader gone"))
	natstest.Eventually(t, 15*time.Second, "every unwritten line counted as dropped", func() bool {
		return droppedLines(t, gw) == served
	})
}

// A sink that refuses every write (/dev/full: ENOSPC) loses every line:
// natsgate_log_dropped_total must say so, one per request served, not
// zero.
func TestAccessLogLinesASinkRefusesAreCountedAsDropped(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("opening /dev/full: %v", err)
	}
	defer full.Close()
	gw, _ := startGatewayAccessTo(t, full)
	const served = 25
	serveUsers(t, gw, served)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := droppedLines(t, gw); got != served {
		t.Errorf("natsgate_log_dropped_total is %d after %d lines refused with ENOSPC, want %d", got, served, served)
	}
}

// shortWriter takes the first limit bytes it is given and refuses the
// rest, as a disk that fills up mid-batch does.
type shortWriter struct {
	mu    sync.Mutex
	limit int
	buf   strings.Builder
}

func (w *shortWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	room := w.limit - w.buf.Len()
	if room >= len(p) {
		return w.buf.WriteString(string(p))
	}
	room = max(room, 0)
	w.buf.WriteString(string(p[:room]))
	return room, errors.New("no space left on device")
}

// A batch the sink takes only part of: every line that did not reach the
// sink whole is counted as dropped, so that whole lines written plus lines
// dropped is every line.
func TestAccessLogPartialWriteCountsTheRest(t *testing.T) {
	e := accessEntries()["nats answer"]
	line := len(appendJSONLine(nil, e))
	w := &shortWriter{limit: 10*line + line/2} // ten lines and half of one
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "d"})
	l := newAccessLog(w, false, dropped)
	const n = 100
	for i := 0; i < n; i++ {
		l.write(e)
	}
	l.Close()
	whole := strings.Count(w.buf.String(), "\n")
	if got := int(testutil.ToFloat64(dropped)); whole+got != n {
		t.Errorf("%d whole lines written and %d dropped, want %d in all", whole, got, n)
	}
}

// FuzzAccessLineFieldsRoundTrip holds the hand-written encoders to the
// standard ones on hostile values in every string field (route, method,
// path, request id, backend, error): a JSON line is one line that
// encoding/json reads back as the same fields, in order, each with the
// value encoding/json itself would have written (invalid UTF-8 as
// U+FFFD); a text line is one line whose key=value pairs read back as the
// same keys, in order, with exactly the values (no value can start a
// field of its own).
func FuzzAccessLineFieldsRoundTrip(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "nl\nline\r", "\x00\x1f\x7f", "é✓", "\u2028\u2029",
		"\xff\xfe", "a=b c", ` level=ERROR msg=x`, `","status":500,"x":"`, strings.Repeat("long✓", 300)} {
		f.Add(s, s, s, s, s, s)
	}
	f.Fuzz(func(t *testing.T, route, method, path, reqID, backend, errText string) {
		r := &http.Request{Method: method, URL: &url.URL{Path: path}}
		e := accessEntry{route: route, r: r, level: "INFO", edgeDur: 1500 * time.Microsecond,
			ex: &exchange{status: 502, backend: backend, reqID: reqID, bytes: 7, nats: 2 * time.Millisecond, worker: -1, upstream: -1,
				fellBack: true, err: errors.New(errText)}}
		keys := []string{"time", "level", "msg", "route", "method", "path", "status", "backend", "request_id", "bytes", "edge_ms", "nats_ms", "fallback", "error"}
		want := map[string]string{"level": "INFO", "msg": "request", "route": route, "method": method, "path": r.URL.EscapedPath(),
			"status": "502", "backend": backend, "request_id": reqID, "bytes": "7", "edge_ms": "1.5", "nats_ms": "2", "fallback": "true",
			"error": clipLogValue(errText)}

		line := appendJSONLine(nil, e)
		if bytes.IndexByte(line, '\n') != len(line)-1 {
			t.Fatalf("JSON line is not one line: %q", line)
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("not a JSON object: %v %v: %q", tok, err, line)
		}
		for i := 0; dec.More(); i++ {
			tok, err := dec.Token()
			if err != nil {
				t.Fatalf("field %d: %v: %q", i, err, line)
			}
			key, _ := tok.(string)
			if i >= len(keys) || key != keys[i] {
				t.Fatalf("field %d is %q, want the fields %v: %q", i, key, keys, line)
			}
			var v any
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("field %s: %v: %q", key, err, line)
			}
			if key == "time" {
				continue
			}
			var got string
			switch v := v.(type) {
			case string:
				got = v
				std, _ := json.Marshal(want[key]) // encoding/json's own encoding of the value
				var stdValue string
				if err := json.Unmarshal(std, &stdValue); err != nil {
					t.Fatal(err)
				}
				if got != stdValue {
					t.Errorf("field %s reads back as %q, encoding/json gives %q", key, got, stdValue)
				}
				continue
			case json.Number:
				got = v.String()
			case bool:
				got = strconv.FormatBool(v)
			default:
				t.Fatalf("field %s is %T", key, v)
			}
			if got != want[key] {
				t.Errorf("field %s is %s, want %s", key, got, want[key])
			}
		}

		text := string(appendTextLine(nil, e))
		if strings.IndexByte(text, '\n') != len(text)-1 {
			t.Fatalf("text line is not one line: %q", text)
		}
		rest := strings.TrimSuffix(text, "\n")
		for i, key := range keys {
			if i > 0 {
				if !strings.HasPrefix(rest, " ") {
					t.Fatalf("before field %s: %q", key, rest)
				}
				rest = rest[1:]
			}
			if !strings.HasPrefix(rest, key+"=") {
				t.Fatalf("field %d is not %s: %q in %q", i, key, rest, text)
			}
			rest = rest[len(key)+1:]
			var got string
			if strings.HasPrefix(rest, `"`) {
				q, err := strconv.QuotedPrefix(rest)
				if err != nil {
					t.Fatalf("field %s: bad quoting: %v: %q", key, err, text)
				}
				got, _ = strconv.Unquote(q)
				rest = rest[len(q):]
			} else {
				end := strings.IndexByte(rest, ' ')
				if end < 0 {
					end = len(rest)
				}
				got, rest = rest[:end], rest[end:]
			}
			if key != "time" && got != want[key] {
				t.Errorf("text field %s is %q, want %q", key, got, want[key])
			}
		}
		if rest != "" {
			t.Errorf("text line goes on after its fields: %q", rest)
		}
	})
}
