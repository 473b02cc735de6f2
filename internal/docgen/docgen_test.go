package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestConfigDocIsUpToDate regenerates docs/config.md in memory from
// routes/config.go and fails when the committed file differs, so the
// reference cannot drift from the code.
func TestConfigDocIsUpToDate(t *testing.T) {
	got, err := generate("../../routes/config.go")
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatalf("%v: run go generate ./...", err)
	}
	if !bytes.Equal(got, have) {
		gl, hl := strings.Split(string(got), "\n"), strings.Split(string(have), "\n")
		for i := 0; i < max(len(gl), len(hl)); i++ {
			var g, h string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(hl) {
				h = hl[i]
			}
			if g != h {
				t.Fatalf("docs/config.md is out of date: run go generate ./...\nfirst difference at line %d:\ncommitted: %q\ngenerated: %q", i+1, h, g)
			}
		}
	}
}

// TestConfigDocCoversEveryField checks the generated reference for what
// a reader needs: every YAML field of the config structs has a row, the
// defaults the comments state are in their column, and fields declared
// together share one row.
func TestConfigDocCoversEveryField(t *testing.T) {
	doc, err := generate("../../routes/config.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range []string{
		"| `nats.url` | string | — |",
		"| `nats.user`, `nats.password` | string | — |",
		"| `nats.streams[].replicas` | integer | 1 |",
		"| `http.write_timeout` | duration | 10s |",
		"| `admin.token` | string | $NATSGATE_ADMIN_TOKEN |",
		"| `upstreams.NAME.breaker.min_requests` | integer | 20 |",
		"| `routes[].nats.timeout` | duration | defaults.timeout |",
		"| `routes[].rollout.gates.window` | duration | 1m |",
		"| `routes[].rollout.on_failure` | string | legacy |",
	} {
		if !strings.Contains(string(doc), row) {
			t.Errorf("no row starting %s", row)
		}
	}
	if strings.Contains(string(doc), "url_from") || strings.Contains(string(doc), "| `src`") {
		t.Error("a field the file cannot set (yaml:\"-\" or unexported) has a row")
	}
}

// TestSplitDefault covers how a comment's default sentence is found.
func TestSplitDefault(t *testing.T) {
	for _, c := range []struct{ in, def, rest string }{
		{"Listen address. Default 127.0.0.1:8080.", "127.0.0.1:8080", "Listen address."},
		{"Bounds it. Default: none; a note. More.", "none; a note", "Bounds it. More."},
		{"Tries 1.5 times. Default 0.01.", "0.01", "Tries 1.5 times."},
		{"No default here.", "", "No default here."},
	} {
		def, rest := splitDefault(c.in)
		if def != c.def || rest != c.rest {
			t.Errorf("splitDefault(%q) = %q, %q; want %q, %q", c.in, def, rest, c.def, c.rest)
		}
	}
}
