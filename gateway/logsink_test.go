package gateway

import (
	"context"
	"io"
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

// lockedBuffer is a sink a test reads while the sink's writer writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

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
	out := &lockedBuffer{}
	go func() { _, _ = io.Copy(out, pr) }() // the sink drains from here on

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
	gw, err := New(context.Background(), Options{Table: table, Registry: prometheus.NewRegistry(),
		Logger: log, AccessLog: sink, EventLog: sink})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(gw.metrics.LogDropped); got < float64(before) {
		t.Errorf("natsgate_log_dropped_total is %v, want at least the %d event lines dropped before the gateway started", got, before)
	}
	worker := natstest.Connect(t, ns)
	respond(t, worker, "users.*.get", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("ok")} })
	if resp, body := do(t, "GET", "http://"+gw.Addr()+"/users/7", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("GET /users/7: %d %s", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	log.Info("stopped") // after Shutdown, as natsgate serve logs it
	sink.Close(ctx)
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
