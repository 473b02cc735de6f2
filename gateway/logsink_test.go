package gateway

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The event log and the access log share one LogSink when they go to one
// place, as natsgate serve has them on stderr: the event lines a stalled
// sink lost before the gateway existed are counted once it does, the
// Server's Shutdown leaves the shared sink open for the lines logged
// after it ("stopped"), and the sink's Close writes them.
func TestSharedLogSinkOutlivesTheServerAndCountsEveryDrop(t *testing.T) {
	// A sink that blocks until released: the event lines written before
	// the gateway exists fill the room and are dropped.
	pr, pw := io.Pipe()
	sink := NewLogSink(pw)
	log := NewLogger(routes.LogConfig{Level: "info", Format: "json"}, sink, "")
	long := strings.Repeat("x", 64<<10)
	for range 40 { // 2.5 MiB: past the 1 MiB waiting and the batch held in the blocked write
		log.Warn("an upstream failed", "detail", long)
	}
	before := sink.Dropped()
	if before == 0 {
		t.Fatal("no event line dropped with the sink blocked: the test proves nothing")
	}
	out := &syncBuffer{}
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(out, pr); close(copied) }() // the sink drains from here on

	gw, _ := startGatewayLogs(t, Options{Logger: log, AccessLog: sink, EventLog: sink})
	if got := testutil.ToFloat64(gw.metrics.LogDropped); got < float64(before) {
		t.Errorf("natsgate_log_dropped_total is %v, want at least the %d event lines dropped before the gateway started", got, before)
	}
	if resp, body := do(t, "GET", gw.URL+"/users/7", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("GET /users/7: %d %s", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	log.Info("stopped") // after Shutdown, as natsgate serve logs it
	sink.Close(ctx)
	// The pipe hands the last bytes to the copy before they are in out:
	// end the pipe and wait for the copy to finish.
	pw.Close()
	<-copied
	got := out.String()
	for _, want := range []string{`"msg":"request","route":"get-user"`, `"msg":"stopped"`} {
		if !strings.Contains(got, want) {
			t.Errorf("the sink got no line with %s after Close:\n%s", want, tail(got, 2000))
		}
	}
	if lines := strings.Count(got, "\n"); lines == 0 || strings.Count(got, "\n") != strings.Count(got, "}\n") {
		t.Errorf("%d lines, not all whole JSON lines", lines)
	}
	dropped := sink.Dropped()
	log.Info("after close")
	if sink.Dropped() != dropped+1 || strings.Contains(out.String(), "after close") {
		t.Error("a line written after Close reached the sink or was not counted as dropped")
	}
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
