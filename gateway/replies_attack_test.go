package gateway

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// Every worker sees the reply subject of the requests it serves. A worker
// of one route (or any client that once saw a reply subject) must not be
// able to answer another route's request by guessing its reply subject
// from the ones it has seen: the reply tokens may not follow each other.
func TestReplySubjectsCannotBeGuessedFromOneSeen(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - {name: hostile, method: GET, path: /hostile, nats: {subject: hostile, timeout: 2s}}
  - {name: honest, method: GET, path: /honest, nats: {subject: honest, timeout: 5s}}
`)
	worker := natstest.Connect(t, ns)
	forgers := natstest.Connect(t, ns)
	// The hostile worker answers its own request, then keeps answering
	// the reply subjects it can work out from it (for a bounded while),
	// so that a request that comes next is waiting when a guess lands.
	respond(t, worker, "hostile", func(m *nats.Msg) *nats.Msg {
		cut := strings.LastIndexByte(m.Reply, '.')
		if cut < 0 {
			return &nats.Msg{Data: []byte("no token")}
		}
		prefix, token := m.Reply[:cut+1], m.Reply[cut+1:]
		var guesses []string
		if id, err := strconv.ParseUint(token, 36, 64); err == nil {
			for next := id + 1; next <= id+16; next++ {
				guesses = append(guesses, prefix+strconv.FormatUint(next, 36))
			}
		}
		// Whatever the token's form, its neighbours in the last digit
		// (lower case only: an upper-case spelling of the token itself is
		// the same number, and the worker may answer its own request).
		for _, c := range "0123456789abcdefghijklmnopqrstuvwxyz" {
			if guess := token[:len(token)-1] + string(c); guess != token {
				guesses = append(guesses, prefix+guess)
			}
		}
		go func() {
			for round := 0; round < 50; round++ {
				for _, g := range guesses {
					_ = forgers.Publish(g, []byte("forged"))
				}
				_ = forgers.Flush()
				time.Sleep(20 * time.Millisecond)
			}
		}()
		return &nats.Msg{Data: []byte("hostile")}
	})
	respond(t, worker, "honest", func(m *nats.Msg) *nats.Msg {
		time.Sleep(300 * time.Millisecond) // the forgery, if any, comes first
		return &nats.Msg{Data: []byte("honest")}
	})
	for i := 0; i < 3; i++ {
		if resp, body := do(t, "GET", gw.URL+"/hostile", nil, nil); resp.StatusCode != 200 || body != "hostile" {
			t.Fatalf("hostile route: %d %q", resp.StatusCode, body)
		}
		if resp, body := do(t, "GET", gw.URL+"/honest", nil, nil); resp.StatusCode != 200 || body != "honest" {
			t.Fatalf("round %d: the honest route's client got %d %q: another route's worker answered its request by guessing the reply subject",
				i, resp.StatusCode, body)
		}
	}
}
