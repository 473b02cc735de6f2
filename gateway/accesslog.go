package gateway

import (
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
// allocating, and queues it on a LogSink without waking its writer, which
// writes the lines in batches (see LogSink). A request never waits for
// the sink: when it cannot keep up, a line is dropped and counted
// (natsgate_log_dropped_total), never queued without bound.
//
// The lines have the fields and the format (JSON or text) of the slog
// handler that writes everything else, so one log reads as one.
type accessLog struct {
	sink *LogSink
	own  bool // the sink is the access log's alone, and closed with it
	text bool
}

// accessLineKeep is the size past which a line buffer is not pooled.
const accessLineKeep = 4 << 10

// lineBuf is one encoded line.
type lineBuf struct{ b []byte }

var lineBufs = sync.Pool{New: func() any { return &lineBuf{b: make([]byte, 0, 512)} }}

// newAccessLog writes the lines to out: through out itself when it is a
// LogSink (the event log's, when both go to one place), else through a
// LogSink of the access log's own. Drops are counted in dropped.
func newAccessLog(out io.Writer, text bool, dropped prometheus.Counter) *accessLog {
	l := &accessLog{text: text}
	if sink, ok := out.(*LogSink); ok {
		l.sink = sink
	} else {
		l.sink, l.own = NewLogSink(out), true
	}
	l.sink.countIn(dropped)
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
	l.sink.queue(lb.b, false)
	if cap(lb.b) <= accessLineKeep {
		lineBufs.Put(lb) // lb is another request's from here on
	}
}

// Close writes what is waiting and stops the writer of a sink of the
// access log's own; a shared sink is its maker's to close.
func (l *accessLog) Close() { l.closeWithin(context.Background()) }

// closeWithin is Close bounded by ctx (see LogSink.Close).
func (l *accessLog) closeWithin(ctx context.Context) {
	if l.own {
		l.sink.Close(ctx)
	}
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
