package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A worker that answers every request twice, and one request in five only
// after the route's timeout, never crosses answers between clients: each
// 200 carries the client's own X-Request-Id and the worker's echo of it.
func TestDuplicateAndLateRepliesNeverCrossClients(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, err = nc.QueueSubscribe("echo.*", "q", func(m *nats.Msg) {
		id := m.Header.Get("X-Request-Id")
		n := m.Subject[len("echo."):]
		go func() {
			if strings.HasSuffix(n, "0") || strings.HasSuffix(n, "5") {
				time.Sleep(400 * time.Millisecond) // past the 200ms timeout
			}
			_ = m.Respond([]byte(id))
			time.Sleep(time.Millisecond)
			_ = m.Respond([]byte("second answer to " + id))
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: `
routes:
  - name: echo
    method: GET
    path: /echo/{n}
    nats: {subject: "echo.{n}", timeout: 200ms}
    breaker: {min_requests: 1000000, failure_ratio: 1, window: 1s, open_for: 1s}
`})
	client := newClient(t)
	var crossed atomic.Int64
	l := startLoad(16, 150, 40*time.Second, func(c, i int) exchange {
		id := fmt.Sprintf("client-%d-req-%d", c, i)
		e := do(client, "GET", fmt.Sprintf("%s/echo/%d", g.URL, c*1000+i), "", http.Header{"X-Request-Id": {id}})
		if e.status == 200 && e.body != id {
			if crossed.Add(1) <= 5 {
				t.Errorf("request %s answered %q", id, e.body)
			}
		}
		return e
	})
	res, _ := l.Wait(60 * time.Second)
	other := 0
	for _, e := range res {
		if e.err != nil || (e.status != 200 && e.status != 504) {
			if other++; other <= 5 {
				t.Errorf("want 200 or 504: %v", e)
			}
		}
	}
	t.Logf("%d requests, %d 200, %d 504, %d crossed", len(res), l.Count(200), l.Count(504), crossed.Load())
	if crossed.Load() > 0 || other > 0 {
		t.Errorf("%d answers crossed between clients, %d unexpected outcomes", crossed.Load(), other)
	}
}

// flapGateway runs natsgate with get-profile on the legacy sample service
// and the sample worker, fallback on, starting at legacy.
func flapGateway(t *testing.T) (*natsServer, *gateway) {
	t.Helper()
	ns := startNATS(t, natsOptions{jetstream: true})
	startWorker(t, ns.URL(), "w1", time.Second)
	startWorker(t, ns.URL(), "w2", time.Second)
	legacyAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	lp := startProc(t, "legacy", bin.worker, "--legacy", legacyAddr)
	eventually(t, 10*time.Second, "legacy service", func() bool { return strings.Contains(lp.Output(), "legacy REST service") })
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: "  shutdown_grace: 3s", Admin: "  token: t0k3n", Body: fmt.Sprintf(`
upstreams:
  legacy: {url: "http://%s", timeout: 2s}
routes:
  - name: get-profile
    method: GET
    path: /profiles/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
    upstream: legacy
    cutover: legacy
    fallback: true
    shadow_ignore: [served_by]
`, legacyAddr)})
	return ns, g
}

func putStage(client *http.Client, adminURL, body string) int {
	req, _ := http.NewRequest("PUT", adminURL+"/admin/routes/get-profile/cutover", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer t0k3n")
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A route's stage flapped legacy → nats → shadow → canary twenty times a
// second under steady load: every request is answered 200, and goroutines
// come back to where they were.
func TestStageFlappingUnderLoad(t *testing.T) {
	_, g := flapGateway(t)
	client := newClient(t)
	for i := 0; i < 20; i++ {
		do(client, "GET", g.URL+"/profiles/7", "", nil)
	}
	before := scrape(t, client, g.AdminURL, "go_goroutines")
	l := startLoad(8, 100000, 20*time.Second, func(c, i int) exchange {
		return do(client, "GET", fmt.Sprintf("%s/profiles/%d", g.URL, 1+(c*100+i)%1000), "", nil)
	})
	stages := []string{`{"cutover":"legacy"}`, `{"cutover":"nats"}`, `{"cutover":"shadow"}`, `{"cutover":"canary","canary_percent":50}`}
	tick := time.NewTicker(50 * time.Millisecond)
	bad := 0
	for i := 0; i < 200; i++ {
		<-tick.C
		if code := putStage(client, g.AdminURL, stages[i%len(stages)]); code != 200 {
			if bad++; bad <= 3 {
				t.Errorf("PUT %s: %d", stages[i%len(stages)], code)
			}
		}
	}
	tick.Stop()
	res := l.Stop()
	failed := 0
	for _, e := range res {
		if e.err != nil || e.status != 200 {
			if failed++; failed <= 5 {
				t.Errorf("while flapping: %v", e)
			}
		}
	}
	t.Logf("%d requests while flapping, %d failed", len(res), failed)
	client.CloseIdleConnections()
	eventually(t, 10*time.Second, "goroutines back", func() bool {
		return scrape(t, client, g.AdminURL, "go_goroutines") <= before+20
	})
	g.Signal(syscall.SIGTERM)
	if code, ok := g.Wait(5 * time.Second); !ok || code != 0 {
		t.Errorf("SIGTERM after flapping: exited %v, code %d; want 0 within the 3s grace", ok, code)
	}
}

// A few thousand idle keep-alive connections cost a bounded amount of
// memory and goroutines, and SIGTERM with them open exits 0 within the
// grace.
func TestManyIdleKeepAlives(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: "  shutdown_grace: 3s", Body: `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
`})
	client := newClient(t)
	rss0 := g.Memory("VmRSS")
	gor0 := scrape(t, client, g.AdminURL, "go_goroutines")
	const n = 3000
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /users/%d HTTP/1.1\r\nHost: x\r\n\r\n", 1+i%1000)
		if code, _ := readStatus(c); code != 200 {
			t.Fatalf("connection %d: %d", i, code)
		}
	}
	rss1 := g.Memory("VmRSS")
	gor1 := scrape(t, client, g.AdminURL, "go_goroutines")
	t.Logf("%d idle keep-alives: RSS %d MiB -> %d MiB, goroutines %v -> %v", n, rss0>>20, rss1>>20, gor0, gor1)
	if gor1-gor0 > 2*n {
		t.Errorf("%v goroutines for %d idle connections", gor1-gor0, n)
	}
	if rss1-rss0 > 200<<20 {
		t.Errorf("%d MiB for %d idle connections", (rss1-rss0)>>20, n)
	}
	if e := do(client, "GET", g.URL+"/users/1", "", nil); e.status != 200 {
		t.Errorf("a new client beside %d idle ones: %v", n, e)
	}
	start := time.Now()
	g.Signal(syscall.SIGTERM)
	code, ok := g.Wait(5 * time.Second)
	if !ok || code != 0 {
		t.Errorf("SIGTERM with %d idle keep-alives: exited %v code %d after %v; want 0 within 3s", n, ok, code, time.Since(start))
	}
}

// SIGTERM while requests are stuck, each kind on its own: on an upstream
// that never answers, on a legacy route whose client stalled its upload, on
// a NATS route whose client stalled its upload, and on a shadow route
// whose client asked for 100-continue and sent nothing. natsgate exits 0
// within http.shutdown_grace, as README's "Running it" promises.
func TestSIGTERMWithStuckClientsAndUpstream(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", time.Second)
	for _, c := range []struct{ name, req string }{
		{"upstream-never-answers", "GET /legacy/hang HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"legacy-stalled-upload", "POST /legacy/slowread HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"},
		{"nats-stalled-upload", "POST /users/7 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"},
		{"shadow-expect-continue", "POST /shadow/slowread HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := startRawUpstream(t)
			g := attackGateway(t, ns.URL(), up.URL(), "  shutdown_grace: 3s")
			for i := 0; i < 4; i++ {
				conn, err := net.DialTimeout("tcp", g.Addr, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				_, _ = conn.Write([]byte(c.req))
			}
			time.Sleep(1500 * time.Millisecond) // past the upstream timeout (1s)
			start := time.Now()
			g.Signal(syscall.SIGTERM)
			code, ok := g.Wait(8 * time.Second)
			took := time.Since(start)
			if !ok || code != 0 || took > 4*time.Second {
				t.Errorf("SIGTERM with 4 clients stuck (%s): exited %v, code %d, after %v; want 0 within the 3s grace", c.name, ok, code, took.Round(time.Millisecond))
			}
		})
	}
}

// natsgate started while its NATS server is down either exits non-zero
// saying why, or waits and serves once NATS is up; it never hangs silent.
func TestStartedWhileNATSIsDown(t *testing.T) {
	ns := newNATS(t, natsOptions{jetstream: true})
	g := launchGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
`})
	client := &http.Client{Timeout: time.Second}
	time.Sleep(3 * time.Second)
	if !g.Running() {
		t.Logf("natsgate exited %d with NATS down:\n%s", g.code, strings.ReplaceAll(tail(g.Output(), 600), `{"time`, `|{"time`))
		if g.code == 0 {
			t.Errorf("natsgate exited 0 with NATS down")
		}
		return
	}
	adminUp := httpStatus(client, g.AdminURL+"/healthz")
	ready := httpStatus(client, g.AdminURL+"/readyz")
	t.Logf("NATS down 3s: natsgate running, /healthz %d, /readyz %d, output:\n%s", adminUp, ready, tail(g.Output(), 600))
	ns.Start()
	startWorker(t, ns.URL(), "w1", time.Second)
	if took, ok := within(10*time.Second, func() bool { return httpStatus(client, g.AdminURL+"/readyz") == 200 }); !ok {
		t.Fatalf("natsgate not ready %v after NATS came up (started while NATS was down); output:\n%s", took, tail(g.Output(), 1500))
	}
	eventually(t, 5*time.Second, "GET /users/7 200", func() bool { return httpStatus(client, g.URL+"/users/7") == 200 })
}

// nats-server killed and restarted twice within a second: the route serves
// again soon after, with no restart of natsgate.
func TestNATSDoubleRestart(t *testing.T) {
	ns := startNATS(t, natsOptions{jetstream: true})
	startWorker(t, ns.URL(), "w1", time.Second, "--reconnect-wait", "100ms")
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
`})
	client := newClient(t)
	l := startLoad(4, 100000, 30*time.Second, func(c, i int) exchange {
		return do(client, "GET", g.URL+"/users/7", "", nil)
	})
	defer l.Stop()
	eventually(t, 5*time.Second, "load", func() bool { return l.Count(200) > 20 })
	ns.Kill()
	ns.StartNoWait()
	time.Sleep(300 * time.Millisecond)
	ns.Kill()
	ns.Start()
	back := time.Now()
	if took, ok := within(10*time.Second, func() bool { return httpStatus(client, g.URL+"/users/7") == 200 }); !ok {
		t.Fatalf("GET /users/7 not 200 %v after the second restart", took)
	} else {
		t.Logf("serving %v after the second restart", took)
	}
	n := len(l.Snapshot())
	time.Sleep(time.Second)
	res := l.Stop()
	for _, e := range res[n:] {
		if e.start.After(back.Add(5*time.Second)) && e.status != 200 {
			t.Errorf("long after the restarts: %v", e)
		}
		if e.err != nil || e.took() > 3*time.Second {
			t.Errorf("request hung or broke: %v", e)
		}
	}
	g.Signal(syscall.SIGTERM)
	if code, ok := g.Wait(20 * time.Second); !ok || code != 0 {
		t.Errorf("SIGTERM: exited %v code %d", ok, code)
	}
}

// The JetStream stream deleted while POSTs run: every POST is answered
// promptly, 202 before and 503 after, never a 500 or a hang.
func TestStreamDeletedWhilePosting(t *testing.T) {
	ns := startNATS(t, natsOptions{jetstream: true})
	natsExtra, body := ordersConfig(1)
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: natsExtra, HTTP: "  shutdown_grace: 3s", Body: body})
	client := newClient(t)
	l := startLoad(4, 100000, 20*time.Second, func(c, i int) exchange {
		return postOrder(client, g.URL, fmt.Sprintf("k-%d-%d", c, i))
	})
	defer l.Stop()
	eventually(t, 5*time.Second, "202s", func() bool { return l.Count(202) > 20 })
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	if err := js.DeleteStream("ORDERS"); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	time.Sleep(2 * time.Second)
	g.Signal(syscall.SIGTERM)
	code, ok := g.Wait(6 * time.Second)
	res := l.Stop()
	counts := map[int]int{}
	for _, e := range res {
		counts[e.status]++
		if e.status >= 500 && e.status != 503 && e.status != 504 {
			t.Errorf("after the stream was deleted: %v", e)
		}
		if e.took() > 3*time.Second {
			t.Errorf("slow answer: %v", e)
		}
		if e.start.After(deleted.Add(500*time.Millisecond)) && e.status == 202 && e.end.Before(deleted.Add(2*time.Second)) {
			t.Errorf("202 after the stream was deleted: %v", e)
		}
	}
	t.Logf("statuses: %v", counts)
	for _, e := range res {
		if e.status != 202 {
			t.Logf("%v (%.3fs after delete)", e, e.start.Sub(deleted).Seconds())
		}
	}
	if !ok || code != 0 {
		t.Errorf("SIGTERM: exited %v code %d", ok, code)
	}
}
