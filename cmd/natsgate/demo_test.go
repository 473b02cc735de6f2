package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/configs"
	"github.com/natsgate/natsgate/examples/legacy"
	"github.com/natsgate/natsgate/examples/worker"
	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// testDemo is the demo's configuration served on random loopback ports: a
// real nats-server, two sample workers, the legacy service and the gateway.
type testDemo struct {
	gw    *gateway.Server
	table *routes.Table
	reg   *prometheus.Registry
	base  string // public listener
	admin string // admin listener
	token string
}

func startTestDemo(t *testing.T) *testDemo {
	t.Helper()
	cfg, err := routes.Parse("configs/demo.yaml", configs.Demo, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("demo config: %v", err)
	}
	ns := natstest.RunServer(t)
	legacySrv := httptest.NewServer(legacy.Handler())
	t.Cleanup(legacySrv.Close)
	cfg.NATS.URL = ns.ClientURL()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	up := cfg.Upstreams["legacy"]
	up.URL = legacySrv.URL
	cfg.Upstreams["legacy"] = up
	table, err := routes.Compile(cfg)
	if err != nil {
		t.Fatalf("demo config: %v", err)
	}
	for i := 1; i <= 2; i++ {
		nc := natstest.Connect(t, ns)
		svc, err := worker.Start(nc, worker.Options{Instance: fmt.Sprintf("worker-%d", i), SlowDelay: 700 * time.Millisecond})
		if err != nil {
			t.Fatalf("worker: %v", err)
		}
		t.Cleanup(func() { _ = svc.Stop() })
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	gw, err := gateway.New(context.Background(), gateway.Options{Table: table, Logger: log, Registry: reg, AccessLog: io.Discard})
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	if err := gw.Start(); err != nil {
		t.Fatalf("gateway: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
	})
	return &testDemo{gw: gw, table: table, reg: reg, base: "http://" + gw.Addr(), admin: "http://" + gw.AdminAddr(), token: cfg.Admin.Token}
}

// traffic sends the demo's sample traffic until the test ends.
func (d *testDemo) traffic(t *testing.T, perSecond int) {
	t.Helper()
	stop := startTraffic(d.base, d.table, trafficOptions{PerSecond: perSecond, Backoff: time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(stop)
}

// stats reads /admin/stats.
func (d *testDemo) stats(t *testing.T) gateway.StatsSnapshot {
	t.Helper()
	resp, err := http.Get(d.admin + "/admin/stats")
	if err != nil {
		t.Fatalf("/admin/stats: %v", err)
	}
	defer resp.Body.Close()
	var snap gateway.StatsSnapshot
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatalf("/admin/stats: %v", err)
	}
	return snap
}

func routeStats(snap gateway.StatsSnapshot, name string) gateway.RouteStats {
	for _, r := range snap.Routes {
		if r.Name == name {
			return r
		}
	}
	return gateway.RouteStats{}
}

// cutover moves a route to a stage through the admin API.
func (d *testDemo) cutover(t *testing.T, route, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, d.admin+"/admin/routes/"+route+"/cutover", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT cutover %s: %v", route, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT cutover %s %s: %d %s", route, body, resp.StatusCode, b)
	}
}

// TestDemoTraffic runs the demo's traffic generator against the demo and
// checks that every route it can answer was sampled.
func TestDemoTraffic(t *testing.T) {
	d := startTestDemo(t)
	d.traffic(t, 80)
	natstest.Eventually(t, 20*time.Second, "traffic on every route", func() bool {
		snap := d.stats(t)
		for _, r := range snap.Routes {
			if r.Requests < 2 {
				return false
			}
		}
		return true
	})
	snap := d.stats(t)
	for _, tc := range []struct {
		route, backend string
		has5xx         bool
	}{
		{"get-user", "nats", false},
		{"get-profile", "legacy", false},
		{"legacy-rest", "legacy", false},
		{"post-event", "nats", false},
		{"create-order", "nats", false},
		{"slow", "nats", true},       // 504: the worker is slower than the route's timeout
		{"get-report", "nats", true}, // 503: nobody subscribed
	} {
		r := routeStats(snap, tc.route)
		b, ok := r.Backends[tc.backend]
		if !ok || b.Requests == 0 {
			t.Errorf("%s: no requests answered by %s: %+v", tc.route, tc.backend, r.Backends)
			continue
		}
		if (r.Errors > 0) != tc.has5xx {
			t.Errorf("%s: %d of %d requests were 5xx; want errors %v", tc.route, r.Errors, r.Requests, tc.has5xx)
		}
	}
	// A failing route rests between samples: far fewer requests than a
	// healthy one.
	if slow, user := routeStats(snap, "slow"), routeStats(snap, "get-user"); slow.Requests*2 > user.Requests {
		t.Errorf("slow got %d requests, get-user %d: a failing route should be sampled, not flooded", slow.Requests, user.Requests)
	}
}

func TestSamplePath(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{"/orders", "/orders"},
		{"/users/{id}", "/users/N"},
		{"/users/{id:[0-9]+}/x", "/users/N/x"},
		{"/events/{kind}", "/events/W"},
		{"/*", "/version"},
	} {
		got, err := samplePath(tc.pattern)
		if err != nil {
			t.Fatalf("%s: %v", tc.pattern, err)
		}
		norm := strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return 'N'
			}
			return r
		}, got)
		for _, w := range sampleWords {
			norm = strings.ReplaceAll(norm, w, "W")
		}
		for strings.Contains(norm, "NN") {
			norm = strings.ReplaceAll(norm, "NN", "N")
		}
		if norm != tc.want {
			t.Errorf("samplePath(%q) = %q, want the shape %q", tc.pattern, got, tc.want)
		}
	}
	if _, err := samplePath("/users/{id"); err == nil {
		t.Error("samplePath of an unclosed parameter: no error")
	}
}
