package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDockerHealthCheckLoadsTheServedConfig runs the image's HEALTHCHECK
// command, as the Dockerfile writes it, on the config the image serves
// (configs/ is copied to /etc/natsgate/): with the variables that config
// reads set, it must get as far as dialling the admin listener the config
// names, not stop at the config or at a flag.
func TestDockerHealthCheckLoadsTheServedConfig(t *testing.T) {
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)HEALTHCHECK[^\n]*\\\n\s*CMD (\[[^\]]*\])`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("no HEALTHCHECK ... CMD [...] in the Dockerfile")
	}
	var argv []string
	if err := json.Unmarshal(m[1], &argv); err != nil || len(argv) < 2 || !strings.HasSuffix(argv[0], "/natsgate") {
		t.Fatalf("HEALTHCHECK CMD %s: want natsgate and its arguments (%v)", m[1], err)
	}
	args := argv[1:]
	for i, a := range args {
		args[i] = strings.Replace(a, "/etc/natsgate/", "../../configs/", 1)
	}
	t.Setenv("NATS_URL", "nats://127.0.0.1:4222")
	t.Setenv("LEGACY_URL", "http://127.0.0.1:1")
	t.Setenv("NATSGATE_ADMIN_TOKEN", "t0ken-for-the-test")
	// Nothing of the test's listens there; a gateway the developer runs
	// on this machine (the demo's admin is 127.0.0.1:9090) may, and then
	// the command reached it, which proves the same.
	code, stdout, stderr := runBin(t, args...)
	dialled := code == 1 && strings.Contains(stderr, "cannot reach") && strings.Contains(stderr, "/readyz") ||
		code == 0 && strings.Contains(stdout, "/readyz: ready")
	if !dialled {
		t.Errorf("natsgate %s: exit %d, want it to dial the admin listener the config names\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), code, stdout, stderr)
	}
}
