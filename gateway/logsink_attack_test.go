package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// TestEventLinesAreNotCrowdedOutByAccessLines: when stderr stalls under
// load, the access lines of the requests served meanwhile fill the room
// the sink has. An event line logged then (a reload that failed, a
// breaker that opened, an upstream that went away) is what an operator
// reads first after the outage, and it must not be dropped because a
// thousand access lines came first: access lines may use only part of
// the room, so there is always some left for event lines. The sink is a
// real pipe nobody reads until the end.
func TestEventLinesAreNotCrowdedOutByAccessLines(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sink := NewLogSink(w)
	access := []byte(`{"level":"INFO","msg":"request","route":"get-user","path":"/users/` + strings.Repeat("7", 200) + `"}` + "\n")
	// Access lines until the sink drops them: the pipe and the room are full.
	for i := 0; sink.Dropped() == 0; i++ {
		if i > 4*logPending/len(access) {
			t.Fatal("the sink took four times its room of access lines without a drop")
		}
		sink.queue(access, false)
	}
	for range 100 { // more load, all dropped
		sink.queue(access, false)
	}
	log := NewLogger(routes.LogConfig{Level: "info", Format: "json"}, sink, "")
	log.Error("config reload failed; the old routes keep serving", "file", "natsgate.yaml",
		"error", strings.Repeat("natsgate.yaml:12: route \"get-user\": upstream: no upstream named \"nope\"\n", 5))
	log.Warn("circuit breaker state changed", "breaker", "get-user/nats", "from", "closed", "to", "open")

	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(r); got <- b }() // the reader comes back
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sink.Close(ctx)
	w.Close()
	var out []byte
	select {
	case out = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the pipe never ended")
	}
	for _, want := range []string{"config reload failed", "circuit breaker state changed"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("the event line %q was dropped behind %d access lines (%d dropped)", want, bytes.Count(out, []byte(`"msg":"request"`)), sink.Dropped())
		}
	}
	if !bytes.HasSuffix(out, newline) || bytes.Count(out, newline) != bytes.Count(out, []byte("}\n")) {
		t.Error("not every line is a whole JSON line")
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("Close waited out its deadline on a pipe that was being read")
	}
}
