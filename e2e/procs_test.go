package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// natsServer is a nats-server process. Restart brings it back on the same
// ports and store directory.
type natsServer struct {
	t       testing.TB
	name    string
	port    int
	monitor int
	conf    string
	proc    *proc
}

// natsOptions shape a nats-server's config file.
type natsOptions struct {
	name      string
	jetstream bool
	// extra is appended to the config file verbatim (auth, tls, cluster).
	extra string
	// port, when not 0, is the client port to use (for cluster routes
	// written before the server starts).
	port int
}

// startNATS writes a config file and starts a nats-server on free loopback
// ports, waiting until its /healthz says it is ready.
func startNATS(t testing.TB, o natsOptions) *natsServer {
	t.Helper()
	ns := newNATS(t, o)
	ns.Start()
	return ns
}

// newNATS writes a nats-server's config file; Start runs it.
func newNATS(t testing.TB, o natsOptions) *natsServer {
	t.Helper()
	if o.name == "" {
		o.name = "n1"
	}
	dir := t.TempDir()
	ns := &natsServer{t: t, name: o.name, port: o.port, monitor: freePort(t), conf: filepath.Join(dir, "nats.conf")}
	if ns.port == 0 {
		ns.port = freePort(t)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n", o.name, ns.port, ns.monitor)
	if o.jetstream {
		fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n", filepath.Join(dir, "js"))
	}
	b.WriteString(o.extra)
	if err := os.WriteFile(ns.conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return ns
}

// URL is the client URL.
func (ns *natsServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", ns.port) }

// Start starts the process (again) and waits until it is ready.
func (ns *natsServer) Start() {
	ns.t.Helper()
	ns.StartNoWait()
	ns.WaitReady()
}

// StartNoWait starts the process without waiting for readiness (a cluster
// node is only healthy once its peers are up).
func (ns *natsServer) StartNoWait() {
	ns.t.Helper()
	ns.proc = startProc(ns.t, "nats-server "+ns.name, bin.natsServer, "-c", ns.conf)
}

// WaitReady waits until /healthz answers 200: the server accepts clients
// and, with JetStream, its JetStream is current.
func (ns *natsServer) WaitReady() {
	ns.t.Helper()
	client := &http.Client{Timeout: time.Second}
	eventually(ns.t, 30*time.Second, "nats-server "+ns.name+" /healthz", func() bool {
		if !ns.proc.Running() {
			ns.t.Fatalf("nats-server %s exited:\n%s", ns.name, ns.proc.Output())
		}
		return httpStatus(client, fmt.Sprintf("http://127.0.0.1:%d/healthz", ns.monitor)) == 200
	})
}

// Kill kills the server with SIGKILL: no lame-duck mode, no flush.
func (ns *natsServer) Kill() { ns.proc.Kill() }

// Pause stops the server with SIGSTOP: its process and sockets stay, but
// it answers nothing, as a server hung on a stuck disk or a frozen VM.
func (ns *natsServer) Pause() { ns.proc.Signal(syscall.SIGSTOP) }

// Resume lets a paused server go on with SIGCONT.
func (ns *natsServer) Resume() { ns.proc.Signal(syscall.SIGCONT) }

// MonitorURL is the base URL of the monitoring endpoints.
func (ns *natsServer) MonitorURL() string { return fmt.Sprintf("http://127.0.0.1:%d", ns.monitor) }

// gatewayConfig is a natsgate config file with the process's addresses
// filled in by startGateway.
type gatewayConfig struct {
	// NATSURL is nats.url.
	NATSURL string
	// NATS, HTTP and Admin are extra lines under those sections, indented
	// by two spaces.
	NATS, HTTP, Admin string
	// Body is the rest of the file: defaults, upstreams, routes.
	Body string
}

// gateway is a natsgate serve process.
type gateway struct {
	*proc
	URL, AdminURL string
	Addr          string // public host:port
	ConfigFile    string
	httpPort      int
	adminPort     int
}

func (g *gateway) render(cfg gatewayConfig) string {
	return fmt.Sprintf(`nats:
  url: %q
  name: natsgate-e2e
%s
http:
  listen: 127.0.0.1:%d
%s
admin:
  listen: 127.0.0.1:%d
%s
log:
  format: json
%s
`, cfg.NATSURL, cfg.NATS, g.httpPort, cfg.HTTP, g.adminPort, cfg.Admin, cfg.Body)
}

// startGateway writes the config and runs natsgate serve on it, waiting
// until /readyz answers 200.
func startGateway(t testing.TB, cfg gatewayConfig) *gateway {
	t.Helper()
	g := launchGateway(t, cfg)
	client := &http.Client{Timeout: time.Second}
	eventually(t, 20*time.Second, "natsgate /readyz", func() bool {
		if !g.Running() {
			t.Fatalf("natsgate exited with %d:\n%s", g.code, g.Output())
		}
		return httpStatus(client, g.AdminURL+"/readyz") == 200
	})
	return g
}

// launchGateway starts natsgate serve without waiting for it.
func launchGateway(t testing.TB, cfg gatewayConfig) *gateway {
	t.Helper()
	g := &gateway{httpPort: freePort(t), adminPort: freePort(t)}
	g.ConfigFile = filepath.Join(t.TempDir(), "natsgate.yaml")
	g.WriteConfig(g.render(cfg))
	g.Addr = fmt.Sprintf("127.0.0.1:%d", g.httpPort)
	g.URL = "http://" + g.Addr
	g.AdminURL = fmt.Sprintf("http://127.0.0.1:%d", g.adminPort)
	g.proc = startProc(t, "natsgate", bin.natsgate, "serve", "--config", g.ConfigFile)
	return g
}

// WriteConfig replaces the config file (for a reload).
func (g *gateway) WriteConfig(text string) {
	if err := os.WriteFile(g.ConfigFile, []byte(text), 0o600); err != nil {
		g.proc.t.Fatal(err)
	}
}

// worker is a sample-worker process.
type worker struct{ *proc }

// startWorker runs a sample worker on natsURL and waits until it says it
// serves. extra are more sample-worker flags (like --reconnect-wait).
func startWorker(t testing.TB, natsURL, name string, slow time.Duration, extra ...string) *worker {
	t.Helper()
	args := append([]string{"--nats", natsURL, "--name", name, "--slow", slow.String()}, extra...)
	w := &worker{startProc(t, "sample-worker "+name, bin.worker, args...)}
	eventually(t, 10*time.Second, "sample-worker "+name+" to serve", func() bool {
		if !w.Running() {
			t.Fatalf("sample-worker %s exited:\n%s", name, w.Output())
		}
		return strings.Contains(w.Output(), "serving on")
	})
	return w
}
