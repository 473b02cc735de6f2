// Package gatewaytest starts the real gateway for the tests of packages
// outside gateway (workers, the wire package, examples): in process,
// behind loopback listeners on random ports, connected to a real
// nats-server, shut down when the test ends. gateway's own tests have
// their harness inside the package.
package gatewaytest

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// Gateway is a started gateway.
type Gateway struct {
	*gateway.Server
	// URL is the public listener's base URL, "http://127.0.0.1:port".
	URL string
	// Registry holds the gateway's metrics.
	Registry *prometheus.Registry
}

// Start serves yamlText with the gateway until the test ends. The
// config's nats.url is set to ns and its listeners to random loopback
// ports; discovery is off unless the config has a discovery section,
// since tests' workers are often plain subscribers that discovery cannot
// see.
func Start(t testing.TB, ns *server.Server, yamlText string) *Gateway {
	t.Helper()
	cfg, err := routes.Parse("test.yaml", []byte(yamlText), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.NATS.URL = ns.ClientURL()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	if !strings.Contains(yamlText, "discovery:") {
		off := false
		cfg.Discovery.Enabled = &off
	}
	table, err := routes.Compile(cfg)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	gw, err := gateway.New(context.Background(), gateway.Options{
		Table: table, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: reg, AccessLog: io.Discard,
	})
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
	return &Gateway{Server: gw, URL: "http://" + gw.Addr(), Registry: reg}
}
