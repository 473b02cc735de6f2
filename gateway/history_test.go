package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
)

func getHistory(t testing.TB, gw *testGateway, query string) HistorySnapshot {
	t.Helper()
	resp, body := do(t, "GET", gw.AdminURL+"/admin/history"+query, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/admin/history%s: %d %s", query, resp.StatusCode, body)
	}
	var snap HistorySnapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatalf("/admin/history%s: %v\n%s", query, err, body)
	}
	return snap
}

// historyRequests sums a route's requests over every point, by backend.
func historyRequests(rh RouteHistory, backend string) float64 {
	var n float64
	for _, p := range rh.Points {
		n += p.Backend[backend].Rate * HistoryStep.Seconds()
	}
	return n
}

// B's history holds the requests only A answered, once each, with their
// latencies, and the points cover fifteen minutes in ten-second steps.
func TestHistoryHoldsTheFleetsTraffic(t *testing.T) {
	ns := natstest.RunServer(t)
	echo(t, ns, "get", 0)
	a := startGateway(t, ns, fleetConfig("a", "get", ""))
	b := startGateway(t, ns, fleetConfig("b", "get", ""))
	waitFor(t, 10*time.Second, "the replicas to hear each other", func() bool { return len(getFleet(t, b).Replicas) == 2 })
	sendGets(t, a, 20)

	var rh RouteHistory
	waitFor(t, 30*time.Second, "B's history to hold A's 20 requests", func() bool {
		rh = getHistory(t, b, "?route=get").Routes[0]
		return historyRequests(rh, "nats") >= 20-0.5
	})
	if n := historyRequests(rh, "nats"); n > 20.5 {
		t.Errorf("B's history counts %.1f requests, want 20: a slot was counted twice", n)
	}
	if want := int(time.Duration(historySlots) * statsSlot / HistoryStep); len(rh.Points) != want {
		t.Errorf("%d points, want %d (fifteen minutes of ten-second steps)", len(rh.Points), want)
	}
	for i, p := range rh.Points {
		if i > 0 && p.T-rh.Points[i-1].T != HistoryStep.Milliseconds() {
			t.Fatalf("point %d at %d, the one before at %d: want steps of %v", i, p.T, rh.Points[i-1].T, HistoryStep)
		}
		if v, ok := p.Backend["nats"]; ok && (v.P50 == nil || v.P99 == nil || v.Rate <= 0) {
			t.Errorf("point %d: %+v, want a rate and latencies", i, v)
		}
	}
	if av := historyRequests(getHistory(t, a, "?route=get").Routes[0], "nats"); av < 19.5 || av > 20.5 {
		t.Errorf("A's own history counts %.1f requests, want 20", av)
	}
	if resp, body := do(t, "GET", b.AdminURL+"/admin/history?route=nope", nil, nil); resp.StatusCode != 404 {
		t.Errorf("?route=nope: %d %s, want 404", resp.StatusCode, body)
	}
}

// A stage change is marked on the route's time axis, on every replica.
func TestHistoryMarksStageChanges(t *testing.T) {
	ns := natstest.RunServer(t)
	cfg := func(id string) string {
		return fleetConfig(id, "get", `    upstream: old
upstreams:
  old: {url: "http://127.0.0.1:1"}
admin:
  token: s3cret
`)
	}
	a := startGateway(t, ns, cfg("a"))
	b := startGateway(t, ns, cfg("b"))
	req, _ := http.NewRequest("PUT", a.AdminURL+"/admin/routes/get/cutover", strings.NewReader(`{"cutover":"canary","canary_percent":5}`))
	req.Header.Set("Authorization", "Bearer s3cret")
	req.Header.Set("X-Natsgate-Actor", "ops")
	if resp, body := send(t, req); resp.StatusCode != 200 {
		t.Fatalf("PUT cutover: %d %s", resp.StatusCode, body)
	}
	for _, gw := range []*testGateway{a, b} {
		waitFor(t, 10*time.Second, "the mark on "+gw.AdminURL, func() bool {
			ev := getHistory(t, gw, "?route=get").Routes[0].Events
			return len(ev) == 1 && ev[0].Kind == "stage" && ev[0].Text == "canary 5% by ops"
		})
	}
	if rh := getHistory(t, b, "?route=get").Routes[0]; rh.Stage != "canary" || rh.Percent == nil || *rh.Percent != 5 {
		t.Errorf("B's history says %s %v, want canary 5", rh.Stage, rh.Percent)
	}
}
