package e2e

import (
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Hostile input: 10,000 requests at once. In-flight requests stay within
// http.max_inflight (the rest get 503 at once), NATS sees no slow consumer,
// and the gateway's memory stays bounded.
func TestTenThousandConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: ten thousand connections take a while on a small machine")
	}
	const maxInflight, requests = 200, 10000
	ns := startNATS(t, natsOptions{})
	// A responder that holds each request 300ms and counts how many it
	// holds at once: the number natsgate let through concurrently.
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var holding, peak atomic.Int64
	if _, err := nc.Subscribe("hold.get", func(m *nats.Msg) {
		n := holding.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		go func() {
			time.Sleep(300 * time.Millisecond)
			holding.Add(-1)
			_ = m.Respond([]byte("ok"))
		}()
	}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	// read_header_timeout is raised from 5s: on a loaded 2-core machine
	// the burst process itself can take longer than that to write all
	// 10,000 requests on the connections it opened, and this scenario is
	// about the in-flight bound, not slow clients (TestSlowHeadersCutOff).
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: "  max_inflight: " + strconv.Itoa(maxInflight) + "\n  read_header_timeout: 60s", Body: `
routes:
  - name: hold
    method: GET
    path: /hold
    nats: {subject: hold.get, timeout: 10s}
`})

	start := time.Now()
	out, err := exec.Command(bin.burst, "-url", g.URL+"/hold", "-n", strconv.Itoa(requests), "-timeout", "60s").Output()
	if err != nil {
		t.Fatalf("burst: %v", err)
	}
	var res struct {
		Status map[int]int    `json:"status"`
		Errors map[string]int `json:"errors"`
		Max    float64        `json:"max_ms"`
		P50    float64        `json:"p50_ms"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("burst output %q: %v", out, err)
	}
	t.Logf("%d requests in %v: status %v, errors %v, p50 %.0fms, max %.0fms; at most %d held by the worker at once",
		requests, time.Since(start).Round(time.Millisecond), res.Status, res.Errors, res.P50, res.Max, peak.Load())

	if len(res.Errors) > 0 {
		t.Errorf("requests without an answer: %v", res.Errors)
	}
	for status := range res.Status {
		if status != 200 && status != 503 {
			t.Errorf("%d requests got %d; want only 200 or 503 (over the in-flight limit)", res.Status[status], status)
		}
	}
	if res.Status[200] < maxInflight {
		t.Errorf("only %d requests succeeded; at least max_inflight (%d) should", res.Status[200], maxInflight)
	}
	if p := peak.Load(); p > maxInflight {
		t.Errorf("%d requests reached the worker at once; max_inflight is %d", p, maxInflight)
	}
	if strings.Contains(strings.ToLower(g.Output()), "slow consumer") {
		t.Errorf("the gateway logged a slow consumer")
	}
	client := newClient(t)
	if n := scrape(t, client, g.AdminURL, "natsgate_rejected_requests_total", `reason="inflight_limit"`); int(n) != res.Status[503] {
		t.Errorf("natsgate_rejected_requests_total{reason=\"inflight_limit\"} = %v, want the %d 503s", n, res.Status[503])
	}
	eventually(t, 10*time.Second, "natsgate_inflight_requests back to 0", func() bool {
		return scrape(t, client, g.AdminURL, "natsgate_inflight_requests") == 0
	})
	// Peak resident memory: 10,000 connections cost some, but a bounded
	// amount (the in-flight limit keeps NATS work and bodies bounded).
	if hwm := g.Memory("VmHWM"); hwm > 512<<20 {
		t.Errorf("natsgate's peak RSS was %d MiB, more than 512 MiB", hwm>>20)
	} else {
		t.Logf("natsgate's peak RSS: %d MiB", hwm>>20)
	}
	if httpStatus(client, g.AdminURL+"/readyz") != 200 {
		t.Errorf("/readyz is not 200 after the burst")
	}
}
