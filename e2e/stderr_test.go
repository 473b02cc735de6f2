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
	ns := startNATS(t, natsOptions{})
	dead := freePort(t) // nothing listens here
	g := &gateway{httpPort: freePort(t), adminPort: freePort(t)}
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

	// stderr: the write end of a pipe whose read end stays open, unread.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	out := &logBuffer{}
	cmd := exec.Command(bin.natsgate, "serve", "--config", g.ConfigFile)
	cmd.Stdout, cmd.Stderr = out, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close() // the child holds its own copy
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	client := newClient(t)
	client.Timeout = 3 * time.Second
	eventually(t, 20*time.Second, "natsgate /readyz", func() bool {
		return httpStatus(client, g.AdminURL+"/readyz") == 200
	})
	// Each failed request writes an access line (and, until the breaker
	// opens, a warning), a few hundred bytes: 6,000 of them are more than
	// the pipe's 64 KiB and the 1 MiB natsgate keeps waiting for it.
	for i := range 6000 {
		resp, err := client.Get(fmt.Sprintf("%s/gone/%d", g.URL, i))
		if err != nil {
			t.Fatalf("request %d with stderr stalled: %v (a log write holds it)", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode < 500 {
			t.Fatalf("request %d to a dead upstream: %d", i, resp.StatusCode)
		}
	}
	if n := scrape(t, client, g.AdminURL, "natsgate_log_dropped_total"); n < 100 {
		t.Errorf("natsgate_log_dropped_total is %v after 6,000 requests logged to a stalled stderr, want the lost lines counted", n)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("natsgate exited with %d after SIGTERM, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("natsgate still runs 20 s after SIGTERM with its stderr stalled (shutdown_grace is 3s)")
	}
}
