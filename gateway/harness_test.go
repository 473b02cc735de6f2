package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// testGateway is a Server behind real loopback listeners, connected to a
// real nats-server.
type testGateway struct {
	*Server
	URL      string // public base URL
	AdminURL string
	NS       *server.Server
	Registry *prometheus.Registry
}

// startGateway compiles yamlText (its nats.url and listeners are set to the
// test's) and serves it until the test ends.
func startGateway(t testing.TB, ns *server.Server, yamlText string) *testGateway {
	t.Helper()
	return startGatewayLogging(t, ns, yamlText, nil)
}

// startGatewayLogging is startGateway with the log, in the config's
// format, written to logOut (nil: discarded, or to t.Log with -v).
func startGatewayLogging(t testing.TB, ns *server.Server, yamlText string, logOut io.Writer) *testGateway {
	t.Helper()
	cfg, err := routes.Parse("test.yaml", []byte(yamlText), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.NATS.URL = ns.ClientURL()
	if !strings.Contains(yamlText, "discovery:") {
		// Most tests' workers are plain subscribers, which discovery
		// cannot see: it would refuse their cutovers. Tests of discovery
		// say so in their config.
		off := false
		cfg.Discovery.Enabled = &off
	}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	table, err := routes.Compile(cfg)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var access io.Writer = io.Discard
	format := ""
	switch {
	case logOut != nil:
		log, access = NewLogger(table.Config.Log, logOut, ""), logOut
	case testing.Verbose():
		log, access, format = slog.New(slog.NewTextHandler(testWriter{t}, nil)), testWriter{t}, "text"
	}
	gw, err := New(context.Background(), Options{Table: table, Logger: log, Registry: reg, AccessLog: access, LogFormat: format})
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	if err := gw.Start(); err != nil {
		t.Fatalf("gateway start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
	})
	return &testGateway{Server: gw, URL: "http://" + gw.Addr(), AdminURL: "http://" + gw.AdminAddr(), NS: ns, Registry: reg}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// respond subscribes a queue-group worker on subject that answers with fn.
func respond(t testing.TB, nc *nats.Conn, subject string, fn func(*nats.Msg) *nats.Msg) {
	t.Helper()
	sub, err := nc.QueueSubscribe(subject, "workers", func(m *nats.Msg) {
		if out := fn(m); out != nil {
			_ = m.RespondMsg(out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// do sends a request and returns the response with its body read.
func do(t testing.TB, method, url string, body io.Reader, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return send(t, req)
}

// send sends a request and returns the response with its body read.
func send(t testing.TB, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestSmokeRequestReply(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, "users.*.get", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte("hello " + m.Header.Get("Http-Param-id"))}
	})
	resp, body := do(t, "GET", gw.URL+"/users/7", nil, nil)
	if resp.StatusCode != 200 || body != "hello 7" {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, "hello 7")
	}
}
