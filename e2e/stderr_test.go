package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestStalledStderrHoldsUpNoRequestAndNoStop: natsgate logs on a request's
// path (an upstream that failed, a breaker that opened) and on its way out
// ("stopping"). When its stderr stops being read (a log shipper that hung,
// a container runtime that stopped reading the pipe), the pipe fills and
// every write to it blocks: a log written on a request's goroutine then
// holds that request, its breaker, and a SIGTERM for ever. Here stderr is
// a pipe that is held open and never read, every request fails against a
// dead upstream and is logged, and every one must still be answered, the
// lost lines counted, and SIGTERM must still stop the process.
func TestStalledStderrHoldsUpNoRequestAndNoStop(t *testing.T) {
	// stderr: the write end of a pipe whose read end stays open, unread.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	g, cmd, exited := launchGatewayWithStderr(t, w)
	w.Close() // the child holds its own copy
	// Each failed request writes an access line (and, until the breaker
	// opens, a warning), a few hundred bytes: 6,000 of them are more than
	// the pipe's 64 KiB and the 1 MiB natsgate keeps waiting for it.
	failAndStop(t, g, cmd, exited, 6000, "stalled")
}

// TestClosedStderrDoesNotEndTheGateway: a stderr whose reader went away
// (a log shipper restarted, the pipe closed) makes every write to it fail
// with EPIPE, and Go ends a process that writes to a broken pipe on
// descriptor 1 or 2 unless it asked for SIGPIPE. natsgate must keep
// serving, count the lines it could not write, and stop on SIGTERM.
func TestClosedStderrDoesNotEndTheGateway(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	g, cmd, exited := launchGatewayWithStderr(t, w)
	w.Close()
	r.Close() // the reader goes away: writes to the child's stderr break
	failAndStop(t, g, cmd, exited, 300, "closed")
}

// failAndStop sends n requests that fail and are logged, checks that each
// is answered and the lines lost on a stderr that is (what) are counted,
// then stops natsgate with SIGTERM and checks that it exits 0 within
// bounds.
func failAndStop(t *testing.T, g *gateway, cmd *exec.Cmd, exited chan struct{}, n int, what string) {
	t.Helper()
	client := newClient(t)
	client.Timeout = 3 * time.Second
	for i := range n {
		select {
		case <-exited:
			t.Fatalf("natsgate exited (%v) at request %d with its stderr %s", cmd.ProcessState, i, what)
		default:
		}
		resp, err := client.Get(fmt.Sprintf("%s/gone/%d", g.URL, i))
		if err != nil {
			t.Fatalf("request %d with stderr %s: %v", i, what, err)
		}
		resp.Body.Close()
		if resp.StatusCode < 500 {
			t.Fatalf("request %d to a dead upstream: %d", i, resp.StatusCode)
		}
	}
	eventually(t, 15*time.Second, "lost log lines counted", func() bool {
		v, err := scrapeErr(client, g.AdminURL, "natsgate_log_dropped_total")
		return err == nil && v >= 100
	})
	stopCleanly(t, cmd, exited, "with its stderr "+what)
}

// stopCleanly sends natsgate (cmd, whose end closes exited) SIGTERM and
// wants it to exit 0 within 20 s, its shutdown grace being 3 s; when
// names the circumstances for the failure message.
func stopCleanly(t *testing.T, cmd *exec.Cmd, exited chan struct{}, when string) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("natsgate exited with %d after SIGTERM, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("natsgate still runs 20 s after SIGTERM %s (shutdown_grace is 3s)", when)
	}
}

// launchGatewayWithStderr runs natsgate serve with stderr, one route to
// an upstream nobody listens on (every request fails and is logged), a
// shutdown grace of 3s, and waits until it is ready. exited is closed
// when the process has ended.
func launchGatewayWithStderr(t *testing.T, stderr *os.File) (g *gateway, cmd *exec.Cmd, exited chan struct{}) {
	t.Helper()
	ns := startNATS(t, natsOptions{})
	dead := freePort(t) // nothing listens here
	g = &gateway{httpPort: freePort(t), adminPort: freePort(t)}
	g.ConfigFile = filepath.Join(t.TempDir(), "natsgate.yaml")
	g.Addr = fmt.Sprintf("127.0.0.1:%d", g.httpPort)
	g.URL = "http://" + g.Addr
	g.AdminURL = fmt.Sprintf("http://127.0.0.1:%d", g.adminPort)
	if err := os.WriteFile(g.ConfigFile, []byte(g.render(gatewayConfig{
		NATSURL: ns.URL(),
		HTTP:    "  shutdown_grace: 3s",
		Body: fmt.Sprintf(`upstreams:
  dead: {url: "http://127.0.0.1:%d", timeout: 1s}
routes:
  - name: gone
    method: GET
    path: /gone/{id}
    upstream: dead
`, dead),
	})), 0o600); err != nil {
		t.Fatal(err)
	}

	out := &logBuffer{}
	cmd = exec.Command(bin.natsgate, "serve", "--config", g.ConfigFile)
	cmd.Stdout, cmd.Stderr = out, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	client := newClient(t)
	eventually(t, 20*time.Second, "natsgate /readyz", func() bool {
		return httpStatus(client, g.AdminURL+"/readyz") == 200
	})
	return g, cmd, exited
}
