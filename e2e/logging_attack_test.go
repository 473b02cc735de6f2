package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fullPipe is a pipe whose buffer is already full: a write to w blocks
// until someone reads r. It is the stderr a supervisor hands to a gateway
// it restarts when the log shipper reading that pipe hung while the last
// instance filled it.
func fullPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if err := w.SetWriteDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for i := range chunk {
		chunk[i] = 'x'
	}
	for filled := 0; ; {
		n, err := w.Write(chunk)
		filled += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if filled == 0 {
				t.Fatal("the pipe took nothing")
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if filled > 16<<20 {
			t.Fatal("the pipe took 16 MiB and is not full")
		}
	}
	return r, w
}

// TestServeThatCannotStartExitsPromptlyWithAFullStderr: natsgate serve
// that cannot start (a config error, no --config, NATS unreachable) must
// say why and exit non-zero, and it must do so promptly even when its
// stderr is a pipe nobody reads: a supervisor that restarts a gateway
// waits for that exit, and one that never comes is an outage nobody is
// told about. The wait for the last lines is bounded by 2 s
// (docs/operations.md, "Logs"); this test allows 10 s, so that only a
// hang fails it. When the reader comes back within the bound, the error
// reaches it, file and line included.
func TestServeThatCannotStartExitsPromptlyWithAFullStderr(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`nats:
  url: "nats://127.0.0.1:1"
upstreams:
  legacy: {url: "http://127.0.0.1:1"}
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    upstream: nope
`), 0o600); err != nil {
		t.Fatal(err)
	}
	unreachable := filepath.Join(dir, "unreachable.yaml")
	if err := os.WriteFile(unreachable, []byte(fmt.Sprintf(`nats:
  url: "nats://127.0.0.1:%d"
http:
  listen: 127.0.0.1:%d
admin:
  listen: 127.0.0.1:%d
upstreams:
  legacy: {url: "http://127.0.0.1:1"}
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    upstream: legacy
`, freePort(t), freePort(t), freePort(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string // what the error says, when the reader comes back
	}{
		{"config error", []string{"serve", "-c", bad}, 1, bad + ":9:"},
		{"no config", []string{"serve"}, 2, "--config FILE is required"},
		{"NATS unreachable", []string{"serve", "-c", unreachable}, 1, "natsgate cannot start"},
	} {
		t.Run(tc.name+"/reader never comes back", func(t *testing.T) {
			_, w := fullPipe(t)
			code, took := runWithStderr(t, w, 10*time.Second, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			t.Logf("exited %d after %v with stderr full", code, took.Round(time.Millisecond))
		})
		t.Run(tc.name+"/reader comes back", func(t *testing.T) {
			r, w := fullPipe(t)
			read := make(chan string, 1)
			go func() {
				time.Sleep(300 * time.Millisecond) // the child starts meanwhile
				b, _ := io.ReadAll(r)
				read <- strings.TrimLeft(string(b), "x")
			}()
			code, _ := runWithStderr(t, w, 10*time.Second, tc.args...)
			w.Close() // the child's copy is gone with it: the reader gets EOF
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			select {
			case out := <-read:
				if !strings.Contains(out, tc.says) {
					t.Errorf("stderr does not say %q:\n%s", tc.says, tail(out, 2000))
				}
			case <-time.After(10 * time.Second):
				t.Fatal("stderr never ended")
			}
		})
	}
}

// runWithStderr runs natsgate with args and stderr, and returns its exit
// code and how long it ran; it fails the test if it still runs after
// limit.
func runWithStderr(t *testing.T, stderr *os.File, limit time.Duration, args ...string) (code int, took time.Duration) {
	t.Helper()
	cmd := exec.Command(bin.natsgate, args...)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	select {
	case <-exited:
		return cmd.ProcessState.ExitCode(), time.Since(start)
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("natsgate %s still runs %v after it started, with its stderr full", strings.Join(args, " "), limit)
		return 0, 0
	}
}
