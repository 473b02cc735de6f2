package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// TestContextFileThatIsNotAFile: a context "file" that is a FIFO nobody
// writes to, or a symlink to /dev/zero, or a file far larger than any
// natscli context, is refused with a config error naming it, promptly:
// loading a config never blocks on a FIFO or reads without end.
func TestContextFileThatIsNotAFile(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T, path string)
		want string
	}{
		{"a FIFO", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"a symlink to /dev/zero", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"a huge file", func(t *testing.T, path string) {
			big := `{"url": "nats://127.0.0.1:4222", "description": "` + strings.Repeat("x", 4<<20) + `"}`
			if err := os.WriteFile(path, []byte(big), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			xdg, _ := hermeticNATSEnv(t)
			dir := filepath.Join(xdg, "nats", "context")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			tt.make(t, filepath.Join(dir, "dev.json"))
			cfg := writeConfig(t, connConfig("  context: dev\n"))
			done := make(chan error, 1)
			go func() { _, err := LoadConfig(cfg); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("LoadConfig still reading the context after 10s")
			}
			if !errors.Is(err, routes.ErrInvalidConfig) {
				t.Fatalf("LoadConfig error = %v, want a config error", err)
			}
			for _, w := range []string{"natsgate.yaml:2", "nats.context", "dev.json", tt.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestBadNATSURLErrorHidesPassword: a NATS URL that does not parse, from
// the config, NATS_URL or a context, is named in the config error (which
// is logged and printed) without the password or token written in it.
func TestBadNATSURLErrorHidesPassword(t *testing.T) {
	const bad = "nats://alice:s3cret@127.0.0.1:notaport"
	tests := []struct {
		name, nats, natsURL, context string
	}{
		{"config", "  url: " + bad + "\n", "", ""},
		{"config list", "  url: [nats://127.0.0.1:4222, \"nats://tok3n@127.0.0.1:x\"]\n", "", ""},
		{"NATS_URL", "  name: gw\n", bad, ""},
		{"context", "  context: dev\n", "", `{"url": "` + bad + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			xdg, _ := hermeticNATSEnv(t)
			if tt.context != "" {
				writeContext(t, xdg, "dev", tt.context)
			}
			if tt.natsURL != "" {
				t.Setenv("NATS_URL", tt.natsURL)
			}
			_, err := LoadConfig(writeConfig(t, connConfig(tt.nats)))
			if !errors.Is(err, routes.ErrInvalidConfig) {
				t.Fatalf("LoadConfig error = %v, want a config error", err)
			}
			t.Log(err)
			for _, secret := range []string{"s3cret", "tok3n"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows the secret %q", err, secret)
				}
			}
			if !strings.Contains(err.Error(), "127.0.0.1") {
				t.Errorf("error %q does not name the URL's host", err)
			}
		})
	}
}
