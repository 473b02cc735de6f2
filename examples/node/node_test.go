// Package node holds natsgate's Node.js example worker (worker.js) and the
// test that runs it against the real gateway and a real nats-server, so
// that the wire protocol's second language is executed, not only read.
package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/gatewaytest"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/wire"
)

// needNode skips the test, with what to do, when node or the example's
// packages are missing; in CI (CI set) it fails instead, so that the test
// cannot pass there by not running.
func needNode(t *testing.T) string {
	t.Helper()
	stop := t.Skipf
	if os.Getenv("CI") != "" {
		stop = t.Fatalf
	}
	node, err := exec.LookPath("node")
	if err != nil {
		stop("node is not on PATH: install Node.js 20 or later to run the Node worker's test")
	}
	if _, err := os.Stat("node_modules/@nats-io/services"); err != nil {
		stop("examples/node/node_modules is missing: run `npm ci --prefix examples/node` first")
	}
	return node
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWorker runs `node worker.js` against natsURL until the test ends
// and returns once it says it is ready.
func startWorker(t *testing.T, node, natsURL string) *syncBuffer {
	t.Helper()
	cmd := exec.Command(node, "worker.js")
	cmd.Env = append(os.Environ(), "NATS_URL="+natsURL)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "ready") {
				close(ready)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("node worker did not stop within 10s of SIGTERM")
		}
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("node worker exited before it was ready: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("node worker not ready after 30s: %s", stderr.String())
	}
	return &stderr
}

// problem is the part of an RFC 9457 problem body the test checks.
type problem struct {
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Route     string `json:"route"`
	RequestID string `json:"request_id"`
}

// The Node worker on @nats-io/services, behind the real gateway with the
// example's own natsgate.yaml and a real nats-server: a micro service the
// server can discover, a JSON answer with the worker's time, Http-Status
// 201 and 204 answers with their headers, and service errors that become
// problem bodies with their status, naming route and request id.
func TestNodeWorkerThroughTheGateway(t *testing.T) {
	node := needNode(t)
	config, err := os.ReadFile("natsgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.RunServer(t)
	gw := gatewaytest.Start(t, ns, string(config))
	stderr := startWorker(t, node, ns.ClientURL())
	defer func() {
		if t.Failed() {
			t.Logf("node worker's stderr: %s", stderr.String())
		}
	}()

	// It is a micro service like a nats.go one: $SRV.INFO lists its
	// endpoints, in its queue group.
	nc := natstest.Connect(t, ns)
	msg, err := nc.Request("$SRV.INFO.natsgate-node-items", nil, 5*time.Second)
	if err != nil {
		t.Fatalf("$SRV.INFO: %v", err)
	}
	var info struct {
		Name      string `json:"name"`
		Endpoints []struct {
			Subject    string `json:"subject"`
			QueueGroup string `json:"queue_group"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatalf("$SRV.INFO: %v in %s", err, msg.Data)
	}
	var subjects []string
	for _, e := range info.Endpoints {
		subjects = append(subjects, e.Subject+" "+e.QueueGroup)
	}
	if got, want := strings.Join(subjects, ", "), "items.*.get natsgate-node, items.create natsgate-node, items.*.delete natsgate-node"; got != want {
		t.Errorf("$SRV.INFO endpoints %q, want %q", got, want)
	}

	// The answers depend on each other (the store), so they run in order.
	for _, tc := range []struct {
		method, path, body string
		wantStatus         int
		wantType           string
		wantBody           string            // exact, for a non-problem answer
		wantHeader         map[string]string // exact values
		wantProblem        *problem          // RequestID filled from the answer
	}{
		{method: "GET", path: "/items/1", wantStatus: 200, wantType: "application/json",
			wantBody: `{"id":"1","name":"first","route":"get-item","served_by":"node"}`},
		{method: "POST", path: "/items", body: `{"name":"second"}`, wantStatus: 201, wantType: "application/json",
			wantBody: `{"id":"2","name":"second"}`, wantHeader: map[string]string{"Location": "/items/2"}},
		{method: "GET", path: "/items/2", wantStatus: 200, wantType: "application/json",
			wantBody: `{"id":"2","name":"second","route":"get-item","served_by":"node"}`},
		{method: "POST", path: "/items", body: `not json`, wantStatus: 400, wantType: "application/problem+json",
			wantProblem: &problem{Status: 400, Detail: `the body must be JSON with a "name"`, Route: "create-item"}},
		{method: "DELETE", path: "/items/2", wantStatus: 204},
		{method: "DELETE", path: "/items/2", wantStatus: 404, wantType: "application/problem+json",
			wantProblem: &problem{Status: 404, Detail: `no item "2"`, Route: "delete-item"}},
		{method: "GET", path: "/items/999", wantStatus: 404, wantType: "application/problem+json",
			wantProblem: &problem{Status: 404, Detail: `no item "999"`, Route: "get-item"}},
	} {
		name := tc.method + " " + tc.path
		req, err := http.NewRequestWithContext(context.Background(), tc.method, gw.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		if tc.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		if resp.StatusCode != tc.wantStatus || resp.Header.Get("Content-Type") != tc.wantType {
			t.Errorf("%s: %d %q %s, want %d %q", name, resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.wantStatus, tc.wantType)
			continue
		}
		for k, v := range tc.wantHeader {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %s %q, want %q", name, k, got, v)
			}
		}
		if tc.wantProblem != nil {
			var p problem
			if err := json.Unmarshal(b, &p); err != nil {
				t.Errorf("%s: problem body %q: %v", name, body, err)
				continue
			}
			want := *tc.wantProblem
			want.RequestID = resp.Header.Get(wire.HeaderRequestID)
			if p != want || want.RequestID == "" {
				t.Errorf("%s: problem %+v, want %+v", name, p, want)
			}
			continue
		}
		if body != tc.wantBody {
			t.Errorf("%s: body %q, want %q", name, body, tc.wantBody)
		}
		if st := resp.Header.Get(wire.HeaderServerTiming); !strings.Contains(st, "worker;dur=") {
			t.Errorf("%s: Server-Timing %q has no worker time", name, st)
		}
	}
}

// A shadow copy (Http-Shadow: true) gets the answer it would get, and
// changes nothing: the Node worker honours the protocol's shadow flag.
func TestNodeWorkerShadowCopyChangesNothing(t *testing.T) {
	node := needNode(t)
	ns := natstest.RunServer(t)
	startWorker(t, node, ns.ClientURL())
	nc := natstest.Connect(t, ns)
	h := nats.Header{wire.HeaderShadow: {wire.ShadowValue}, "Content-Type": {"application/json"}}
	rep, err := nc.RequestMsg(&nats.Msg{Subject: "items.create", Header: h, Data: []byte(`{"name":"ghost"}`)}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Header.Get(wire.HeaderStatus) != "201" || !strings.Contains(string(rep.Data), `"name":"ghost"`) {
		t.Fatalf("shadow create: %v %q, want the 201 answer", rep.Header, rep.Data)
	}
	get, err := nc.RequestMsg(&nats.Msg{Subject: "items.2.get", Header: nats.Header{wire.ParamHeader("id"): {"2"}}}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := get.Header.Get(wire.HeaderServiceErrorCode); code != "404" {
		t.Errorf("after a shadow create, items.2.get: %v %q, want a 404 service error", get.Header, get.Data)
	}
}
