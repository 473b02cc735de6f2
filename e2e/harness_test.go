package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin holds the binaries TestMain built: natsgate, sample-worker,
// nats-server and burst.
var bin struct {
	natsgate, worker, natsServer, burst string
}

func TestMain(m *testing.M) {
	// natsgate reads these when a config leaves the NATS system unnamed;
	// the suite's processes must reach only the servers it starts.
	for _, v := range []string{"NATS_URL", "NATS_CONTEXT"} {
		_ = os.Unsetenv(v)
	}
	dir, err := os.MkdirTemp("", "natsgate-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := 1
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
	} else {
		code = m.Run()
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinaries builds every process the suite runs, once, without -race:
// the children are the product as shipped, and a race-instrumented build
// would only slow them down on a small CI machine.
func buildBinaries(dir string) error {
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"../cmd/natsgate", "../cmd/sample-worker", "./internal/burst",
		"github.com/nats-io/nats-server/v2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	bin.natsgate = filepath.Join(dir, "natsgate")
	bin.worker = filepath.Join(dir, "sample-worker")
	bin.natsServer = filepath.Join(dir, "nats-server")
	bin.burst = filepath.Join(dir, "burst")
	return nil
}

// freePort picks a free loopback port for a child to bind, one no other
// call in this test binary was given (see childPortRange for where, and
// why not port 0's).
func freePort(t testing.TB) int {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	if ports.low == 0 {
		ports.low, ports.high = childPortRange()
		ports.given = map[int]bool{}
	}
	for range 1000 {
		p := ports.low + rand.IntN(ports.high-ports.low)
		if ports.given[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue // someone else's, now
		}
		ln.Close()
		ports.given[p] = true
		return p
	}
	t.Fatalf("no free port in %d-%d after 1000 tries", ports.low, ports.high)
	return 0
}

// ports are the ports freePort has handed out, each once per test binary.
var ports struct {
	sync.Mutex
	low, high int
	given     map[int]bool
}

// childPortRange is where freePort picks: below the kernel's ephemeral
// range, which every outgoing connection and every listener on port 0 (the
// other packages' tests, run alongside) draws from. A child is handed its
// port before it binds it, and a port from that range could be taken in
// between by any connection made on the machine; below it only another
// listener naming it can, which is what the check in freePort rules out.
func childPortRange() (low, high int) {
	low, high = 20000, 32768 // Linux's default ephemeral range starts at 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if first, err := strconv.Atoi(f[0]); err == nil && first > 11000 {
				low, high = max(10000, first-12768), first
			}
		}
	}
	return low, high
}

// logBuffer collects a child's output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a child process, killed when the test ends if it still runs.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	out  *logBuffer
	done chan struct{} // closed once the process has exited
	code int           // exit code once done; -1 when killed by a signal
}

// startProc starts bin with args. Its stdout and stderr are kept and shown
// if the test fails.
func startProc(t testing.TB, name, path string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, out: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	// Should the test binary die, its children die with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if dir := os.Getenv("E2E_LOGS"); dir != "" {
			// Keep every child's whole output for a look afterwards.
			name := strings.NewReplacer("/", "_", " ", "_").Replace(fmt.Sprintf("%s-%s-%d.log", t.Name(), p.name, p.cmd.Process.Pid))
			_ = os.WriteFile(filepath.Join(dir, name), []byte(p.out.String()), 0o644)
		}
		if t.Failed() {
			t.Logf("--- output of %s (pid %d):\n%s", p.name, p.cmd.Process.Pid, tail(p.out.String(), 6000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Running reports whether the process has not exited.
func (p *proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process.
func (p *proc) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && p.Running() {
		p.t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *proc) Kill() {
	if p.Running() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Wait waits up to d for the process to exit and returns its exit code.
func (p *proc) Wait(d time.Duration) (code int, exited bool) {
	select {
	case <-p.done:
		return p.code, true
	case <-time.After(d):
		return 0, false
	}
}

// Memory reads a size field of the process's /proc/PID/status, such as
// VmRSS (resident now) or VmHWM (the peak resident so far), in bytes.
func (p *proc) Memory(field string) int64 {
	p.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatalf("memory of %s: %v", p.name, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == field+":" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				p.t.Fatalf("memory of %s: %q: %v", p.name, line, err)
			}
			return kb << 10
		}
	}
	p.t.Fatalf("memory of %s: no %s in /proc/%d/status", p.name, field, p.cmd.Process.Pid)
	return 0
}

// Output is everything the process wrote so far.
func (p *proc) Output() string { return p.out.String() }

// eventually polls cond every 20ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// within polls cond every 10ms for at most d and returns how long it took,
// or false if it never held.
func within(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > d {
			return time.Since(start), false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// httpStatus GETs url and returns the status, or 0 when no answer came.
func httpStatus(client *http.Client, url string) int {
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// newClient is an HTTP client for one test. Its timeout only catches a
// hang; scenarios check their own, tighter, bounds.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// scrape reads the admin listener's /metrics and sums the samples of name
// whose labels contain every one of labels (written like `route="get"`).
func scrape(t testing.TB, client *http.Client, adminURL, name string, labels ...string) float64 {
	t.Helper()
	v, err := scrapeErr(client, adminURL, name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func scrapeErr(client *http.Client, adminURL, name string, labels ...string) (float64, error) {
	resp, err := client.Get(adminURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("/metrics: %s", resp.Status)
	}
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // a longer name sharing the prefix
		}
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				continue lines
			}
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// exchange is one HTTP request of a load run.
type exchange struct {
	client     int
	start, end time.Time
	status     int    // 0 when no response came
	err        error  // transport error
	retryAfter string // Retry-After of the response
	backend    string // X-Natsgate-Backend of the response: nats or legacy
	body       string
	key        string // the Idempotency-Key sent, if any
}

func (e exchange) took() time.Duration { return e.end.Sub(e.start) }

func (e exchange) String() string {
	if e.err != nil {
		return fmt.Sprintf("client %d at %s: error after %v: %v", e.client, e.start.Format("15:04:05.000"), e.took(), e.err)
	}
	return fmt.Sprintf("client %d at %s: %d after %v: %s", e.client, e.start.Format("15:04:05.000"), e.status, e.took(), strings.TrimSpace(tail(e.body, 200)))
}

// load runs clients that each send requests in a loop, one at a time, until
// Stop, their own count or the deadline.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	log  []exchange
}

// startLoad runs n clients; each sends at most perClient requests, made by
// send, and none runs past maxRun.
func startLoad(n, perClient int, maxRun time.Duration, send func(client, i int) exchange) *load {
	l := &load{stop: make(chan struct{})}
	deadline := time.Now().Add(maxRun)
	for c := 0; c < n; c++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; i < perClient && time.Now().Before(deadline); i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				ex := send(c, i)
				ex.client = c
				l.mu.Lock()
				l.log = append(l.log, ex)
				l.mu.Unlock()
				if ex.status < 200 || ex.status > 299 {
					// Failures come back fast; don't spin on a shared CPU.
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	return l
}

// Stop ends the run, waits for the clients and returns every exchange.
func (l *load) Stop() []exchange {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	return l.Snapshot()
}

// Wait waits up to d for every client to finish its requests and returns
// every exchange; it stops the run if d passes.
func (l *load) Wait(d time.Duration) ([]exchange, bool) {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return l.Snapshot(), true
	case <-time.After(d):
		return l.Stop(), false
	}
}

// Snapshot returns the exchanges finished so far.
func (l *load) Snapshot() []exchange {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]exchange(nil), l.log...)
}

// Count returns how many exchanges finished so far with status.
func (l *load) Count(status int) int {
	n := 0
	for _, e := range l.Snapshot() {
		if e.status == status {
			n++
		}
	}
	return n
}

// do sends one request and records the exchange.
func do(client *http.Client, method, url string, body string, header http.Header) exchange {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ex := exchange{start: time.Now()}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		ex.err, ex.end = err, time.Now()
		return ex
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		ex.err, ex.end = err, time.Now()
		return ex
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	ex.end = time.Now()
	ex.status, ex.body, ex.retryAfter = resp.StatusCode, string(b), resp.Header.Get("Retry-After")
	ex.backend = resp.Header.Get("X-Natsgate-Backend")
	if err != nil {
		ex.err = fmt.Errorf("reading the body: %w", err)
	}
	return ex
}

// rawExchange writes req on a new TCP connection to addr and returns the
// status of the first response (0 if none came within d) and what was read.
func rawExchange(t testing.TB, addr, req string, d time.Duration) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	return readStatus(conn)
}

// readStatus reads one response head from conn.
func readStatus(conn net.Conn) (int, string) {
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var hdr strings.Builder
	_ = resp.Header.Write(&hdr)
	if resp.Close {
		hdr.WriteString("Connection: close\r\n") // net/http keeps it out of Header
	}
	return resp.StatusCode, hdr.String() + "\n" + string(b)
}

// isRefused reports whether err is a refused connection.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
