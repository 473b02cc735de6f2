package e2e

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Fault 6: SIGTERM under load.
func TestSIGTERMUnderLoad(t *testing.T) {
	ns := startNATS(t, natsOptions{jetstream: true})
	startWorker(t, ns.URL(), "w1", 500*time.Millisecond)
	startWorker(t, ns.URL(), "w2", 500*time.Millisecond)
	natsExtra, body := ordersConfig(1)
	const grace = 10 * time.Second
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: natsExtra, HTTP: "  shutdown_grace: 10s", Body: body})
	client := newClient(t)

	// Two kinds of load: slow requests (500ms each, so always some in
	// flight) and JetStream POSTs with distinct keys.
	slow := startLoad(2, 100, 30*time.Second, func(c, i int) exchange {
		return do(client, "GET", g.URL+"/slow", "", nil)
	})
	defer slow.Stop()
	var seq sync.Map
	orders := startLoad(2, 100000, 30*time.Second, func(c, i int) exchange {
		key := fmt.Sprintf("order-%d-%d", c, i)
		seq.Store(key, true)
		return postOrder(client, g.URL, key)
	})
	defer orders.Stop()
	eventually(t, 10*time.Second, "steady load", func() bool { return slow.Count(200) >= 2 && orders.Count(202) >= 20 })

	signalled := time.Now()
	g.Signal(syscall.SIGTERM)
	if took, ok := within(2*time.Second, func() bool { return httpStatus(client, g.AdminURL+"/readyz") == 503 }); !ok {
		t.Errorf("/readyz not 503 within %v of SIGTERM", took)
	}
	notReady := time.Now()
	var refusedAt time.Time
	if took, ok := within(2*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", g.Addr, time.Second)
		if err == nil {
			c.Close()
			return false
		}
		return isRefused(err)
	}); !ok {
		t.Errorf("new connections still accepted %v after SIGTERM", took)
	}
	refusedAt = time.Now()

	code, exited := g.Wait(grace + 2*time.Second)
	exitedAt := time.Now()
	if !exited {
		t.Fatalf("natsgate still running %v after SIGTERM (grace %v)", time.Since(signalled), grace)
	}
	if code != 0 {
		t.Errorf("natsgate exited with %d after SIGTERM, want 0", code)
	}
	if d := exitedAt.Sub(signalled); d > grace {
		t.Errorf("natsgate took %v to exit, more than the grace period %v", d, grace)
	}
	slowResults, ordersResults := slow.Stop(), orders.Stop()

	// Requests the gateway had accepted before the signal complete. A
	// request sent in the last instant before the signal may not yet have
	// been read by the server; it is refused like a new one, so only
	// requests older than that margin must succeed.
	const margin = 100 * time.Millisecond
	accepted := signalled.Add(-margin)
	stillRunning := 0
	for _, e := range append(slowResults, ordersResults...) {
		switch {
		case e.err == nil && (e.status == 200 || e.status == 202):
			if e.start.Before(signalled) && e.end.After(refusedAt) {
				stillRunning++
			}
		case e.err != nil && e.start.After(accepted):
			// Refused or closed before being read: the client may retry.
		default:
			t.Errorf("a request failed during shutdown: %v", e)
		}
	}
	if stillRunning == 0 {
		t.Errorf("no accepted request was still running when /readyz and the listener had turned away new traffic")
	}
	t.Logf("SIGTERM: /readyz 503 after %v, refused after %v, exit after %v; %d accepted requests finished after that",
		notReady.Sub(signalled), refusedAt.Sub(signalled), exitedAt.Sub(signalled), stillRunning)

	// Every 202 is in the stream, exactly once.
	acked := map[string]bool{}
	for _, e := range ordersResults {
		if e.status == 202 {
			acked[e.key] = true
		}
	}
	assertStoredOnce(t, acked, streamMsgIDs(t, ns.URL(), "ORDERS"))

	// The NATS connection was drained and closed, not dropped.
	if out := g.Output(); strings.Contains(out, "NATS error") || strings.Contains(out, "NATS disconnected") || strings.Contains(out, "panic") {
		t.Errorf("shutdown logged an error:\n%s", tail(out, 2000))
	}
}

// Fault 7: NATS down for longer than the client would try by default.
func TestNATSDownPastReconnects(t *testing.T) {
	t.Run("bounded reconnects exit non-zero", func(t *testing.T) {
		ns := startNATS(t, natsOptions{})
		g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: "  max_reconnects: 3\n  reconnect_wait: 100ms", Body: requestRoute})
		ns.Kill()
		killed := time.Now()
		code, exited := g.Wait(15 * time.Second)
		if !exited {
			t.Fatalf("natsgate still running 15s after NATS went away with max_reconnects: 3")
		}
		if code == 0 {
			t.Errorf("natsgate exited 0 after giving up on NATS; a supervisor would not restart it")
		}
		out := g.Output()
		if !strings.Contains(out, "max_reconnects") {
			t.Errorf("the exit does not say why:\n%s", tail(out, 2000))
		}
		assertNoStackTrace(t, out)
		t.Logf("exited with %d after %v", code, time.Since(killed).Round(time.Millisecond))
	})

	t.Run("default reconnects forever", func(t *testing.T) {
		ns := startNATS(t, natsOptions{})
		startWorker(t, ns.URL(), "w1", time.Second)
		// 20ms between attempts (plus up to 50ms jitter): a 5 s outage is
		// more attempts than nats.go's default limit of 60.
		g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: "  reconnect_wait: 20ms", Body: requestRoute})
		client := newClient(t)
		eventually(t, 15*time.Second, "a 200", func() bool { return do(client, "GET", g.URL+"/users/1", "", nil).status == 200 })
		ns.Kill()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			e := do(client, "GET", g.URL+"/users/1", "", nil)
			// natsgate answers in under a millisecond (its access log
			// says so); the bound only proves it is not waiting on NATS.
			if e.status != 503 || e.took() > routeTimeout+time.Second {
				t.Fatalf("while NATS is down want a 503 within the route timeout + 1s, got %v", e)
			}
			if !g.Running() {
				t.Fatalf("natsgate exited with %d while NATS was down; the default is to keep trying", g.code)
			}
			time.Sleep(100 * time.Millisecond)
		}
		ns.Start()
		if took, ok := within(2*time.Second, func() bool { return httpStatus(client, g.AdminURL+"/readyz") == 200 }); !ok {
			t.Fatalf("/readyz not 200 within %v of NATS coming back", took)
		}
		// The worker's own reconnect wait is nats.go's default 2 s.
		eventually(t, 15*time.Second, "a 200 after NATS came back", func() bool {
			return do(client, "GET", g.URL+"/users/1", "", nil).status == 200
		})
	})
}

// assertNoStackTrace fails if out holds a Go panic or goroutine dump.
func assertNoStackTrace(t *testing.T, out string) {
	t.Helper()
	for _, s := range []string{"panic:", "goroutine ", ".go:"} {
		if strings.Contains(out, s) {
			t.Errorf("output holds a stack trace (%q):\n%s", s, tail(out, 3000))
			return
		}
	}
}

// Fault 7, another way to lose NATS for good: the server comes back with
// natsgate's credential revoked. natsgate does not sit on a closed
// connection answering 503: it exits non-zero, saying why.
func TestCredentialRevokedOnReconnect(t *testing.T) {
	ns := startNATS(t, natsOptions{extra: "authorization { token: \"first-t0ken\" }\n"})
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: "  token: first-t0ken\n  reconnect_wait: 100ms", Body: publishRoute})
	ns.Kill()
	if err := os.WriteFile(ns.conf, []byte(strings.Replace(mustRead(t, ns.conf), "first-t0ken", "second-t0ken", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	ns.Start()
	code, exited := g.Wait(30 * time.Second)
	if !exited {
		t.Fatalf("natsgate still running 30s after its credential was revoked; /readyz %d", httpStatus(newClient(t), g.AdminURL+"/readyz"))
	}
	if code == 0 {
		t.Errorf("natsgate exited 0")
	}
	// The error says why, and the stop that follows it (stopping,
	// draining, stopped) is the last thing logged.
	out := g.Output()
	why := -1
	for i, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "cannot go on") && strings.Contains(line, "credentials") {
			why = i
		}
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if why < 0 || !strings.Contains(lines[len(lines)-1], `"msg":"stopped"`) {
		t.Errorf("the log should say the server refused the credentials, then stop:\n%s", tail(out, 2000))
	}
	assertNoStackTrace(t, out)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
