package gateway

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestWatchFileReloadsOnChange(t *testing.T) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	respond(t, nc, "svc.*", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte(m.Subject)} })

	const one = `
routes:
  - name: a
    method: GET
    path: /a
    nats: {subject: svc.a}
`
	const two = one + `
  - name: b
    method: GET
    path: /b
    nats: {subject: svc.b}
`
	path := filepath.Join(t.TempDir(), "natsgate.yaml")
	if err := os.WriteFile(path, []byte(one), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, ns, one)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go gw.WatchFile(ctx, path, 20*time.Millisecond)

	if resp, _ := do(t, "GET", gw.URL+"/b", nil, nil); resp.StatusCode != 404 {
		t.Fatalf("/b before the change: %d, want 404", resp.StatusCode)
	}
	if err := os.WriteFile(path, []byte(two), 0o600); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 15*time.Second, "route b after the file changed", func() bool {
		resp, body := do(t, "GET", gw.URL+"/b", nil, nil)
		return resp.StatusCode == 200 && body == "svc.b"
	})

	if err := os.WriteFile(path, []byte(two+"  - name: [broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	failed := gw.metrics.ConfigReloads.WithLabelValues("error")
	natstest.Eventually(t, 15*time.Second, "the broken file to be counted", func() bool { return testutil.ToFloat64(failed) == 1 })
	if resp, body := do(t, "GET", gw.URL+"/b", nil, nil); resp.StatusCode != 200 || body != "svc.b" {
		t.Fatalf("after a broken file: %d %q, want the old routes serving", resp.StatusCode, body)
	}
}

func TestRestartNeededOnlyForChangedSettings(t *testing.T) {
	load := func(text string) *routes.Table {
		t.Helper()
		tb, err := loadText(text)
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	const base = "routes:\n  - name: a\n    path: /a\n    nats: {subject: a}\n"
	a, b := load(base), load(base)
	if restartNeeded(a.Config, b.Config) {
		t.Fatal("two loads of one file differ")
	}
	if !restartNeeded(a.Config, load("nats:\n  max_reconnects: 3\n"+base).Config) {
		t.Fatal("a changed nats.max_reconnects went unnoticed")
	}
	if restartNeeded(a.Config, load(base+"  - name: b\n    path: /b\n    nats: {subject: b}\n").Config) {
		t.Fatal("a route change alone asked for a restart")
	}
}

func loadText(text string) (*routes.Table, error) {
	return routes.Load("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
}
