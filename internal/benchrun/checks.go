package benchrun

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// InboxCheck is what the nats-server saw of natsgate's connection while
// many requests waited for their replies.
type InboxCheck struct {
	InFlight     int    // requests held by the worker at once
	Subs         uint32 // subscriptions on natsgate's connection then
	SubsBefore   uint32 // and before the requests
	Answered     int    // requests answered 200 once released
	Connections  int    // natsgate's connections to the server
	Subjects     []string
	HeldDuration time.Duration
}

// inboxCheck holds n requests in flight through natsgate against a worker
// that does not answer until released, and reads natsgate's connection from
// the server's monitoring: with nats.go's muxed inbox the subscription count
// stays the same however many requests wait.
func inboxCheck(ctx context.Context, r *rig, n int) (*InboxCheck, error) {
	conns := func() ([]*server.ConnInfo, error) {
		cz, err := r.ns.Connz(&server.ConnzOptions{Subscriptions: true, Limit: 10000})
		if err != nil {
			return nil, err
		}
		var out []*server.ConnInfo
		for _, c := range cz.Conns {
			if c.Name == r.gwName {
				out = append(out, c)
			}
		}
		return out, nil
	}
	before, err := conns()
	if err != nil || len(before) == 0 {
		return nil, fmt.Errorf("natsgate's connection is not in connz (%v)", err)
	}
	ic := &InboxCheck{InFlight: n, SubsBefore: before[0].NumSubs}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0, DisableCompression: true}, Timeout: 60 * time.Second}
	defer client.CloseIdleConnections()
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("%s/hold/%d", r.gwURL, i))
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok.Add(1)
			}
		}()
	}
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for r.holds.holding.Load() < int64(n) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.holds.release()
			wg.Wait()
			return nil, fmt.Errorf("only %d of %d requests reached the worker", r.holds.holding.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	during, err := conns()
	if err != nil {
		r.holds.release()
		wg.Wait()
		return nil, err
	}
	ic.HeldDuration = time.Since(start)
	ic.Connections = len(during)
	for _, c := range during {
		ic.Subs += c.NumSubs
		ic.Subjects = append(ic.Subjects, c.Subs...)
	}
	r.holds.release()
	wg.Wait()
	ic.Answered = int(ok.Load())
	return ic, nil
}

// MemoryCheck is the resident memory of a natsgate process before and
// after it holds many idle keep-alive connections.
type MemoryCheck struct {
	Conns                 int
	Opened                int
	RSSBefore, RSSAfter   int64 // bytes
	HeapBefore, HeapAfter int64 // the child's Go heap in use, bytes
	// RSSSettled and HeapSettled are after a GC that returns free memory
	// to the OS, as an idle natsgate reaches by itself within minutes.
	RSSSettled, HeapSettled int64
	// HeapProfile is the child's heap profile with the connections open.
	HeapProfile string
}

// PerConn is the memory each idle connection costs.
func (m *MemoryCheck) PerConn() int64 {
	if m.Opened == 0 {
		return 0
	}
	return (m.RSSAfter - m.RSSBefore) / int64(m.Opened)
}

// PerConnSettled is PerConn once settled.
func (m *MemoryCheck) PerConnSettled() int64 {
	if m.Opened == 0 {
		return 0
	}
	return (m.RSSSettled - m.RSSBefore) / int64(m.Opened)
}

// childEnv marks the benchmark's own process started as natsgate alone,
// for the memory check: the load generator's connections must not count
// in the RSS measured.
const childEnv = "NATSGATE_BENCH_CHILD"

// IsChild reports whether this process is the memory check's natsgate.
func IsChild() bool { return os.Getenv(childEnv) != "" }

// ServeChild runs natsgate for the memory check: it prints its address,
// answers "rss" on stdin with its VmRSS and heap, and stops when stdin
// closes. The parent passes NATS and the legacy URL in the environment.
func ServeChild() error {
	natsURL, legacyURL, _ := strings.Cut(os.Getenv(childEnv), " ")
	table, err := routes.Load("bench.yaml", []byte(gatewayConfig(natsURL, legacyURL, "natsgate-bench-child", false)), noEnv)
	if err != nil {
		return err
	}
	signal.Ignore(os.Interrupt)
	gw, err := gateway.New(context.Background(), gateway.Options{Table: table, Logger: discardLogger(), Registry: prometheus.NewRegistry(), AccessLog: io.Discard})
	if err != nil {
		return err
	}
	if err := gw.Start(); err != nil {
		return err
	}
	fmt.Printf("listening %s\n", gw.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "heap":
			if err := writeProfile("heap", arg); err != nil {
				fmt.Fprintln(os.Stderr, "heap profile:", err)
			}
			fmt.Println("ok")
		case "gc":
			// What the runtime's forced GC (every two minutes) and its
			// background scavenger reach on their own in an idle process:
			// each GC halves the stacks of goroutines that use under a
			// quarter of theirs, so a few are needed to settle.
			for range 4 {
				runtime.GC()
			}
			debug.FreeOSMemory()
			fallthrough
		case "rss":
			rss, _ := readRSS(os.Getpid())
			fmt.Printf("rss %d %d\n", rss, heapInUse())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return gw.Shutdown(ctx)
}

// memoryCheck starts natsgate as a child process, opens n keep-alive
// connections to it (each answered once, then left idle) and reads the
// child's VmRSS before and after.
func memoryCheck(ctx context.Context, natsURL, legacyURL string, n int, heapFile string) (*MemoryCheck, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"="+natsURL+" "+legacyURL)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	out := bufio.NewScanner(stdout)
	line := func() (string, error) {
		if !out.Scan() {
			return "", fmt.Errorf("the natsgate child stopped: %v", out.Err())
		}
		return out.Text(), nil
	}
	l, err := line()
	if err != nil {
		return nil, err
	}
	addr, ok := strings.CutPrefix(l, "listening ")
	if !ok {
		return nil, fmt.Errorf("the natsgate child said %q", l)
	}
	rss := func(cmd string) (int64, int64, error) {
		if _, err := io.WriteString(stdin, cmd+"\n"); err != nil {
			return 0, 0, err
		}
		l, err := line()
		if err != nil {
			return 0, 0, err
		}
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "rss" {
			return 0, 0, fmt.Errorf("the natsgate child said %q", l)
		}
		a, _ := strconv.ParseInt(f[1], 10, 64)
		b, _ := strconv.ParseInt(f[2], 10, 64)
		return a, b, nil
	}

	mc := &MemoryCheck{Conns: n}
	// Warm the child up with the same requests on a few connections, so
	// that "before" already holds what serving needs.
	if _, err := openIdle(ctx, addr, 8); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)
	if mc.RSSBefore, mc.HeapBefore, err = rss("gc"); err != nil {
		return nil, err
	}
	conns, err := openIdle(ctx, addr, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	mc.Opened = len(conns)
	if err != nil {
		return mc, err
	}
	time.Sleep(time.Second)
	if mc.RSSAfter, mc.HeapAfter, err = rss("rss"); err != nil {
		return nil, err
	}
	if mc.RSSSettled, mc.HeapSettled, err = rss("gc"); err != nil {
		return nil, err
	}
	if heapFile != "" {
		if _, err := io.WriteString(stdin, "heap "+heapFile+"\n"); err != nil {
			return nil, err
		}
		if _, err := line(); err != nil {
			return nil, err
		}
		mc.HeapProfile = heapFile
	}
	return mc, nil
}

// openIdle opens n connections to addr, sends one request on each and
// reads its answer, and returns them open and idle.
func openIdle(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	req := []byte("GET /users/7 HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, 32) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReaderSize(nil, 1024)
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					errs[i] = err
					return
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br.Reset(c)
				_, err = c.Write(req)
				if err == nil {
					var resp *http.Response
					if resp, err = http.ReadResponse(br, nil); err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
				}
				_ = c.SetDeadline(time.Time{})
				if err != nil {
					c.Close()
					errs[i] = err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	open := conns[:0]
	for _, c := range conns {
		if c != nil {
			open = append(open, c)
		}
	}
	return open, errors.Join(errs...)
}

// readRSS reads VmRSS of a process from /proc, in bytes.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}
