package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/natsgate/natsgate/internal/natstest"
)

// connectConfig is a config on url with a request route a micro service
// serves (get-user), a request route nobody serves (get-report), a
// jetstream route a stream stores (put-order), one no stream stores
// (put-audit), and a publish route (events).
func connectConfig(url string) string {
	return fmt.Sprintf(`
nats: {url: %q}
routes:
  - {name: get-user, method: GET, path: "/users/{id}", nats: {subject: "users.{id}.get"}}
  - {name: get-report, method: GET, path: "/reports/{id}", nats: {subject: "reports.{id}.get"}}
  - {name: put-order, method: POST, path: "/orders/{id}", nats: {subject: "orders.{id}.put", pattern: jetstream}}
  - {name: put-audit, method: POST, path: "/audit/{id}", nats: {subject: "audit.{id}", pattern: jetstream}}
  - {name: events, method: POST, path: /events, nats: {subject: events.new, pattern: publish}}
`, url)
}

func TestValidateConnect(t *testing.T) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	svc, err := micro.AddService(nc, micro.Config{Name: "users", Version: "1.2.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := svc.AddEndpoint("get", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(nil) }), micro.WithEndpointSubject("users.*.get")); err != nil {
		t.Fatal(err)
	}
	// validate asks $SRV.INFO on a connection of its own: the server must
	// have the service's subscriptions first.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "natsgate.yaml")
	if err := os.WriteFile(file, []byte(connectConfig(ns.ClientURL())), 0o600); err != nil {
		t.Fatal(err)
	}
	validate := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"validate", "--config", file}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	line := func(out, route string) string {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == route {
				return l
			}
		}
		t.Fatalf("no line for %s in:\n%s", route, out)
		return ""
	}

	code, out, stderr := validate("--connect")
	if code != 0 {
		t.Fatalf("validate --connect: exit %d, want 0 (a report); stderr %s", code, stderr)
	}
	for _, want := range []struct{ route, has string }{
		{"get-user", "ok; users 1.2.0 x1 (get)"},
		{"get-report", "NO: no micro service answers reports.{id}.get"},
		{"put-order", "ok: stream ORDERS"},
		{"put-audit", "NO: no stream stores audit.{id}"},
		{"events", "ok: publish needs no responder"},
	} {
		if l := line(out, want.route); !strings.Contains(l, want.has) {
			t.Errorf("%s: %q, want it to say %q", want.route, l, want.has)
		}
	}
	if !strings.Contains(out, "cutover bucket natsgate_cutover: MISSING") || !strings.Contains(out, "plain subscribers cannot be seen") {
		t.Errorf("report does not say the bucket is missing, or that plain subscribers are not seen:\n%s", out)
	}
	if code, _, stderr := validate("--connect", "--strict"); code != 1 || !strings.Contains(stderr, "--strict") {
		t.Errorf("validate --connect --strict with routes not ready: exit %d (%s), want 1", code, stderr)
	}

	// Once everything is there, --strict passes.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUDIT", Subjects: []string{"audit.*"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "natsgate_cutover"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.AddEndpoint("report", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(nil) }), micro.WithEndpointSubject("reports.>")); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = validate("--connect", "--strict")
	if code != 0 || !strings.Contains(out, "cutover bucket natsgate_cutover: ok") || !strings.Contains(line(out, "put-audit"), "ok: stream AUDIT") {
		t.Errorf("everything present: exit %d, stderr %s, report:\n%s", code, stderr, out)
	}

	// natsgate routes shows the responders found.
	var rout, rerr bytes.Buffer
	if code := run([]string{"routes", "--config", file}, &rout, &rerr); code != 0 {
		t.Fatalf("routes: exit %d: %s", code, rerr.String())
	}
	if f := strings.Fields(line(rout.String(), "get-user")); len(f) < 7 || f[6] != "1" {
		t.Errorf("routes: get-user line %q, want RESPONDERS 1", line(rout.String(), "get-user"))
	}
	if f := strings.Fields(line(rout.String(), "ROUTE")); len(f) < 7 || f[6] != "RESPONDERS" {
		t.Errorf("routes header %q has no RESPONDERS column", line(rout.String(), "ROUTE"))
	}

	// Not reaching NATS is a failure of the check asked for.
	ns.Shutdown()
	if code, _, stderr := validate("--connect"); code != 1 || !strings.Contains(stderr, "natsgate validate --connect:") {
		t.Errorf("NATS down: exit %d (%s), want 1", code, stderr)
	}
}
