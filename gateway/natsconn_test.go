package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/internal/testpki"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMain keeps the package's tests to the NATS servers they start:
// LoadConfig (and so ReloadFile) reads NATS_URL and NATS_CONTEXT, which a
// developer's shell may hold.
func TestMain(m *testing.M) {
	for _, v := range []string{"NATS_URL", "NATS_CONTEXT"} {
		_ = os.Unsetenv(v)
	}
	os.Exit(m.Run())
}

// connConfig is a gateway config with the test's loopback listeners and
// one request route on "conn.echo", whose nats section is natsYAML (lines
// indented under "nats:").
func connConfig(natsYAML string) string {
	return "nats:\n" + natsYAML + `
http: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
discovery: {enabled: false}
fleet: {enabled: false}
routes:
  - name: echo
    method: GET
    path: /echo
    nats: {subject: conn.echo, timeout: 2s}
`
}

// hermeticNATSEnv clears what a developer's shell may hold, so that a
// test reads only the NATS settings it writes itself: the context
// directory is a fresh temporary one, and HOME a temporary one too.
func hermeticNATSEnv(t *testing.T) (xdg, home string) {
	t.Helper()
	xdg, home = t.TempDir(), t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	t.Setenv("HOME", home)
	t.Setenv("NATS_URL", "")
	t.Setenv("NATS_CONTEXT", "")
	return xdg, home
}

// writeContext writes a natscli context file NAME.json under xdg.
func writeContext(t *testing.T, xdg, name, json string) string {
	t.Helper()
	dir := filepath.Join(xdg, "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, []byte(json), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeConfig writes a config file into a temporary directory.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "natsgate.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveTable starts a gateway on a loaded table, logging to logOut, and
// stops it when the test ends.
func serveTable(t *testing.T, table *routes.Table, logOut io.Writer) *Server {
	t.Helper()
	if logOut == nil {
		logOut = io.Discard
	}
	gw, err := New(context.Background(), Options{Table: table, Logger: slog.New(slog.NewJSONHandler(logOut, nil)), Registry: prometheus.NewRegistry(), AccessLog: io.Discard})
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
	return gw
}

// loadConnConfig loads connConfig(nats) from a file, as natsgate serve
// does, failing the test on any error.
func loadConnConfig(t *testing.T, nats string) *routes.Table {
	t.Helper()
	table, err := LoadConfig(writeConfig(t, connConfig(nats)))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	return table
}

// echoWorker answers conn.echo with "echo" on a connection of its own.
func echoWorker(t *testing.T, ns *server.Server, opts ...nats.Option) {
	t.Helper()
	respond(t, natstest.Connect(t, ns, opts...), "conn.echo", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte("echo")}
	})
}

// getEcho asks the gateway for /echo and returns the status and body.
func getEcho(t *testing.T, gw *Server) (int, string) {
	t.Helper()
	resp, body := do(t, http.MethodGet, "http://"+gw.Addr()+"/echo", nil, nil)
	return resp.StatusCode, body
}

// deadURL is a NATS URL on a loopback port nobody listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return "nats://" + addr
}

// authServer runs a nats-server that admits only user "alice" with
// password "s3cret", and "worker" with password "w".
func authServer(t *testing.T) *server.Server {
	t.Helper()
	opts := natstest.Options(t)
	opts.Users = []*server.User{{Username: "alice", Password: "s3cret"}, {Username: "worker", Password: "w"}}
	return natstest.RunServerWith(t, opts)
}

// TestContextConnects: `nats.context: NAME` reads the natscli context
// file under $XDG_CONFIG_HOME/nats/context and connects with its URL and
// credentials (user and password, token, an NKey seed file named with
// "~"), and a request through the gateway is answered.
func TestContextConnects(t *testing.T) {
	// Each case starts its own server, with the authentication it tests.
	tests := []struct {
		name    string
		server  func(t *testing.T, home string) (ns *server.Server, context string, worker []nats.Option)
		natsCfg string
	}{
		{
			name: "user and password",
			server: func(t *testing.T, _ string) (*server.Server, string, []nats.Option) {
				ns := authServer(t)
				return ns, fmt.Sprintf(`{"description": "dev", "url": %q, "user": "alice", "password": "s3cret", "color_scheme": "green"}`, ns.ClientURL()),
					[]nats.Option{nats.UserInfo("worker", "w")}
			},
			natsCfg: "  context: dev\n",
		},
		{
			name: "token, url without a scheme",
			server: func(t *testing.T, _ string) (*server.Server, string, []nats.Option) {
				opts := natstest.Options(t)
				opts.Authorization = "t0ken"
				ns := natstest.RunServerWith(t, opts)
				hostPort := strings.TrimPrefix(ns.ClientURL(), "nats://")
				return ns, fmt.Sprintf(`{"url": %q, "token": "t0ken"}`, hostPort), []nats.Option{nats.Token("t0ken")}
			},
			natsCfg: "  context: dev\n",
		},
		{
			name: "nkey seed file under ~",
			server: func(t *testing.T, home string) (*server.Server, string, []nats.Option) {
				gwKey, _ := nkeys.CreateUser()
				gwPub, _ := gwKey.PublicKey()
				gwSeed, _ := gwKey.Seed()
				if err := os.WriteFile(filepath.Join(home, "gw.nk"), gwSeed, 0o600); err != nil {
					t.Fatal(err)
				}
				wKey, _ := nkeys.CreateUser()
				wPub, _ := wKey.PublicKey()
				wSeed, _ := wKey.Seed()
				wFile := filepath.Join(t.TempDir(), "w.nk")
				if err := os.WriteFile(wFile, wSeed, 0o600); err != nil {
					t.Fatal(err)
				}
				opts := natstest.Options(t)
				opts.Nkeys = []*server.NkeyUser{{Nkey: gwPub}, {Nkey: wPub}}
				ns := natstest.RunServerWith(t, opts)
				wOpt, err := nats.NkeyOptionFromSeed(wFile)
				if err != nil {
					t.Fatal(err)
				}
				return ns, fmt.Sprintf(`{"url": %q, "nkey": "~/gw.nk"}`, ns.ClientURL()), []nats.Option{wOpt}
			},
			natsCfg: "  context: dev\n",
		},
		{
			name: "selected by NATS_CONTEXT",
			server: func(t *testing.T, _ string) (*server.Server, string, []nats.Option) {
				ns := authServer(t)
				t.Setenv("NATS_CONTEXT", "dev")
				return ns, fmt.Sprintf(`{"url": %q, "user": "alice", "password": "s3cret"}`, ns.ClientURL()),
					[]nats.Option{nats.UserInfo("worker", "w")}
			},
			natsCfg: "  name: natsgate-test\n",
		},
		{
			name: "TLS with a client certificate, files under ~",
			server: func(t *testing.T, home string) (*server.Server, string, []nats.Option) {
				// The context names ~/ca.pem, ~/client.pem and ~/client-key.pem.
				p, err := testpki.WriteMutual(home, "natsgate test CA")
				if err != nil {
					t.Fatal(err)
				}
				tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.ServerCert, KeyFile: p.ServerKey, CaFile: p.CA, Verify: true})
				if err != nil {
					t.Fatal(err)
				}
				opts := natstest.Options(t)
				opts.TLSConfig, opts.TLS, opts.TLSVerify = tc, true, true
				ns := natstest.RunServerWith(t, opts)
				return ns, fmt.Sprintf(`{"url": %q, "ca": "~/ca.pem", "cert": "~/client.pem", "key": "~/client-key.pem"}`, ns.ClientURL()),
					[]nats.Option{nats.RootCAs(p.CA), nats.ClientCert(p.ClientCert, p.ClientKey)}
			},
			natsCfg: "  context: dev\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			xdg, home := hermeticNATSEnv(t)
			ns, ctxJSON, workerOpts := tt.server(t, home)
			writeContext(t, xdg, "dev", ctxJSON)
			echoWorker(t, ns, workerOpts...)

			table := loadConnConfig(t, tt.natsCfg)
			logs := &syncBuffer{}
			gw := serveTable(t, table, logs)
			if gw.embedded != nil {
				t.Fatal("an embedded server was started although a context names the NATS system")
			}
			if code, body := getEcho(t, gw); code != http.StatusOK || body != "echo" {
				t.Fatalf("GET /echo = %d %q, want 200 \"echo\"", code, body)
			}
			if !strings.Contains(logs.String(), `"from":"context dev"`) {
				t.Errorf("the log does not say the URL came from context dev:\n%s", logs.String())
			}
			if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), "t0ken") {
				t.Errorf("the log shows a secret:\n%s", logs.String())
			}
		})
	}
}

// TestConfigFieldsOverrideContext: what the config file sets wins over the
// context: its url over the context's (a dead port), and its credentials
// over the context's (a wrong password), as a whole.
func TestConfigFieldsOverrideContext(t *testing.T) {
	xdg, _ := hermeticNATSEnv(t)
	ns := authServer(t)
	echoWorker(t, ns, nats.UserInfo("worker", "w"))
	writeContext(t, xdg, "stale", fmt.Sprintf(`{"url": %q, "user": "alice", "password": "wrong", "inbox_prefix": "_INBOX"}`, deadURL(t)))

	table := loadConnConfig(t, fmt.Sprintf("  context: stale\n  url: %s\n  user: alice\n  password: s3cret\n", ns.ClientURL()))
	if got := table.Config.NATS.URL; got != ns.ClientURL() {
		t.Errorf("nats.url = %q, want the config's %q", got, ns.ClientURL())
	}
	logs := &syncBuffer{}
	gw := serveTable(t, table, logs)
	if code, body := getEcho(t, gw); code != http.StatusOK {
		t.Fatalf("GET /echo = %d %s, want 200", code, body)
	}
	if !strings.Contains(logs.String(), `"from":"config"`) {
		t.Errorf("the log does not say the URL came from the config:\n%s", logs.String())
	}
}

// TestNATSURLFromEnvironment: with no nats.url and no context, NATS_URL
// names the NATS system, the log says so, and no embedded server starts.
func TestNATSURLFromEnvironment(t *testing.T) {
	hermeticNATSEnv(t)
	ns := natstest.RunServer(t)
	echoWorker(t, ns)
	t.Setenv("NATS_URL", ns.ClientURL())

	table := loadConnConfig(t, "  name: natsgate-test\n")
	logs := &syncBuffer{}
	gw := serveTable(t, table, logs)
	if gw.embedded != nil {
		t.Fatal("an embedded server was started although NATS_URL is set")
	}
	if code, body := getEcho(t, gw); code != http.StatusOK || body != "echo" {
		t.Fatalf("GET /echo = %d %q, want 200 \"echo\"", code, body)
	}
	if !strings.Contains(logs.String(), `"from":"NATS_URL"`) {
		t.Errorf("the log does not say the URL came from NATS_URL:\n%s", logs.String())
	}
}

// TestNATSURLList: nats.url written as a YAML list, its first server dead
// and its second alive, connects to the live one.
func TestNATSURLList(t *testing.T) {
	hermeticNATSEnv(t)
	ns := natstest.RunServer(t)
	echoWorker(t, ns)
	dead := deadURL(t)

	table := loadConnConfig(t, fmt.Sprintf("  url:\n    - %s\n    - %s\n", dead, ns.ClientURL()))
	if want := dead + "," + ns.ClientURL(); table.Config.NATS.URL != want {
		t.Errorf("nats.url = %q, want %q", table.Config.NATS.URL, want)
	}
	gw := serveTable(t, table, nil)
	if code, body := getEcho(t, gw); code != http.StatusOK || body != "echo" {
		t.Fatalf("GET /echo = %d %q, want 200 \"echo\"", code, body)
	}
}

// TestInboxPrefix: a user whose permissions allow replies only under a
// custom prefix is served when nats.inbox_prefix names it (the gateway's
// reply mux subscribes under it), and not without it.
func TestInboxPrefix(t *testing.T) {
	hermeticNATSEnv(t)
	opts := natstest.Options(t)
	// No JetStream: the cutover and fleet buckets are then refused at
	// once instead of waiting on replies the permissions drop.
	opts.JetStream = false
	opts.Users = []*server.User{
		{Username: "gw", Password: "gw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"gw.replies.>"}},
		}},
		{Username: "worker", Password: "w"},
	}
	ns := natstest.RunServerWith(t, opts)
	echoWorker(t, ns, nats.UserInfo("worker", "w"))

	for _, tt := range []struct {
		name   string
		prefix string
		want   int
	}{
		{"with the prefix", "  inbox_prefix: gw.replies\n", http.StatusOK},
		{"without the prefix", "", http.StatusGatewayTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			table := loadConnConfig(t, fmt.Sprintf("  url: %s\n  user: gw\n  password: gw\n%s", ns.ClientURL(), tt.prefix))
			gw := serveTable(t, table, nil)
			if code, body := getEcho(t, gw); code != tt.want {
				t.Fatalf("GET /echo = %d %s, want %d", code, body, tt.want)
			}
		})
	}
}

// TestContextErrors: a context that cannot be used is a config error
// naming the config's file and line, nats.context, and the context file
// and field at fault.
func TestContextErrors(t *testing.T) {
	tests := []struct {
		name    string
		context string // the file's content; "" writes none
		cfgName string
		want    []string
	}{
		{"no such context", "", "nope", []string{"natsgate.yaml:2", "nats.context", filepath.Join("nats", "context", "nope.json")}},
		{"not a context name", "", "../etc", []string{"natsgate.yaml:2", "nats.context", `"../etc"`}},
		{"not JSON", `{"url": `, "dev", []string{"natsgate.yaml:2", "nats.context", "dev.json"}},
		{"a field natsgate cannot honour", `{"url": "nats://127.0.0.1:4222",` + "\n" + `"user_jwt": "eyJ0"}`, "dev", []string{"natsgate.yaml:2", "dev.json:2", "user_jwt"}},
		{"a credential URI natsgate cannot read", `{"creds": "op://vault/nats/creds"}`, "dev", []string{"dev.json:1", "creds", "op://"}},
		{"a bad inbox prefix", `{"inbox_prefix": "_INBOX.*"}`, "dev", []string{"dev.json:1", "inbox_prefix"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			xdg, _ := hermeticNATSEnv(t)
			if tt.context != "" {
				writeContext(t, xdg, tt.cfgName, tt.context)
			}
			_, err := LoadConfig(writeConfig(t, connConfig("  context: "+tt.cfgName+"\n")))
			if !errors.Is(err, routes.ErrInvalidConfig) {
				t.Fatalf("LoadConfig error = %v, want a config error", err)
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}
