package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// slogAccessLine is the line slog itself makes of an entry: the access
// log's own encoder must say the same, field for field.
func slogAccessLine(t *testing.T, text bool, e accessEntry) string {
	t.Helper()
	var buf bytes.Buffer
	var h slog.Handler = slog.NewJSONHandler(&buf, nil)
	if text {
		h = slog.NewTextHandler(&buf, nil)
	}
	ex := e.ex
	attrs := []slog.Attr{
		slog.String("route", e.route), slog.String("method", e.r.Method), slog.String("path", e.r.URL.EscapedPath()),
		slog.Int("status", ex.status), slog.String("backend", ex.backend), slog.String("request_id", ex.reqID),
		slog.Int64("bytes", ex.bytes), slog.Float64("edge_ms", float64(e.edgeDur.Microseconds())/1000),
	}
	if ex.nats >= 0 {
		attrs = append(attrs, slog.Float64("nats_ms", float64(ex.nats.Microseconds())/1000))
	}
	if ex.worker >= 0 {
		attrs = append(attrs, slog.Float64("worker_ms", float64(ex.worker.Microseconds())/1000))
	}
	if ex.upstream >= 0 {
		attrs = append(attrs, slog.Float64("upstream_ms", float64(ex.upstream.Microseconds())/1000))
	}
	if ex.fellBack {
		attrs = append(attrs, slog.Bool("fallback", true))
	}
	if ex.shadowed {
		attrs = append(attrs, slog.Bool("shadowed", true))
	}
	if ex.err != nil {
		attrs = append(attrs, slog.String("error", ex.err.Error()))
	}
	level := slog.LevelInfo
	if e.level == "ERROR" {
		level = slog.LevelError
	}
	slog.New(h).LogAttrs(t.Context(), level, "request", attrs...)
	return buf.String()
}

func accessEntries() map[string]accessEntry {
	plain := httptest.NewRequest("GET", "/users/42?x=1", nil)
	odd := httptest.NewRequest("PURGE", "/files/a%20b/%22q%22", nil)
	return map[string]accessEntry{
		"nats answer": {route: "get-user", r: plain, level: "INFO", edgeDur: 312 * time.Microsecond,
			ex: &exchange{status: 200, backend: "nats", reqID: "abc123", bytes: 52, nats: 279 * time.Microsecond, worker: 7 * time.Microsecond, upstream: -1}},
		"legacy fallback": {route: "get-user", r: plain, level: "INFO", edgeDur: 1500 * time.Millisecond,
			ex: &exchange{status: 200, backend: "legacy", reqID: "id-2", bytes: 1 << 20, nats: 300 * time.Millisecond, worker: -1, upstream: 12 * time.Millisecond,
				fellBack: true, err: errors.New("no reply within the route's timeout")}},
		"unrouted": {route: "", r: odd, level: "INFO", edgeDur: 0,
			ex: &exchange{status: 404, backend: "none", reqID: "x", nats: -1, worker: -1, upstream: -1, err: errors.New("no route matches this path")}},
		"hostile error text": {route: "shadow.route-1", r: odd, level: "ERROR", edgeDur: time.Second,
			ex: &exchange{status: 502, backend: "legacy", reqID: "r", nats: -1, worker: -1, upstream: 3 * time.Millisecond, shadowed: true,
				err: errors.New("upstream said \"no\"\n\tline two \\ \x00\x1b[31m é ✓ \u2028 end=1 \xff")}},
	}
}

// The access log's lines are the lines slog would write for the same
// request, in JSON and in text: the same fields, in the same order, with
// the same values, however hostile the strings in them.
func TestAccessLineMatchesSlog(t *testing.T) {
	for name, e := range accessEntries() {
		t.Run(name+"/json", func(t *testing.T) {
			ours := string(appendJSONLine(nil, e))
			theirs := slogAccessLine(t, false, e)
			var a, b map[string]any
			if err := json.Unmarshal([]byte(ours), &a); err != nil {
				t.Fatalf("our line is not JSON: %v\n%s", err, ours)
			}
			if err := json.Unmarshal([]byte(theirs), &b); err != nil {
				t.Fatal(err)
			}
			delete(a, "time")
			delete(b, "time")
			if ga, gb := strings.Join(keys(ours), ","), strings.Join(keys(theirs), ","); ga != gb {
				t.Errorf("field order\n ours   %s\n slog's %s", ga, gb)
			}
			for k, v := range b {
				if a[k] != v {
					t.Errorf("%s: ours %#v, slog's %#v", k, a[k], v)
				}
			}
			if len(a) != len(b) {
				t.Errorf("ours has %d fields, slog's %d:\n%s%s", len(a), len(b), ours, theirs)
			}
		})
		t.Run(name+"/text", func(t *testing.T) {
			ours := string(appendTextLine(nil, e))
			theirs := slogAccessLine(t, true, e)
			// Past the time, which differs, the lines are the same.
			_, o, _ := strings.Cut(ours, " level=")
			_, s, _ := strings.Cut(theirs, " level=")
			if o != s {
				t.Errorf("text line\n ours   %q\n slog's %q", o, s)
			}
			if !strings.HasPrefix(ours, "time=") || strings.Count(ours, "\n") != 1 {
				t.Errorf("not one text line: %q", ours)
			}
		})
	}
}

// keys lists a JSON object's keys in the order written.
func keys(line string) []string {
	dec := json.NewDecoder(strings.NewReader(line))
	var out []string
	if _, err := dec.Token(); err != nil {
		return nil
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return out
		}
		out = append(out, k.(string))
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return out
		}
	}
	return out
}

// A long error never makes a long line.
func TestAccessLineIsBounded(t *testing.T) {
	e := accessEntries()["nats answer"]
	e.ex.err = errors.New(strings.Repeat("é", 100_000))
	for _, line := range [][]byte{appendJSONLine(nil, e), appendTextLine(nil, e)} {
		if len(line) > 4<<10 {
			t.Errorf("a line of %d bytes", len(line))
		}
	}
}

// blockingWriter holds every Write until released, as a full pipe would.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// A sink that cannot keep up never holds a request: lines past the queue
// are dropped and counted, and what was queued is written at Close.
func TestAccessLogDropsWhenTheSinkStalls(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "dropped"})
	l := newAccessLog(w, false, dropped)
	e := accessEntries()["nats answer"]
	line := len(appendJSONLine(nil, e))
	n := logPending / line * 3
	done := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			l.write(e)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(notAHang * 5):
		t.Fatal("writing lines blocked on a stalled sink")
	}
	// The writer holds one batch (at most logPending bytes) in its
	// stalled Write; at most logPending more bytes wait; the rest is
	// dropped.
	got := testutil.ToFloat64(dropped)
	if kept := n - int(got); kept > 2*logPending/line || kept < logPending/line {
		t.Errorf("kept %d of %d lines of %d bytes with the sink stalled, want about %d", kept, n, line, logPending/line)
	}
	close(w.release)
	l.Close()
	written := strings.Count(w.buf.String(), "\n")
	if written+int(got) != n {
		t.Errorf("%d lines written and %v dropped, want %d in all", written, got, n)
	}
}

// Lines are written within the flush interval, not only when a batch
// fills, and every line queued before Close is written by it.
func TestAccessLogFlushes(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) })
	l := newAccessLog(w, false, prometheus.NewCounter(prometheus.CounterOpts{Name: "d"}))
	l.write(accessEntries()["nats answer"])
	deadline := time.Now().Add(notAHang)
	for {
		mu.Lock()
		n := buf.Len()
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a lone line was not written within the flush interval")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 100; i++ {
		l.write(accessEntries()["unrouted"])
	}
	l.Close()
	if got := strings.Count(buf.String(), "\n"); got != 101 {
		t.Errorf("%d lines after Close, want 101", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Writing a line allocates nothing, on the request's side or the
// writer's, once the buffers are warm.
func TestAccessLogAllocatesNothing(t *testing.T) {
	l := newAccessLog(io.Discard, false, prometheus.NewCounter(prometheus.CounterOpts{Name: "d"}))
	defer l.Close()
	e := accessEntries()["nats answer"]
	for i := 0; i < 1000; i++ {
		l.write(e)
	}
	if n := testing.AllocsPerRun(2000, func() { l.write(e) }); n > 0.01 {
		t.Errorf("%v allocations per line", n)
	}
}

func FuzzAccessLine(f *testing.F) {
	for _, s := range []string{"", "plain", "q\"uote", "back\\slash", "nl\nline", "\x00\x1f\x7f", "é✓", "\u2028\u2029", "\xff\xfe", "a=b c"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, route, errText string) {
		e := accessEntry{route: route, r: httptest.NewRequest("GET", "/x", nil), level: "INFO",
			ex: &exchange{status: 200, backend: "nats", reqID: "id", nats: -1, worker: -1, upstream: -1, err: errors.New(errText)}}
		line := appendJSONLine(nil, e)
		var v map[string]any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("not JSON: %v: %q", err, line)
		}
		if want := string([]rune(route)); v["route"] != want { // each invalid byte becomes U+FFFD, as in encoding/json
			t.Errorf("route %q came back as %q", want, v["route"])
		}
		if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
			t.Errorf("not one line: %q", line)
		}
		text := appendTextLine(nil, e)
		if bytes.Count(text, []byte("\n")) != 1 {
			t.Errorf("not one text line: %q", text)
		}
	})
}

// Requests write lines at once from many goroutines: every line arrives
// whole, none is lost or interleaved with another (run under -race). The
// lines all fit in the sink's room (logPending), so none may be dropped
// however late the writer goroutine runs: past that room lines are
// dropped by design, and a loaded machine would decide how many.
func TestAccessLogConcurrentWriters(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) })
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "d"})
	l := newAccessLog(w, false, dropped)
	entries := accessEntries()
	const writers = 8
	pair := len(appendJSONLine(nil, entries["nats answer"])) + len(appendJSONLine(nil, entries["hostile error text"]))
	each := logPending * 9 / 10 / (writers * pair)
	if each < 100 {
		t.Fatalf("only %d pairs of lines per writer fit in the sink's room", each)
	}
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				l.write(entries["nats answer"])
				l.write(entries["hostile error text"])
			}
		}()
	}
	wg.Wait()
	l.Close()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != writers*each*2 || testutil.ToFloat64(dropped) != 0 {
		t.Fatalf("%d lines, %v dropped; want %d, none dropped", len(lines), testutil.ToFloat64(dropped), writers*each*2)
	}
	for _, line := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("a line that is not whole JSON: %v: %q", err, line)
		}
	}
}
