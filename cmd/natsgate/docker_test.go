package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestDockerHealthCheckLoadsTheServedConfig runs the image's HEALTHCHECK
// command, as the Dockerfile writes it, on the config the image serves
// (configs/ is copied to /etc/natsgate/): with the variables that config
// reads set, it must get as far as dialling the admin listener the config
// names, not stop at the config or at a flag.
func TestDockerHealthCheckLoadsTheServedConfig(t *testing.T) {
	t.Setenv("NATS_URL", "nats://127.0.0.1:4222")
	t.Setenv("LEGACY_URL", "http://127.0.0.1:1")
	t.Setenv("NATSGATE_ADMIN_TOKEN", "t0ken-for-the-test")
	runHealthCheck(t, dockerHealthCheck(t))
}

// dockerHealthCheck is the Dockerfile's HEALTHCHECK command line.
func dockerHealthCheck(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)HEALTHCHECK[^\n]*\\\n\s*CMD (\[[^\]]*\])`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("no HEALTHCHECK ... CMD [...] in the Dockerfile")
	}
	var argv []string
	if err := json.Unmarshal(m[1], &argv); err != nil {
		t.Fatalf("HEALTHCHECK CMD %s: %v", m[1], err)
	}
	return argv
}

// runHealthCheck runs a health check's command line, natsgate and its
// arguments as the image has them, with the image's /etc/natsgate/ read
// from configs/ (the Dockerfile copies it there). It must get as far as
// dialling the admin listener the config names, not stop at the config
// or at a flag. Nothing of the test's listens there; a gateway the
// developer runs on this machine (the demo's admin is 127.0.0.1:9090)
// may, and then the command reached it, which proves the same.
func runHealthCheck(t *testing.T, argv []string) {
	t.Helper()
	if len(argv) < 2 || !strings.HasSuffix(argv[0], "/natsgate") {
		t.Fatalf("health check %q: want natsgate and its arguments", argv)
	}
	args := slices.Clone(argv[1:])
	for i, a := range args {
		args[i] = strings.Replace(a, "/etc/natsgate/", "../../configs/", 1)
	}
	code, stdout, stderr := runBin(t, args...)
	dialled := code == 1 && strings.Contains(stderr, "cannot reach") && strings.Contains(stderr, "/readyz") ||
		code == 0 && strings.Contains(stdout, "/readyz: ready")
	if !dialled {
		t.Errorf("natsgate %s: exit %d, want it to dial the admin listener the config names\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), code, stdout, stderr)
	}
}

// TestVersionStampedAtLinkTime builds natsgate as the Dockerfile does,
// without the repository's VCS information (its build context leaves
// .git out) and with the version and commit passed by -ldflags: natsgate
// version must print those, where it printed "(devel)" and "unknown".
func TestVersionStampedAtLinkTime(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "natsgate")
	const pkg = "github.com/natsgate/natsgate/internal/buildinfo"
	build := exec.Command("go", "build", "-buildvcs=false",
		"-ldflags=-X "+pkg+".version=v9.8.7-test -X "+pkg+".revision=0123456789abcdef", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("natsgate version: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "natsgate v9.8.7-test") || !strings.Contains(string(out), "0123456789abcdef") {
		t.Errorf("natsgate version printed %q: want v9.8.7-test and the revision 0123456789abcdef", out)
	}
}

// TestComposeHealthCheckLoadsTheServedConfig runs the health check of the
// compose file's natsgate service (its own healthcheck, else the image's
// HEALTHCHECK) with only the environment that service sets: it must load
// the very config the service serves and get as far as dialling its admin
// listener. The image's check reads /etc/natsgate/natsgate.yaml, which
// needs NATS_URL and LEGACY_URL; a service serving another file and
// setting neither would be unhealthy from its first check.
func TestComposeHealthCheckLoadsTheServedConfig(t *testing.T) {
	raw, err := os.ReadFile("../../configs/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatal(err)
	}
	svc, ok := compose.Services["natsgate"]
	if !ok {
		t.Fatal("configs/docker-compose.yml has no natsgate service")
	}
	test := svc.Healthcheck.Test
	switch {
	case len(test) == 0:
		test = dockerHealthCheck(t)
	case test[0] != "CMD":
		t.Fatalf("the natsgate service's healthcheck %q: want the exec form [\"CMD\", ...]", test)
	default:
		test = test[1:]
	}
	if served, checked := flagValue(svc.Command, "--config"), flagValue(test, "--config"); served == "" || served != checked {
		t.Errorf("the service serves --config %q and its health check reads %q: want the same file", served, checked)
	}
	// Only what the service's environment sets: the developer's own
	// NATS_URL or LEGACY_URL must not make the check pass here.
	for _, name := range []string{"NATS_URL", "LEGACY_URL", "NATSGATE_ADMIN_TOKEN"} {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
	for name, value := range svc.Environment {
		value = regexp.MustCompile(`^\$\{[A-Z_]+:-(.*)\}$`).ReplaceAllString(value, "$1") // compose's ${VAR:-default}
		t.Setenv(name, value)
	}
	runHealthCheck(t, test)
}

// flagValue is the value of flag in args, given as "flag value" or
// "flag=value"; "" when absent.
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}
