package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// The admin listener defaults to loopback.
func TestAdminListenerDefaultsToLoopback(t *testing.T) {
	cfg, err := routes.Parse("minimal.yaml", []byte(publishRoute), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	table, err := routes.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(table.Config.Admin.Listen)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("admin.listen defaults to %q, want a loopback address", table.Config.Admin.Listen)
	}
}

// Admin mutations need the bearer token; without a configured token the
// admin API is read-only.
func TestAdminMutationsNeedToken(t *testing.T) {
	ns := startNATS(t, natsOptions{jetstream: true})
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "from legacy\n")
	}))
	defer legacy.Close()
	startWorker(t, ns.URL(), "w1", time.Second)
	body := fmt.Sprintf(`
upstreams:
  legacy: {url: %q}
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 1s}
    upstream: legacy
    cutover: nats
`, legacy.URL)
	const token = "adm1n-t0ken-for-e2e"
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Admin: "  token: " + token, Body: body})
	readOnly := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: body})
	client := newClient(t)
	backend := func(base string) string {
		resp, err := client.Get(base + "/users/1")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Natsgate-Backend")
	}
	eventually(t, 15*time.Second, "get-user answered over NATS", func() bool { return backend(g.URL) == "nats" })

	put := func(adminURL, auth string) int {
		req, _ := http.NewRequest("PUT", adminURL+"/admin/routes/get-user/cutover", strings.NewReader(`{"cutover":"legacy"}`))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + token[:len(token)-1], "Bearer " + token + "x", "Basic " + token, token} {
		if code := put(g.AdminURL, auth); code != 401 {
			t.Errorf("PUT with Authorization %q: %d, want 401", auth, code)
		}
	}
	if b := backend(g.URL); b != "nats" {
		t.Fatalf("a refused PUT changed the route: backend %q", b)
	}
	if code := put(readOnly.AdminURL, "Bearer "+token); code != 403 {
		t.Errorf("PUT on a gateway without admin.token: %d, want 403 (read-only)", code)
	}
	if code := put(g.AdminURL, "Bearer "+token); code != 200 {
		t.Fatalf("PUT with the token: %d, want 200", code)
	}
	eventually(t, 15*time.Second, "get-user to answer from legacy", func() bool { return backend(g.URL) == "legacy" })
	if code := httpStatus(client, g.AdminURL+"/admin/routes"); code != 200 {
		t.Errorf("GET /admin/routes needs no token: %d", code)
	}
}

// A spoofed X-Forwarded-For from an untrusted peer is not passed on as
// trusted; from a trusted proxy it is kept and extended.
func TestSpoofedForwardedFor(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	seen := make(chan string, 10)
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- strings.Join(r.Header.Values("X-Forwarded-For"), ", ")
	}))
	defer legacy.Close()
	body := fmt.Sprintf(`
upstreams:
  legacy: {url: %q}
routes:
  - name: legacy-all
    method: "*"
    path: /*
    upstream: legacy
`, legacy.URL)
	untrusting := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: body})
	trusting := startGateway(t, gatewayConfig{NATSURL: ns.URL(), HTTP: "  trusted_proxies: [127.0.0.1/32]", Body: body})
	client := newClient(t)
	xff := func(base string, h http.Header) string {
		if e := do(client, "GET", base+"/whoami", "", h); e.status != 200 {
			t.Fatalf("legacy: %v", e)
		}
		return <-seen
	}
	spoof := http.Header{"X-Forwarded-For": {"6.6.6.6"}}
	if got := xff(untrusting.URL, spoof); got != "127.0.0.1" {
		t.Errorf("from an untrusted peer the upstream saw X-Forwarded-For %q, want only the peer, 127.0.0.1", got)
	}
	// Naming it in Connection must not strip the forwarding headers.
	spoof.Set("Connection", "X-Forwarded-For")
	if got := xff(untrusting.URL, spoof); got != "127.0.0.1" {
		t.Errorf("with Connection: X-Forwarded-For the upstream saw %q, want 127.0.0.1", got)
	}
	if got := xff(trusting.URL, http.Header{"X-Forwarded-For": {"203.0.113.7"}}); got != "203.0.113.7, 127.0.0.1" {
		t.Errorf("from a trusted proxy the upstream saw %q, want the chain extended: 203.0.113.7, 127.0.0.1", got)
	}
}
