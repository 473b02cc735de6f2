package main

import (
	"os"
	"testing"
)

// TestMain keeps the package's tests to the NATS servers they start: the
// commands load configs with gateway.LoadConfig, which reads NATS_URL and
// NATS_CONTEXT, and a developer's shell may hold either.
func TestMain(m *testing.M) {
	for _, v := range []string{"NATS_URL", "NATS_CONTEXT"} {
		_ = os.Unsetenv(v)
	}
	code := m.Run()
	removeBuilt() // the binary cli_test.go built, if any
	os.Exit(code)
}
