package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natsgate/natsgate/internal/natstest"
)

// On a server without JetStream the report says so, where NATS itself
// only says "no responders available for request", which reads as if a
// worker were missing.
func TestValidateConnectNamesJetStreamOff(t *testing.T) {
	opts := natstest.Options(t)
	opts.JetStream = false
	ns := natstest.RunServerWith(t, opts)
	file := filepath.Join(t.TempDir(), "natsgate.yaml")
	if err := os.WriteFile(file, []byte(connectConfig(ns.ClientURL())), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"validate", "--config", file, "--connect"}, &stdout, &stderr)
	out := stdout.String()
	if code != 0 {
		t.Fatalf("exit %d, want 0 (a report); stderr %s", code, stderr.String())
	}
	for _, want := range []string{"cutover bucket natsgate_cutover: MISSING (JetStream is not enabled", "no stream stores audit.{id} (cannot list streams: JetStream is not enabled"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
