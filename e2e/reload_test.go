package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// blockedOnFIFO counts the process's threads blocked opening a FIFO that
// has no writer: the kernel shows such a thread waiting in
// wait_for_partner. It is how the tests see that a reload is being held,
// without touching the FIFO (opening it would let the reload go on).
func blockedOnFIFO(t testing.TB, pid int) int {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range tasks {
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == "wait_for_partner" {
			n++
		}
	}
	return n
}

// holdReloads replaces the gateway's config file with a named pipe: a
// reload then blocks opening it until something opens it for writing.
func holdReloads(t *testing.T, g *gateway) {
	t.Helper()
	if err := os.Remove(g.ConfigFile); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(g.ConfigFile, 0o600); err != nil {
		t.Fatal(err)
	}
}

// feedFIFO lets one held reload read text from the pipe.
func feedFIFO(t *testing.T, path, text string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString(text)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reload opened the pipe within 10s")
	}
}

// Issue 9, fault 10: a reload stuck reading its file (here a named pipe
// nobody writes) must not delay SIGTERM: the signal loop does not wait for
// reloads.
func TestSIGTERMDuringStuckReload(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	g := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: requestRoute})
	holdReloads(t, g)

	g.Signal(syscall.SIGHUP)
	pid := g.cmd.Process.Pid
	eventually(t, 10*time.Second, "the reload to block opening the pipe", func() bool { return blockedOnFIFO(t, pid) == 1 })

	signalled := time.Now()
	g.Signal(syscall.SIGTERM)
	code, exited := g.Wait(10 * time.Second)
	if !exited {
		t.Fatalf("natsgate still running %v after SIGTERM, behind a stuck reload", time.Since(signalled))
	}
	if code != 0 {
		t.Errorf("natsgate exited with %d after SIGTERM, want 0", code)
	}
	t.Logf("exited %v after SIGTERM", time.Since(signalled))
}

// SIGHUPs that come while a reload runs do not start reloads beside it:
// they fold into one more reload once it is done.
func TestSIGHUPsDuringReloadFoldIntoOne(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	cfg := gatewayConfig{NATSURL: ns.URL(), Body: requestRoute}
	g := startGateway(t, cfg)
	client := newClient(t)
	holdReloads(t, g)
	pid := g.cmd.Process.Pid

	g.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the reload to block opening the pipe", func() bool { return blockedOnFIFO(t, pid) == 1 })
	// One at a time: the kernel merges a signal sent while the same one is
	// still pending.
	for i := 1; i <= 3; i++ {
		g.Signal(syscall.SIGHUP)
		eventually(t, 10*time.Second, fmt.Sprintf("natsgate to say SIGHUP %d waits for the running reload", i), func() bool {
			return strings.Count(g.Output(), "config reload still running") == i
		})
	}
	if n := blockedOnFIFO(t, pid); n != 1 {
		t.Fatalf("%d reloads reading the file at once, want 1", n)
	}

	// Let the held reload read the file: the one folded reload follows it,
	// and blocks on the pipe in turn; then let that one read it too.
	good := g.render(cfg)
	feedFIFO(t, g.ConfigFile, good)
	eventually(t, 10*time.Second, "the first reload to succeed", func() bool {
		return scrape(t, client, g.AdminURL, "natsgate_config_reloads_total", `result="ok"`) == 1
	})
	eventually(t, 10*time.Second, "the folded reload to block opening the pipe", func() bool { return blockedOnFIFO(t, pid) == 1 })
	feedFIFO(t, g.ConfigFile, good)
	eventually(t, 10*time.Second, "the folded reload to succeed", func() bool {
		return scrape(t, client, g.AdminURL, "natsgate_config_reloads_total", `result="ok"`) == 2
	})

	// Nothing else is waiting: with a regular file again, one SIGHUP is
	// one reload.
	if err := os.Remove(g.ConfigFile); err != nil {
		t.Fatal(err)
	}
	g.WriteConfig(good)
	g.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "a third reload", func() bool {
		return scrape(t, client, g.AdminURL, "natsgate_config_reloads_total", `result="ok"`) == 3
	})
	g.Signal(syscall.SIGTERM)
	if code, exited := g.Wait(10 * time.Second); !exited || code != 0 {
		t.Errorf("natsgate: exited %v, code %d after SIGTERM; want a prompt 0", exited, code)
	}
}

// A SIGHUP with a hostile file fails at once and logs one short line: a
// few hundred bytes of nested merge keys, or a file of many problems with
// long values, once took minutes and logged hundreds of megabytes.
func TestReloadOfHostileFileLogsOneShortLine(t *testing.T) {
	laughs, err := os.ReadFile("../routes/testdata/expansion/merge-keys.yaml")
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 10_000)
	var many strings.Builder
	many.WriteString("routes:\n")
	for i := range 100 {
		fmt.Fprintf(&many, "  - name: r%03d%s\n    method: M%s\n    path: p%s\n    nats: {subject: a%d}\n", i, long, long, long, i)
	}

	ns := startNATS(t, natsOptions{})
	cfg := gatewayConfig{NATSURL: ns.URL(), Body: requestRoute}
	g := startGateway(t, cfg)
	client := newClient(t)
	for i, bad := range []string{string(laughs), g.render(gatewayConfig{NATSURL: ns.URL(), Body: many.String()})} {
		g.WriteConfig(bad)
		g.Signal(syscall.SIGHUP)
		eventually(t, 10*time.Second, fmt.Sprintf("reload error %d to be counted", i+1), func() bool {
			return scrape(t, client, g.AdminURL, "natsgate_config_reloads_total", `result="error"`) == float64(i+1)
		})
		// The counter moves before the log line has passed natsgate's
		// log writer and the pipe: wait for the line.
		var failed []string
		eventually(t, 10*time.Second, fmt.Sprintf("reload failure %d logged", i+1), func() bool {
			failed = nil
			for _, line := range strings.Split(g.Output(), "\n") {
				if strings.Contains(line, "config reload failed") {
					failed = append(failed, line)
				}
			}
			return len(failed) >= i+1
		})
		if len(failed) != i+1 {
			t.Fatalf("%d reload failures logged, want %d", len(failed), i+1)
		}
		if n := len(failed[i]); n > 8<<10 {
			t.Errorf("reload failure %d logged in %d bytes, want at most 8 KiB: %.500s", i+1, n, failed[i])
		}
		if !strings.Contains(failed[i], g.ConfigFile+":") {
			t.Errorf("reload failure %d does not name the file: %.500s", i+1, failed[i])
		}
		t.Logf("reload failure %d: %d bytes", i+1, len(failed[i]))
	}
	if e := do(client, "GET", g.URL+"/users/1", "", nil); e.status == 404 {
		t.Errorf("the old routes stopped serving after the failed reloads: %v", e)
	}
	g.Signal(syscall.SIGTERM)
	if code, exited := g.Wait(10 * time.Second); !exited || code != 0 {
		t.Errorf("natsgate: exited %v, code %d after SIGTERM; want a prompt 0", exited, code)
	}
}
