package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// poolEcho is what the hostile worker answers a request with.
type poolEcho struct {
	ID    string `json:"id"`
	Param string `json:"param"`
}

// A real natsgate process reuses header maps, reply waiters and timers
// between requests. Against a worker whose headers collide with
// natsgate's own and that answers late (past the route's timeout) or
// twice, while the nats-server is frozen with SIGSTOP under load, let go,
// and later killed and started again, every answer a client gets is its
// own request's (a success or a problem naming its request id and path),
// and every access log line names its own request's path and the status
// its client was given.
func TestPooledAnswersStayTheirOwnThroughAFrozenAndRestartedNATS(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	_, err = nc.QueueSubscribe("echo.*", "workers", func(m *nats.Msg) {
		id := m.Header.Get("X-Request-Id")
		param := m.Header.Get("Http-Param-tag")
		data, _ := json.Marshal(poolEcho{ID: id, Param: param})
		out := nats.NewMsg(m.Reply)
		out.Data = data
		out.Header["X-Request-Id"] = []string{"forged-" + id}
		out.Header["Server-Timing"] = []string{"worker;dur=1, forged;desc=" + id}
		out.Header["Content-Length"] = []string{"99999"}
		out.Header["X-Echo-Id"] = []string{id}
		out.Header["X-Big"] = []string{strings.Repeat("b", 4<<10) + id}
		switch {
		case strings.HasSuffix(param, "-late"):
			go func() {
				time.Sleep(350 * time.Millisecond) // past the route's timeout
				_ = nc.PublishMsg(out)
			}()
			return
		case strings.HasSuffix(param, "-twice"):
			_ = nc.PublishMsg(out)
			dup := nats.NewMsg(m.Reply)
			dup.Header["X-Echo-Id"] = []string{"duplicate-" + id}
			dup.Data = []byte("duplicate of " + id)
			_ = nc.PublishMsg(dup)
			return
		}
		_ = nc.PublishMsg(out)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), NATS: "  reconnect_wait: 50ms", Body: `
routes:
  - name: echo
    method: GET
    path: /echo/{tag}
    breaker: {min_requests: 1000000}
    nats: {subject: "echo.{tag}", timeout: 200ms}
`})
	client := newClient(t)

	var mu sync.Mutex
	given := map[string]int{} // the status each request's client got
	var wrong []string
	send := func(c, i int) exchange {
		id := fmt.Sprintf("pool-%d-%d", c, i)
		tag := id
		switch i % 10 {
		case 3:
			tag += "-late"
		case 6:
			tag += "-twice"
		}
		ex := do(client, "GET", g.URL+"/echo/"+tag, "", http.Header{"X-Request-Id": {id}})
		if ex.err != nil {
			return ex
		}
		why := ""
		switch {
		case ex.status == 200:
			var e poolEcho
			if json.Unmarshal([]byte(ex.body), &e) != nil || e.ID != id || e.Param != tag {
				why = "a 200 that is not its own: " + tail(ex.body, 120)
			}
		default:
			var p struct {
				RequestID string `json:"request_id"`
				Instance  string `json:"instance"`
			}
			if json.Unmarshal([]byte(ex.body), &p) != nil || p.RequestID != id || p.Instance != "/echo/"+tag {
				why = fmt.Sprintf("a %d that is not its own: %s", ex.status, tail(ex.body, 200))
			}
		}
		mu.Lock()
		given[id] = ex.status
		if why != "" {
			wrong = append(wrong, id+": "+why)
		}
		mu.Unlock()
		return ex
	}
	l := startLoad(4, 400, 60*time.Second, send)
	defer l.Stop()
	eventually(t, 20*time.Second, "100 answers", func() bool { return l.Count(200) >= 100 })
	ns.Pause()
	time.Sleep(1500 * time.Millisecond) // requests go out and wait meanwhile
	ns.Resume()
	before := l.Count(200)
	eventually(t, 20*time.Second, "answers after SIGCONT", func() bool { return l.Count(200) >= before+100 })
	ns.Kill()
	ns.Start()
	exchanges, finished := l.Wait(60 * time.Second)
	if !finished {
		t.Logf("the load did not finish in time; checking the %d exchanges made", len(exchanges))
	}
	after := 0
	for _, e := range exchanges[len(exchanges)/2:] {
		if e.status == 200 {
			after++
		}
	}
	if after == 0 {
		t.Errorf("no answer after the restart: %v", exchanges[len(exchanges)-1])
	}

	mu.Lock()
	defer mu.Unlock()
	for i, w := range wrong {
		if i == 10 {
			t.Errorf("and %d more", len(wrong)-10)
			break
		}
		t.Error(w)
	}
	// Every request's access line names its own path, with the status its
	// client got.
	eventually(t, 10*time.Second, "an access log line for every answered request", func() bool {
		out := g.Output()
		for id := range given {
			if !strings.Contains(out, `"request_id":"`+id+`"`) {
				return false
			}
		}
		return true
	})
	lines := 0
	for _, line := range strings.Split(g.Output(), "\n") {
		var m struct {
			Msg       string `json:"msg"`
			Path      string `json:"path"`
			Status    int    `json:"status"`
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.Msg != "request" || !strings.HasPrefix(m.RequestID, "pool-") {
			continue
		}
		lines++
		tag := strings.TrimPrefix(m.Path, "/echo/")
		if tag != m.RequestID && tag != m.RequestID+"-late" && tag != m.RequestID+"-twice" {
			t.Errorf("access line of %s names path %s: %s", m.RequestID, m.Path, line)
		}
		if st, ok := given[m.RequestID]; ok && st != m.Status {
			t.Errorf("access line of %s says %d, its client got %d: %s", m.RequestID, m.Status, st, line)
		}
	}
	t.Logf("%d exchanges, %d answered, %d access lines checked", len(exchanges), len(given), lines)
}
