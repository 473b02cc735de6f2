package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportCommand runs natsgate import openapi on a real description,
// then natsgate validate on what it wrote, then --merge twice.
func TestImportCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "natsgate.yaml")
	spec := "../../importer/testdata/harbor-2.0.yaml"
	var stdout, stderr bytes.Buffer
	if code := run([]string{"import", "openapi", spec, "--upstream", "harbor=http://127.0.0.1:8081", "--subject-prefix", "harbor", "-o", cfg}, &stdout, &stderr); code != 0 {
		t.Fatalf("import exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "203 operations, 203 routes imported") {
		t.Errorf("stderr: %s", stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"validate", "--config", cfg}, &stdout, &stderr); code != 0 {
		t.Fatalf("validate exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "ok, 204 routes, 1 upstreams") {
		t.Errorf("validate: %s", stdout.String())
	}
	before, _ := os.ReadFile(cfg)
	for i := 0; i < 2; i++ {
		stdout.Reset()
		stderr.Reset()
		if code := run([]string{"import", "openapi", spec, "--merge", cfg, "-o", cfg, "--subject-prefix", "harbor"}, &stdout, &stderr); code != 0 {
			t.Fatalf("merge exit %d: %s", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "0 routes added, 0 skipped, 0 gone") {
			t.Errorf("merge stderr: %s", stderr.String())
		}
	}
	if after, _ := os.ReadFile(cfg); !bytes.Equal(after, before) {
		t.Error("merging the same description changed the file")
	}
}

func TestImportCommandErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("openapi: 3.0.0\npaths:\n  /a:\n   get: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"import"}, 2, "Usage: natsgate import openapi"},
		{[]string{"import", "openapi"}, 2, "Usage"},
		{[]string{"import", "openapi", bad}, 1, bad + ":5:"},
		{[]string{"import", "openapi", filepath.Join(dir, "missing.yaml")}, 1, "missing.yaml"},
		{[]string{"import", "openapi", "../../importer/testdata/petstore-2.0.json", "--upstream", "nourl"}, 2, "NAME=URL"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}
