package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requestRoute is a request-reply route onto the sample worker's users.*.get
// with a one-second timeout and the default breaker: the no-responders
// answers given after an outage until the workers have reconnected are not
// counted, so the route serves as soon as they are back.
const requestRoute = `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", pattern: request, timeout: 1s}
  - name: slow
    method: GET
    path: /slow
    nats: {subject: demo.slow, pattern: request, timeout: 3s}
`

// routeTimeout is get-user's timeout above.
const routeTimeout = time.Second

// baselineGoroutines reads go_goroutines once the client's idle
// connections are closed and the count has settled.
func baselineGoroutines(t *testing.T, client *http.Client, adminURL string) float64 {
	t.Helper()
	client.CloseIdleConnections()
	prev := -1.0
	var cur float64
	eventually(t, 10*time.Second, "go_goroutines to settle", func() bool {
		cur = scrape(t, client, adminURL, "go_goroutines")
		same := cur == prev
		prev = cur
		return same
	})
	return cur
}

// assertBackToBaseline waits for natsgate's goroutines and in-flight gauge
// to return to where they were before the fault.
func assertBackToBaseline(t *testing.T, client *http.Client, adminURL string, goroutines float64) {
	t.Helper()
	client.CloseIdleConnections()
	// A little slack: the runtime may keep a timer or GC worker around.
	const slack = 3
	var now float64
	if _, ok := within(10*time.Second, func() bool {
		client.CloseIdleConnections()
		now = scrape(t, client, adminURL, "go_goroutines")
		return now <= goroutines+slack
	}); !ok {
		t.Errorf("go_goroutines is %v, baseline %v (+%d): goroutines leaked", now, goroutines, slack)
	}
	if n := scrape(t, client, adminURL, "natsgate_inflight_requests"); n != 0 {
		t.Errorf("natsgate_inflight_requests is %v after the load ended, want 0", n)
	}
}

func getUser(client *http.Client, base string) func(c, i int) exchange {
	return func(c, i int) exchange {
		return do(client, "GET", fmt.Sprintf("%s/users/%d", base, 1+(c*97+i)%1000), "", nil)
	}
}

// Fault 1: the only nats-server is killed under steady load and restarted
// 3 s later.
func TestNATSKilledAndRestarted(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: requestRoute})
	client := newClient(t)
	eventually(t, 15*time.Second, "a 200 from get-user", func() bool {
		return do(client, "GET", g.URL+"/users/1", "", nil).status == 200
	})
	goroutines := baselineGoroutines(t, client, g.AdminURL)

	const clients = 4
	l := startLoad(clients, 100000, 30*time.Second, getUser(client, g.URL))
	defer l.Stop()
	eventually(t, 15*time.Second, "steady load", func() bool { return l.Count(200) >= 20 })

	killed := time.Now()
	ns.Kill()
	took, ok := within(2*time.Second, func() bool { return httpStatus(client, g.AdminURL+"/readyz") == 503 })
	if !ok {
		t.Fatalf("/readyz still not 503 %v after the kill", took)
	}
	notReady := time.Now()
	t.Logf("/readyz turned 503 %v after the kill", notReady.Sub(killed))

	// The outage lasts 3 s from the kill.
	time.Sleep(time.Until(killed.Add(3 * time.Second)))
	outageEnd := time.Now()
	ns.Start()
	if took, ok := within(2*time.Second, func() bool { return httpStatus(client, g.AdminURL+"/readyz") == 200 }); !ok {
		t.Errorf("/readyz not back to 200 within %v of the nats-server being ready", took)
	} else {
		t.Logf("/readyz back to 200 %v after the nats-server was ready", took)
	}
	// The sample worker reconnects on its own schedule (nats.go's default
	// reconnect wait of 2 s), so a 200 may take that much longer than the
	// gateway's own recovery; the no-responders answers in between open
	// no breaker.
	n200 := l.Count(200)
	if took, ok := within(2*time.Second+2*time.Second+time.Second, func() bool { return l.Count(200) > n200 }); !ok {
		snap := l.Snapshot()
		t.Errorf("no 200 within %v of the restart; the last answer: %v", took, snap[len(snap)-1])
	}
	results := l.Stop()

	if !g.Running() {
		t.Fatalf("natsgate exited (code %d) during the outage", g.code)
	}
	if strings.Count(g.Output(), `"msg":"natsgate serving"`) != 1 {
		t.Errorf("natsgate restarted itself")
	}

	var during, timeouts int
	for _, e := range results {
		switch {
		case e.err != nil:
			t.Errorf("no answer (hang or reset): %v", e)
			continue
		case e.took() > routeTimeout+time.Second:
			t.Errorf("answered after %v, more than the route timeout + 1s: %v", e.took(), e)
		}
		switch e.status {
		case 200, 503:
		case 504:
			timeouts++
			// Only a request already sent to the server when it died
			// waits for its timeout.
			if e.start.After(notReady) {
				t.Errorf("504 for a request sent while NATS was known to be down: %v", e)
			}
		default:
			t.Errorf("unexpected status: %v", e)
		}
		if e.start.After(notReady) && e.end.Before(outageEnd) {
			during++
			if e.status != 503 || e.retryAfter == "" {
				t.Errorf("during the outage want 503 with Retry-After, got %v (Retry-After %q)", e, e.retryAfter)
			}
		}
	}
	if during == 0 {
		t.Error("no request was answered during the outage: the load stalled")
	}
	if timeouts > clients {
		t.Errorf("%d requests timed out; at most the %d in flight at the kill may", timeouts, clients)
	}
	t.Logf("%d requests, %d during the outage, %d timed out (in flight at the kill)", len(results), during, timeouts)
	assertBackToBaseline(t, client, g.AdminURL, goroutines)
}

// Fault 4: one of two workers in the queue group is killed while requests
// are in flight.
func TestWorkerKilledMidFlight(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	// A micro endpoint answers one request at a time, so the survivor
	// alone must still clear every client's request within the timeout:
	// 4 clients × 150ms < 1s.
	victim := startWorker(t, ns.URL(), "victim", 150*time.Millisecond)
	startWorker(t, ns.URL(), "survivor", 150*time.Millisecond)
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: `
routes:
  - name: slow
    method: GET
    path: /slow
    nats: {subject: demo.slow, timeout: 1s}
`})
	client := newClient(t)
	const clients = 4
	l := startLoad(clients, 1000, 20*time.Second, func(c, i int) exchange {
		return do(client, "GET", g.URL+"/slow", "", nil)
	})
	defer l.Stop()
	eventually(t, 15*time.Second, "steady load", func() bool { return l.Count(200) >= 2*clients })

	killStart := time.Now()
	victim.Kill()
	killed := time.Now()
	// Run on until every request in flight at the kill has had its timeout.
	n := len(l.Snapshot())
	eventually(t, 15*time.Second, "load after the kill", func() bool {
		return time.Since(killed) > 1500*time.Millisecond && len(l.Snapshot()) > n+2*clients
	})
	results := l.Stop()

	// The nats-server learns of the death from the closed socket, an
	// instant after the process is gone (longer on a loaded CI machine); a
	// request routed in that instant is counted as in flight.
	const notice = 200 * time.Millisecond
	inflight, failed, after := 0, 0, 0
	for _, e := range results {
		atKill := e.start.Before(killed.Add(notice)) && e.end.After(killStart)
		if atKill {
			inflight++
		}
		if e.start.After(killed.Add(notice)) {
			after++
		}
		if e.status == 200 {
			continue
		}
		failed++
		if !atKill {
			t.Errorf("a request not in flight at the kill failed: %v", e)
		}
		if e.status != 504 {
			t.Errorf("a request lost with its worker should time out with 504: %v", e)
		}
		if e.took() > time.Second+time.Second {
			t.Errorf("answered after %v, more than the timeout + 1s: %v", e.took(), e)
		}
	}
	if after < clients {
		t.Errorf("only %d requests were sent after the kill", after)
	}
	t.Logf("%d requests; %d in flight at the kill, %d of them failed; %d sent after it, all 200", len(results), inflight, failed, after)
}

// Fault 8: SIGHUP with a broken file, then with a good one, under load.
func TestReloadBrokenAndGood(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", 700*time.Millisecond)
	cfg := gatewayConfig{Body: requestRoute}
	cfg.NATSURL = ns.URL()
	g := startGateway(t, cfg)
	client := newClient(t)
	eventually(t, 15*time.Second, "a 200 from get-user", func() bool {
		return do(client, "GET", g.URL+"/users/1", "", nil).status == 200
	})
	l := startLoad(4, 1000, 30*time.Second, func(c, i int) exchange {
		if c%2 == 0 {
			return do(client, "GET", g.URL+"/slow", "", nil) // 700ms each: in flight across each reload
		}
		return do(client, "GET", fmt.Sprintf("%s/users/%d", g.URL, 1+i%1000), "", nil)
	})
	defer l.Stop()
	eventually(t, 15*time.Second, "steady load", func() bool { return l.Count(200) >= 10 })

	// A broken file: an unparsable duration on line 4 of the routes.
	broken := g.render(gatewayConfig{NATSURL: ns.URL(), Body: requestRoute + `  - name: broken
    method: GET
    path: /broken
    nats: {subject: broken.get, timeout: 5 parsecs}
`})
	badLine := strings.Count(broken[:strings.Index(broken, "5 parsecs")], "\n") + 1
	g.WriteConfig(broken)
	g.Signal(syscall.SIGHUP)
	eventually(t, 15*time.Second, "natsgate_config_reloads_total{result=\"error\"} to be 1", func() bool {
		return scrape(t, client, g.AdminURL, "natsgate_config_reloads_total", `result="error"`) == 1
	})
	// The counter moves before the log line has passed natsgate's log
	// writer and the pipe: wait for the line.
	logLine := ""
	eventually(t, 15*time.Second, "the reload failure logged", func() bool {
		for _, line := range strings.Split(g.Output(), "\n") {
			if strings.Contains(line, "config reload failed") {
				logLine = line
			}
		}
		return logLine != ""
	})
	wantPos := fmt.Sprintf("%s:%d", g.ConfigFile, badLine)
	if !strings.Contains(logLine, wantPos) {
		t.Errorf("the reload error should name %s; the log says: %s", wantPos, logLine)
	}
	if e := do(client, "GET", g.URL+"/users/2", "", nil); e.status != 200 {
		t.Errorf("after a broken reload the old routes must keep serving: %v", e)
	}
	if e := do(client, "GET", g.URL+"/broken", "", nil); e.status != 404 {
		t.Errorf("a route from the broken file is being served: %v", e)
	}

	// A good file: a new route, and get-user moved to a new path.
	good := g.render(gatewayConfig{NATSURL: ns.URL(), Body: requestRoute + `  - name: get-user-v2
    method: GET
    path: /v2/users/{id}
    nats: {subject: "users.{id}.get", timeout: 1s}
`})
	g.WriteConfig(good)
	g.Signal(syscall.SIGHUP)
	eventually(t, 15*time.Second, "the new route to answer", func() bool {
		return do(client, "GET", g.URL+"/v2/users/3", "", nil).status == 200
	})
	if n := scrape(t, client, g.AdminURL, "natsgate_config_reloads_total", `result="ok"`); n != 1 {
		t.Errorf("natsgate_config_reloads_total{result=\"ok\"} = %v, want 1", n)
	}
	// Let the slow requests that straddled the reload finish.
	n := len(l.Snapshot())
	eventually(t, 15*time.Second, "load after the reload", func() bool { return len(l.Snapshot()) > n+4 })
	results := l.Stop()
	for _, e := range results {
		if e.status != 200 {
			t.Errorf("a request failed across the reloads: %v", e)
		}
	}
	t.Logf("%d requests across two reloads, all 200", len(results))
}

// Fault 1 with a fallback: while NATS is down, the route is answered by its
// legacy upstream instead of 503, and goes back to NATS after the restart.
func TestNATSKilledFallsBack(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"served_by":"legacy"}`)
	}))
	defer legacy.Close()
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: fmt.Sprintf(`
upstreams:
  legacy: {url: %q}
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 1s}
    upstream: legacy
    cutover: nats
    fallback: true
`, legacy.URL)})
	client := newClient(t)
	eventually(t, 15*time.Second, "get-user answered over NATS", func() bool {
		return do(client, "GET", g.URL+"/users/1", "", nil).backend == "nats"
	})
	l := startLoad(3, 100000, 30*time.Second, getUser(client, g.URL))
	defer l.Stop()
	eventually(t, 15*time.Second, "steady load", func() bool { return l.Count(200) >= 20 })

	ns.Kill()
	killed := time.Now()
	time.Sleep(3 * time.Second)
	outageEnd := time.Now()
	ns.Start()
	// Back on NATS after the worker's reconnect (up to 2 s).
	if took, ok := within(5*time.Second, func() bool {
		snap := l.Snapshot()
		return len(snap) > 0 && snap[len(snap)-1].backend == "nats" && snap[len(snap)-1].start.After(outageEnd)
	}); !ok {
		t.Errorf("not back on NATS %v after the restart", took)
	}
	results := l.Stop()
	legacyDuring := 0
	for _, e := range results {
		if e.status != 200 || e.err != nil {
			t.Errorf("with a fallback every request should be answered: %v", e)
		}
		if e.took() > time.Second+time.Second {
			t.Errorf("answered after %v, more than the route timeout + 1s: %v", e.took(), e)
		}
		if e.start.After(killed.Add(100*time.Millisecond)) && e.end.Before(outageEnd) {
			if e.backend != "legacy" {
				t.Errorf("during the outage want the legacy fallback, got backend %q: %v", e.backend, e)
			}
			legacyDuring++
		}
	}
	if legacyDuring == 0 {
		t.Error("no request was answered during the outage")
	}
	t.Logf("%d requests, %d answered by the fallback during the outage, none failed", len(results), legacyDuring)
}
