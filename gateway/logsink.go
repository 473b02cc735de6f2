package gateway

import (
	"bytes"
	"context"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LogSink is a log's destination that never makes its caller wait: a
// line written to it is copied into a bounded buffer, and one background
// writer takes every waiting line and writes them to the real sink in one
// call. A sink that stalls (a pipe or FIFO nobody reads, a log shipper
// that hung, a container runtime that stopped reading stderr) then costs
// lines, dropped and counted in natsgate_log_dropped_total, and never a
// request, a breaker or a shutdown: natsgate logs on the request path (an
// upstream that failed, a breaker that opened) and on the way out
// ("stopping"), and a blocking write there would hold them all.
//
// The event log (slog) and the access log share one LogSink when they
// share a destination, so that their lines never interleave inside a
// batch. Event lines are written at once (the writer is woken for each);
// access lines wait for the next batch, at most logFlushEvery, or until
// logBatch bytes wait.
//
// Event lines have logEventRoom more than access lines to wait in: when
// a stalled sink fills under load, the event lines logged meanwhile (a
// reload that failed, a breaker that opened) are what an operator reads
// first afterwards, and a flood of access lines queued before them must
// not crowd them out.
type LogSink struct {
	out io.Writer

	mu      sync.Mutex
	pending []byte             // lines waiting for the writer
	gone    bool               // Close has run: lines are dropped
	dropped uint64             // lines dropped since the sink was made
	counter prometheus.Counter // where drops are counted too, once set
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

const (
	logBatch      = 64 << 10  // bytes waiting that wake the writer early
	logPending    = 1 << 20   // bytes waiting at most; past it access lines are dropped
	logEventRoom  = 256 << 10 // room past logPending that only event lines may use
	logFlushEvery = 100 * time.Millisecond
	logCloseGrace = time.Second // Close's wait for the sink when its deadline has passed
)

// NewLogSink starts the writer of out. Close flushes and stops it.
func NewLogSink(out io.Writer) *LogSink {
	s := &LogSink{out: out, pending: make([]byte, 0, logBatch),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

// Write queues p, one or more whole lines, to be written at once, and
// never blocks on the sink: when it cannot keep up, p is dropped and
// counted. It always reports p written, as the line is the sink's from
// then on (slog's handlers write one record per call).
func (s *LogSink) Write(p []byte) (int, error) {
	s.queue(p, true)
	return len(p), nil
}

// queue appends p to the lines waiting, or drops and counts it. prompt
// (an event line) wakes the writer for it and may use logEventRoom past
// logPending; otherwise (an access line) it waits for the next batch and
// is dropped past logPending.
func (s *LogSink) queue(p []byte, prompt bool) {
	room := logPending
	if prompt {
		room += logEventRoom
	}
	s.mu.Lock()
	n := len(s.pending)
	kept := n+len(p) <= room && !s.gone
	if kept {
		s.pending = append(s.pending, p...)
	}
	s.mu.Unlock()
	switch {
	case !kept:
		s.drop(bytes.Count(p, newline))
	case prompt || n < logBatch && n+len(p) >= logBatch:
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// countIn counts the lines dropped so far, and every one dropped from
// now on, in c (natsgate_log_dropped_total): a sink made before the
// metrics, as the event log's is, still reports what it lost.
func (s *LogSink) countIn(c prometheus.Counter) {
	s.mu.Lock()
	if s.counter != nil {
		s.mu.Unlock()
		return
	}
	s.counter = c
	before := s.dropped
	s.mu.Unlock()
	c.Add(float64(before))
}

// drop counts n lines lost, once: in the sink's own count and, when it is
// set, in the counter (a drop before countIn is in what it adds).
func (s *LogSink) drop(n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.dropped += uint64(n)
	c := s.counter
	s.mu.Unlock()
	if c != nil {
		c.Add(float64(n))
	}
}

// Dropped is the number of lines dropped since the sink was made.
func (s *LogSink) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// run is the writer: it takes every waiting line and writes them in one
// call, each logFlushEvery, when woken, and at Close.
func (s *LogSink) run() {
	defer close(s.done)
	spare := make([]byte, 0, logBatch)
	tick := time.NewTicker(logFlushEvery)
	defer tick.Stop()
	// cut is set when the sink took part of a line and then failed (a
	// disk that filled mid-line): the next write ends that line first, so
	// that the first line written once the sink has room again stands on
	// its own instead of glued to the cut one, where a reader loses it.
	cut := false
	flush := func() {
		s.mu.Lock()
		batch := s.pending
		s.pending = spare[:0]
		s.mu.Unlock()
		spare = batch
		if len(batch) == 0 {
			return
		}
		if cut {
			if _, err := s.out.Write(newline); err != nil {
				s.drop(bytes.Count(batch, newline))
				return
			}
			cut = false
		}
		// A sink that refused the batch, or took only part of it
		// (ENOSPC, a closed pipe), lost every line that did not reach it
		// whole: they are dropped, and counted.
		if n, err := s.out.Write(batch); err != nil {
			n = min(max(n, 0), len(batch))
			s.drop(bytes.Count(batch[n:], newline))
			cut = n > 0 && batch[n-1] != '\n'
		}
	}
	for {
		select {
		case <-tick.C:
			flush()
		case <-s.wake:
			flush()
		case <-s.stop:
			flush()
			return
		}
	}
}

var newline = []byte{'\n'}

// Close writes what is waiting and stops the writer, waiting for the sink
// at most until ctx ends: a sink that blocks for ever (a FIFO nobody
// reads, a hung pipe) must not hold up a shutdown past its deadline. When
// ctx ends first, the lines still waiting are dropped and counted, as is
// every line written from then on; the writer is left in its blocked
// Write, and the lines of that batch are counted too if the Write ever
// fails. A ctx already ended (a shutdown whose grace the requests used
// up) still gives a sink that works logCloseGrace to take the last lines.
// Lines written after Close are dropped and counted.
func (s *LogSink) Close(ctx context.Context) {
	s.once.Do(func() { close(s.stop) })
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), logCloseGrace)
		defer cancel()
	}
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	s.mu.Lock()
	s.gone = true
	lost := bytes.Count(s.pending, newline)
	s.pending = s.pending[:0]
	s.mu.Unlock()
	s.drop(lost)
}
