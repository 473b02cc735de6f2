package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// accessLog writes one line per request, off the request's path. A request
// encodes its line into a pooled buffer, without reflection and without
// allocating, and appends it to the lines waiting; one background writer
// takes them all at once and writes them in one call, every
// accessFlushEvery or as soon as accessBatch bytes wait. A request never
// waits for the sink, nor wakes the writer for its own line: when the sink
// cannot keep up and accessPending bytes wait, a line is dropped and
// counted (natsgate_log_dropped_total), never queued without bound.
//
// The lines have the fields and the format (JSON or text) of the slog
// handler that writes everything else, so one log reads as one.
type accessLog struct {
	out     io.Writer
	text    bool
	dropped prometheus.Counter

	mu      sync.Mutex
	pending []byte        // lines waiting for the writer
	gone    bool          // Close gave up on a blocked writer: lines are dropped
	full    chan struct{} // wakes the writer once accessBatch bytes wait
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

const (
	accessBatch      = 64 << 10 // bytes waiting that wake the writer early
	accessPending    = 1 << 20  // bytes waiting at most; past it lines are dropped
	accessFlushEvery = 100 * time.Millisecond
	accessLineKeep   = 4 << 10     // a line buffer that grew past this is not pooled
	accessCloseGrace = time.Second // Close's wait for the sink when its deadline has passed
)

// lineBuf is one encoded line.
type lineBuf struct{ b []byte }

var lineBufs = sync.Pool{New: func() any { return &lineBuf{b: make([]byte, 0, 512)} }}

// newAccessLog starts the writer. Close flushes and stops it.
func newAccessLog(out io.Writer, text bool, dropped prometheus.Counter) *accessLog {
	l := &accessLog{out: out, text: text, dropped: dropped, pending: make([]byte, 0, accessBatch),
		full: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

// accessEntry is what one line says.
type accessEntry struct {
	route   string
	r       *http.Request
	ex      *exchange
	level   string
	edgeDur time.Duration
}

// write encodes the line and queues it; it never blocks on the sink.
func (l *accessLog) write(e accessEntry) {
	lb := lineBufs.Get().(*lineBuf)
	if l.text {
		lb.b = appendTextLine(lb.b[:0], e)
	} else {
		lb.b = appendJSONLine(lb.b[:0], e)
	}
	size := len(lb.b)
	l.mu.Lock()
	n := len(l.pending)
	kept := n+size <= accessPending && !l.gone
	if kept {
		l.pending = append(l.pending, lb.b...)
	}
	l.mu.Unlock()
	if cap(lb.b) <= accessLineKeep {
		lineBufs.Put(lb) // lb is another request's from here on
	}
	switch {
	case !kept:
		l.dropped.Inc()
	case n < accessBatch && n+size >= accessBatch:
		select {
		case l.full <- struct{}{}:
		default:
		}
	}
}

// run is the writer: it takes every waiting line and writes them in one
// call, each accessFlushEvery, when accessBatch bytes wait, and at Close.
func (l *accessLog) run() {
	defer close(l.done)
	spare := make([]byte, 0, accessBatch)
	tick := time.NewTicker(accessFlushEvery)
	defer tick.Stop()
	flush := func() {
		l.mu.Lock()
		batch := l.pending
		l.pending = spare[:0]
		l.mu.Unlock()
		if len(batch) > 0 {
			// A sink that refused the batch, or took only part of it
			// (ENOSPC, a closed pipe), lost every line that did not
			// reach it whole: they are dropped, and counted.
			if n, err := l.out.Write(batch); err != nil {
				l.dropped.Add(float64(bytes.Count(batch[min(max(n, 0), len(batch)):], newline)))
			}
		}
		spare = batch
	}
	for {
		select {
		case <-tick.C:
			flush()
		case <-l.full:
			flush()
		case <-l.stop:
			flush()
			return
		}
	}
}

var newline = []byte{'\n'}

// Close writes what is waiting and stops the writer. Lines written after
// Close wait for ever: past accessPending they are dropped and counted.
func (l *accessLog) Close() { l.closeWithin(context.Background()) }

// closeWithin is Close bounded by ctx: a sink that blocks for ever (a FIFO
// nobody reads, a hung pipe) must not hold up a shutdown past its
// deadline. When ctx ends first, the lines still waiting are dropped and
// counted, as is every line written from then on; the writer is left in
// its blocked Write, and the lines of that batch are counted too if the
// Write ever fails. A ctx already ended (a shutdown whose grace the
// requests used up) still gives a sink that works accessCloseGrace to
// take the last lines.
func (l *accessLog) closeWithin(ctx context.Context) {
	l.once.Do(func() { close(l.stop) })
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), accessCloseGrace)
		defer cancel()
	}
	select {
	case <-l.done:
		return
	case <-ctx.Done():
	}
	l.mu.Lock()
	l.gone = true
	lost := bytes.Count(l.pending, newline)
	l.pending = l.pending[:0]
	l.mu.Unlock()
	l.dropped.Add(float64(lost))
}

// The line, field by field. The order and names are those the slog
// handler gave them: time, level, msg, route, method, path, status,
// backend, request_id, bytes, edge_ms, then the optional ones.

func appendJSONLine(b []byte, e accessEntry) []byte {
	ex := e.ex
	b = append(b, `{"time":"`...)
	b = time.Now().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"`...)
	b = append(b, e.level...)
	b = append(b, `","msg":"request","route":`...)
	b = appendJSONString(b, e.route)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.r.Method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.r.URL.EscapedPath())
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(ex.status), 10)
	b = append(b, `,"backend":`...)
	b = appendJSONString(b, ex.backend)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, ex.reqID)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, ex.bytes, 10)
	b = append(b, `,"edge_ms":`...)
	b = appendMillis(b, e.edgeDur)
	if ex.nats >= 0 {
		b = append(b, `,"nats_ms":`...)
		b = appendMillis(b, ex.nats)
	}
	if ex.worker >= 0 {
		b = append(b, `,"worker_ms":`...)
		b = appendMillis(b, ex.worker)
	}
	if ex.upstream >= 0 {
		b = append(b, `,"upstream_ms":`...)
		b = appendMillis(b, ex.upstream)
	}
	if ex.fellBack {
		b = append(b, `,"fallback":true`...)
	}
	if ex.shadowed {
		b = append(b, `,"shadowed":true`...)
	}
	if ex.err != nil {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, clipLogValue(ex.err.Error()))
	}
	return append(b, "}\n"...)
}

func appendTextLine(b []byte, e accessEntry) []byte {
	ex := e.ex
	b = append(b, "time="...)
	b = time.Now().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, " level="...)
	b = append(b, e.level...)
	b = append(b, " msg=request route="...)
	b = appendTextString(b, e.route)
	b = append(b, " method="...)
	b = appendTextString(b, e.r.Method)
	b = append(b, " path="...)
	b = appendTextString(b, e.r.URL.EscapedPath())
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(ex.status), 10)
	b = append(b, " backend="...)
	b = appendTextString(b, ex.backend)
	b = append(b, " request_id="...)
	b = appendTextString(b, ex.reqID)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, ex.bytes, 10)
	b = append(b, " edge_ms="...)
	b = appendMillis(b, e.edgeDur)
	if ex.nats >= 0 {
		b = append(b, " nats_ms="...)
		b = appendMillis(b, ex.nats)
	}
	if ex.worker >= 0 {
		b = append(b, " worker_ms="...)
		b = appendMillis(b, ex.worker)
	}
	if ex.upstream >= 0 {
		b = append(b, " upstream_ms="...)
		b = appendMillis(b, ex.upstream)
	}
	if ex.fellBack {
		b = append(b, " fallback=true"...)
	}
	if ex.shadowed {
		b = append(b, " shadowed=true"...)
	}
	if ex.err != nil {
		b = append(b, " error="...)
		b = appendTextString(b, clipLogValue(ex.err.Error()))
	}
	return append(b, '\n')
}

// appendMillis writes d in milliseconds with microsecond precision, as
// the log has always shown hops.
func appendMillis(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', -1, 64)
}

// logValueMax bounds a value in an access line, so that no line grows
// past a few KiB whatever an error says.
const logValueMax = 1024

func clipLogValue(s string) string {
	if len(s) <= logValueMax {
		return s
	}
	cut := logValueMax
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendTextString writes s bare when it needs no quoting, as slog's text
// handler does, else quoted.
func appendTextString(b []byte, s string) []byte {
	if s == "" {
		return append(b, `""`...)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == '=' || c == '"' || c >= utf8.RuneSelf || c == 0x7f {
			return strconv.AppendQuote(b, s)
		}
	}
	return append(b, s...)
}
