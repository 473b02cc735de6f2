package worker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/examples/worker"
	"github.com/natsgate/natsgate/internal/gatewaytest"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/wire"
)

// The sample worker, behind the real gateway and a real nats-server,
// reads the user id from Http-Param-id, answers JSON with its worker time
// in Server-Timing, and an unknown id with a service error the gateway
// turns into a 404 problem; asked on NATS directly, without the gateway's
// headers, it takes the id from the subject.
func TestGetUserThroughTheGateway(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := gatewaytest.Start(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
`)
	nc := natstest.Connect(t, ns)
	svc, err := worker.Start(nc, worker.Options{Instance: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })

	for _, tc := range []struct {
		id         string
		wantStatus int
		wantBody   string // a substring
		wantType   string
	}{
		{"7", 200, `{"id":7,"name":"user-7","served_by":"w1"}`, "application/json"},
		{"1001", 404, `"detail":"no user \"1001\""`, "application/problem+json"},
		{"abc", 404, `"route":"get-user"`, "application/problem+json"},
	} {
		resp, err := http.Get(gw.URL + "/users/" + tc.id)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.wantStatus || !strings.Contains(string(b), tc.wantBody) || resp.Header.Get("Content-Type") != tc.wantType {
			t.Errorf("GET /users/%s: %d %s %s, want %d %s with %s", tc.id, resp.StatusCode, resp.Header.Get("Content-Type"), b,
				tc.wantStatus, tc.wantType, tc.wantBody)
		}
		if st := resp.Header.Get("Server-Timing"); tc.wantStatus == 200 && !strings.Contains(st, "worker;dur=") {
			t.Errorf("GET /users/%s: Server-Timing %q has no worker time", tc.id, st)
		}
	}

	msg, err := nc.Request("users.12.get", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var u worker.User
	if err := json.Unmarshal(msg.Data, &u); err != nil || u.ID != 12 || msg.Header.Get(wire.HeaderStatus) != "" {
		t.Errorf("users.12.get on NATS: %q %v, want user 12 with no Http-Status", msg.Data, msg.Header)
	}
	if st := msg.Header.Get(wire.HeaderServerTiming); !strings.HasPrefix(st, "worker;dur=") {
		t.Errorf("users.12.get on NATS: Server-Timing %q, want the worker's time", st)
	}
}

// When Start returns, the server has every endpoint's subscription: a
// request sent at once on another connection (the gateway's) finds the
// worker instead of no responders. sample-worker prints "serving on"
// after Start, and the demo and the end-to-end tests take that line to
// mean the worker can be reached.
func TestStartReturnsOnceReachable(t *testing.T) {
	ns := natstest.RunServer(t)
	client := natstest.Connect(t, ns)
	for i := range 20 {
		nc := natstest.Connect(t, ns)
		svc, err := worker.Start(nc, worker.Options{Instance: fmt.Sprint("w", i)})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := client.Request("users.7.get", nil, 5*time.Second)
		if err != nil {
			t.Fatalf("start %d: a request right after Start: %v", i, err)
		}
		if !strings.Contains(string(msg.Data), `"id":7`) {
			t.Fatalf("start %d: a request right after Start: %q, want user 7", i, msg.Data)
		}
		// The next start must be the only member of the queue group.
		if err := svc.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		nc.Close()
	}
}
