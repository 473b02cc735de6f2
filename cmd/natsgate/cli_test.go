package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
)

// The CLI as a user meets it: these tests build natsgate once with go build
// and run the binary, so flags, exit codes, standard output and standard
// error are the real ones.

var (
	builtOnce sync.Once
	builtDir  string
	builtBin  string
	builtErr  error
)

// natsgateBin builds the command once per test run and returns the
// binary's path. -buildvcs=auto stamps the VCS revision where git can
// tell it (a checkout's main work tree), whatever GOFLAGS says.
func natsgateBin(t *testing.T) string {
	t.Helper()
	builtOnce.Do(func() {
		builtDir, builtErr = os.MkdirTemp("", "natsgate-cli-")
		if builtErr != nil {
			return
		}
		builtBin = filepath.Join(builtDir, "natsgate")
		out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			builtErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if builtErr != nil {
		t.Fatal(builtErr)
	}
	return builtBin
}

// removeBuilt deletes the binary natsgateBin built, after the tests.
func removeBuilt() {
	if builtDir != "" {
		_ = os.RemoveAll(builtDir)
	}
}

// cliTimeout bounds one run of a command that should end by itself: only a
// hang exceeds it.
const cliTimeout = 60 * time.Second

// runBin runs the binary with args and returns its exit code, standard
// output and standard error.
func runBin(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, natsgateBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case ctx.Err() != nil:
		t.Fatalf("natsgate %s: still running after %v\nstderr:\n%s", strings.Join(args, " "), cliTimeout, stderr.String())
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("natsgate %s: %v", strings.Join(args, " "), err)
	return 0, "", ""
}

// writeConfig writes a config file into a temporary directory.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "natsgate.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// offlineConfig is a valid config for the commands that only read it.
const offlineConfig = `nats:
  url: nats://127.0.0.1:1
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get"}
`

// Every command's flags, so that each -h can be checked to list its own
// and none of another's.
var flagsOfCommand = map[string][]string{
	"serve":    {"--config", "--log-format", "--watch"},
	"validate": {"--config", "--connect", "--strict"},
	"routes":   {"--config"},
	"demo":     {"--traffic", "--log-format"},
	"health":   {"--admin", "--config"},
	"version":  {},
	"rollout":  {"--admin", "--token", "--config", "--json"},
	"report":   {"--admin", "--config", "--format"},
	"import":   {"--upstream", "--subject-prefix", "-o", "--merge"},
}

// TestCommandHelpListsOnlyItsFlags runs each command with -h and --help:
// exit 0, its usage on standard output, its own flags and no other
// command's.
func TestCommandHelpListsOnlyItsFlags(t *testing.T) {
	all := map[string]bool{}
	for _, flags := range flagsOfCommand {
		for _, f := range flags {
			all[f] = true
		}
	}
	for cmd, own := range flagsOfCommand {
		for _, help := range []string{"-h", "--help"} {
			t.Run(cmd+" "+help, func(t *testing.T) {
				args := []string{cmd, help}
				if cmd == "import" {
					args = []string{cmd, "openapi", help}
				}
				code, stdout, stderr := runBin(t, args...)
				if code != 0 {
					t.Fatalf("natsgate %s: exit %d, want 0\nstderr:\n%s", strings.Join(args, " "), code, stderr)
				}
				if !strings.Contains(stdout, "natsgate "+cmd) {
					t.Errorf("natsgate %s: standard output is not its usage:\n%s", strings.Join(args, " "), stdout)
				}
				mine := map[string]bool{}
				for _, f := range own {
					mine[f] = true
					if !hasFlag(stdout, f) {
						t.Errorf("natsgate %s: usage does not list %s:\n%s", strings.Join(args, " "), f, stdout)
					}
				}
				for f := range all {
					if !mine[f] && hasFlag(stdout, f) {
						t.Errorf("natsgate %s: usage lists %s, another command's flag:\n%s", strings.Join(args, " "), f, stdout)
					}
				}
			})
		}
	}
	t.Run("config has -c", func(t *testing.T) {
		for _, cmd := range []string{"serve", "validate", "routes", "health", "rollout", "report"} {
			_, stdout, _ := runBin(t, cmd, "-h")
			if !regexp.MustCompile(`(?m)^\s+-c, --config FILE`).MatchString(stdout) {
				t.Errorf("natsgate %s -h does not list -c, --config FILE:\n%s", cmd, stdout)
			}
		}
	})
	t.Run("natsgate -h", func(t *testing.T) {
		code, stdout, _ := runBin(t, "-h")
		if code != 0 {
			t.Fatalf("natsgate -h: exit %d, want 0", code)
		}
		for cmd := range flagsOfCommand {
			if !strings.Contains(stdout, "natsgate "+cmd) {
				t.Errorf("natsgate -h does not list %s:\n%s", cmd, stdout)
			}
		}
	})
	t.Run("help COMMAND", func(t *testing.T) {
		code, stdout, _ := runBin(t, "help", "validate")
		if code != 0 || !hasFlag(stdout, "--connect") || hasFlag(stdout, "--watch") {
			t.Errorf("natsgate help validate: exit %d, want validate's usage:\n%s", code, stdout)
		}
	})
}

// hasFlag says whether usage text names the flag: "--watch" matches
// "--watch" and "-watch", and "-o" only as a word of its own.
func hasFlag(usage, flag string) bool {
	name := strings.TrimLeft(flag, "-")
	return regexp.MustCompile(`(^|[\s,\[])--?` + regexp.QuoteMeta(name) + `\b([^-]|$)`).MatchString(usage)
}

// TestCommandBadUsageExits2 gives commands what they do not take: a stray
// argument, a flag another command owns, an unknown command. Each exits 2
// with a one-line error first and the command's usage on standard error,
// and nothing on standard output.
func TestCommandBadUsageExits2(t *testing.T) {
	cfg := writeConfig(t, offlineConfig)
	tests := []struct {
		args []string
		want string // in the first line of standard error
	}{
		{[]string{"validate", "--traffic", "--config", cfg}, "-traffic"},
		{[]string{"validate", "--config", cfg, "--watch"}, "-watch"},
		{[]string{"serve", "--config", cfg, "--connect"}, "-connect"},
		{[]string{"routes", "--config", cfg, "--strict"}, "-strict"},
		{[]string{"demo", "--config", cfg}, "-config"},
		{[]string{"health", "--traffic"}, "-traffic"},
		{[]string{"version", "--config", cfg}, "-config"},
		{[]string{"validate", "--config", cfg, "extra"}, `"extra"`},
		{[]string{"serve", "-c", cfg, "extra"}, `"extra"`},
		{[]string{"routes", cfg}, cfg},
		{[]string{"demo", "now"}, `"now"`},
		{[]string{"health", "127.0.0.1:9090"}, `"127.0.0.1:9090"`},
		{[]string{"version", "now"}, `"now"`},
		{[]string{"report", "--traffic"}, "-traffic"},
		{[]string{"rollout", "status", "r1", "--watch"}, "-watch"},
		{[]string{"import", "openapi", "spec.yaml", "--watch"}, "-watch"},
		{[]string{"validate"}, "--config"},
		{[]string{"validate", "--strict", "-c", cfg}, "--connect"},
		{[]string{"frobnicate"}, `"frobnicate"`},
		{[]string{}, "command"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runBin(t, tt.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if stdout != "" {
				t.Errorf("standard output is not empty:\n%s", stdout)
			}
			first, rest, _ := strings.Cut(stderr, "\n")
			if !strings.HasPrefix(first, "natsgate") || !strings.Contains(first, tt.want) {
				t.Errorf("first line of standard error %q: want an error naming %s", first, tt.want)
			}
			if !strings.Contains(rest, "Usage") {
				t.Errorf("standard error has no usage after the error:\n%s", stderr)
			}
		})
	}
}

// TestConfigShortFlag: -c is --config, as with nats-server, and the long
// spellings of every existing invocation still work.
func TestConfigShortFlag(t *testing.T) {
	cfg := writeConfig(t, offlineConfig)
	for _, args := range [][]string{
		{"validate", "-c", cfg},
		{"validate", "--config", cfg},
		{"validate", "-config", cfg},
		{"validate", "--config=" + cfg},
		{"validate", "-c=" + cfg},
	} {
		code, stdout, stderr := runBin(t, args...)
		if code != 0 || !strings.Contains(stdout, cfg+": ok, 1 routes") {
			t.Errorf("natsgate %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}

// builtInfo reads the module version and VCS revision the toolchain
// recorded in the binary, with go version -m: what natsgate version must
// print.
func builtInfo(t *testing.T, bin string) (version, revision string) {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	revision = "unknown"
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/natsgate/natsgate":
			version = f[2]
		case len(f) >= 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision="):
			revision = strings.TrimPrefix(f[1], "vcs.revision=")
		}
	}
	if version == "" {
		t.Fatalf("go version -m names no main module version:\n%s", out)
	}
	return version, revision
}

// TestVersion: natsgate version and natsgate --version print the module
// version and the VCS revision the binary was built from, exit 0.
func TestVersion(t *testing.T) {
	bin := natsgateBin(t)
	version, revision := builtInfo(t, bin)
	t.Logf("built %s, revision %s", version, revision)
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		code, stdout, stderr := runBin(t, args...)
		if code != 0 {
			t.Errorf("natsgate %s: exit %d\nstderr:\n%s", args[0], code, stderr)
		}
		if !strings.HasPrefix(stdout, "natsgate "+version) || !strings.Contains(stdout, revision) {
			t.Errorf("natsgate %s printed %q: want the version %s and the revision %s", args[0], stdout, version, revision)
		}
	}
}

// gatewayProcess is natsgate serve running as a process of its own.
type gatewayProcess struct {
	cmd    *exec.Cmd
	lines  chan map[string]any // the JSON log lines of standard error
	stderr *lockedBuffer
	done   chan struct{}
	code   int
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServe runs natsgate with args and reads its JSON log lines; the
// process is killed at cleanup if it is still running.
func startServe(t *testing.T, args ...string) *gatewayProcess {
	t.Helper()
	cmd := exec.Command(natsgateBin(t), args...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProcess{cmd: cmd, lines: make(chan map[string]any, 1024), stderr: &lockedBuffer{}, done: make(chan struct{})}
	go func() {
		defer close(g.lines)
		sc := bufio.NewScanner(io.TeeReader(pipe, g.stderr))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				select {
				case g.lines <- line:
				default: // the test reads only the first lines
				}
			}
		}
		_ = cmd.Wait()
		g.code = cmd.ProcessState.ExitCode()
		close(g.done)
	}()
	t.Cleanup(func() {
		select {
		case <-g.done:
		default:
			_ = cmd.Process.Kill()
			<-g.done
		}
	})
	return g
}

// waitFor returns the first log line whose msg is msg, failing the test
// if the process ends or a generous deadline passes first.
func (g *gatewayProcess) waitFor(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.After(cliTimeout)
	for {
		select {
		case line, ok := <-g.lines:
			if !ok {
				t.Fatalf("natsgate ended before logging %q\nstderr:\n%s", msg, g.stderr.String())
			}
			if line["msg"] == msg {
				return line
			}
		case <-deadline:
			t.Fatalf("natsgate did not log %q within %v\nstderr:\n%s", msg, cliTimeout, g.stderr.String())
		}
	}
}

// wait waits for the process to exit and returns its exit code.
func (g *gatewayProcess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-g.done:
		return g.code
	case <-time.After(cliTimeout):
		t.Fatalf("natsgate still running %v later\nstderr:\n%s", cliTimeout, g.stderr.String())
	}
	return 0
}

// serveConfig is a config for natsgate serve on NATS at natsURL, its
// listeners on free loopback ports.
func serveConfig(natsURL string) string {
	return fmt.Sprintf(`nats:
  url: %s
http:
  listen: 127.0.0.1:0
  shutdown_grace: 5s
admin:
  listen: 127.0.0.1:0
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get"}
  - name: post-event
    method: POST
    path: /events
    nats: {subject: events, pattern: publish}
`, natsURL)
}

// TestServeLogsStartAndStop runs natsgate serve: one start-up line names
// the version, both listeners, the NATS server (its password hidden) and
// the number of routes; SIGTERM is logged as the signal, the drain and the
// stop, and the exit is 0.
func TestServeLogsStartAndStop(t *testing.T) {
	bin := natsgateBin(t)
	version, _ := builtInfo(t, bin)
	opts := natstest.Options(t)
	opts.Username, opts.Password = "gate", "s3cret"
	ns := natstest.RunServerWith(t, opts)
	url := fmt.Sprintf("nats://gate:s3cret@%s", ns.Addr().String())
	g := startServe(t, "serve", "-c", writeConfig(t, serveConfig(url)), "--log-format", "json")

	up := g.waitFor(t, "natsgate serving")
	if up["version"] != version {
		t.Errorf("start-up line version = %v, want %s", up["version"], version)
	}
	for _, key := range []string{"http", "admin"} {
		if s, _ := up[key].(string); !strings.HasPrefix(s, "127.0.0.1:") {
			t.Errorf("start-up line %s = %v, want the listener's address", key, up[key])
		}
	}
	nats, _ := up["nats"].(string)
	if !strings.Contains(nats, ns.Addr().String()) || strings.Contains(nats, "s3cret") {
		t.Errorf("start-up line nats = %q, want the server %s with its password hidden", nats, ns.Addr())
	}
	if up["routes"] != float64(2) {
		t.Errorf("start-up line routes = %v, want 2", up["routes"])
	}
	if strings.Contains(g.stderr.String(), "s3cret") {
		t.Errorf("the log shows the NATS password:\n%s", g.stderr.String())
	}

	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopping := g.waitFor(t, "stopping")
	if stopping["signal"] != syscall.SIGTERM.String() {
		t.Errorf("stopping line signal = %v, want %q", stopping["signal"], syscall.SIGTERM.String())
	}
	g.waitFor(t, "draining")
	g.waitFor(t, "stopped")
	if code := g.wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0\nstderr:\n%s", code, g.stderr.String())
	}
}

// TestHealth runs natsgate health against a real gateway: 0 while /readyz
// says ready, 1 once NATS is gone and it says not ready, 1 when nothing
// listens at the address.
func TestHealth(t *testing.T) {
	ns := natstest.RunServer(t)
	g := startServe(t, "serve", "--config", writeConfig(t, serveConfig(ns.ClientURL())), "--log-format", "json")
	admin, _ := g.waitFor(t, "natsgate serving")["admin"].(string)

	code, stdout, stderr := runBin(t, "health", "--admin", admin)
	if code != 0 {
		t.Fatalf("natsgate health --admin %s while ready: exit %d\nstdout:\n%s\nstderr:\n%s", admin, code, stdout, stderr)
	}
	code, _, stderr = runBin(t, "health", "--admin", "http://"+admin)
	if code != 0 {
		t.Errorf("natsgate health --admin http://%s while ready: exit %d\nstderr:\n%s", admin, code, stderr)
	}

	ns.Shutdown()
	natstest.Eventually(t, cliTimeout, "/readyz to say not ready", func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	code, _, stderr = runBin(t, "health", "--admin", admin)
	if code != 1 || !strings.Contains(stderr, "not ready") || !strings.Contains(stderr, "NATS") {
		t.Errorf("natsgate health while NATS is gone: exit %d, want 1 saying why\nstderr:\n%s", code, stderr)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	code, _, stderr = runBin(t, "health", "--admin", closed)
	if code != 1 || !strings.Contains(stderr, closed) {
		t.Errorf("natsgate health with nothing at %s: exit %d, want 1 naming the address\nstderr:\n%s", closed, code, stderr)
	}
}

// TestEmbeddedNATSPortBusy: with nats.embedded.listen on a port already in
// use, natsgate serve exits non-zero and says which address it could not
// listen on (it waited 10s, then said the server "did not become ready").
func TestEmbeddedNATSPortBusy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	cfg := writeConfig(t, fmt.Sprintf(`nats:
  embedded:
    listen: %s
http:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
routes:
  - name: get-user
    path: /users/{id}
    nats: {subject: "users.{id}.get"}
`, addr))
	start := time.Now()
	code, _, stderr := runBin(t, "serve", "--config", cfg)
	t.Logf("exit %d after %v", code, time.Since(start).Round(time.Millisecond))
	if code == 0 {
		t.Fatalf("natsgate serve on a busy embedded NATS port exited 0\nstderr:\n%s", stderr)
	}
	if !strings.Contains(stderr, addr) {
		t.Errorf("the error does not name the busy address %s:\n%s", addr, stderr)
	}
}

// TestEmbeddedNATSServes: with a free nats.embedded.listen the embedded
// server starts, the start-up line names it, and SIGTERM stops all of it
// with exit 0.
func TestEmbeddedNATSServes(t *testing.T) {
	cfg := writeConfig(t, `nats:
  embedded:
    listen: 127.0.0.1:0
http:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
routes:
  - name: get-user
    path: /users/{id}
    nats: {subject: "users.{id}.get"}
`)
	g := startServe(t, "serve", "-c", cfg, "--log-format", "json")
	up := g.waitFor(t, "natsgate serving")
	if nats, _ := up["nats"].(string); !strings.HasPrefix(nats, "nats://127.0.0.1:") {
		t.Errorf("start-up line nats = %v, want the embedded server's URL", up["nats"])
	}
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	g.waitFor(t, "stopped")
	if code := g.wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0\nstderr:\n%s", code, g.stderr.String())
	}
}
