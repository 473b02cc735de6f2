package routes_test

import (
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/natsgate/natsgate/routes"
)

var update = flag.Bool("update", false, "rewrite the .golden files from the current output")

// TestFormatGolden compiles each testdata/*.yaml and compares the route
// table natsgate routes prints with the .golden file next to it. Run
// `go test ./routes -run TestFormatGolden -update` after a deliberate change.
func TestFormatGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.yaml (%v)", err)
	}
	vars := map[string]string{"LEGACY_URL": "http://legacy.internal:8080/api"}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			tb, err := routes.Load(file, data, env(vars))
			if err != nil {
				t.Fatal(err)
			}
			got := tb.Format(nil)
			golden := file[:len(file)-len(".yaml")] + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Format() differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

// Format shows the stage the caller says is live, not the configured one.
func TestFormatStageOverride(t *testing.T) {
	tb, err := routes.Load("s.yaml", []byte("upstreams:\n  old: {url: http://old}\nroutes:\n  - name: r1\n    path: /a\n    upstream: old\n    nats: {subject: a}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if tb.Routes[0].Cutover != routes.Legacy {
		t.Fatalf("cutover = %s, want legacy by default with an upstream", tb.Routes[0].Cutover)
	}
	out := tb.Format(func(*routes.Route) routes.Stage { return routes.Canary })
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("Format printed %d lines, want a header and one route:\n%s", len(lines), out)
	}
	if !slices.Contains(strings.Fields(lines[1]), "canary") || slices.Contains(strings.Fields(lines[1]), "legacy") {
		t.Errorf("route line %q does not show the overriding stage", lines[1])
	}
}

// Compile reports problems for a Config built in code too, without a file.
func TestCompileWithoutFile(t *testing.T) {
	_, err := routes.Compile(&routes.Config{Routes: []routes.RouteConfig{{Name: "r1", Path: "/a", NATS: &routes.RouteNATS{Subject: "a.*"}}}})
	if !errors.Is(err, routes.ErrInvalidConfig) {
		t.Fatalf("got %v, want ErrInvalidConfig", err)
	}
	var fe *routes.FieldError
	if !errors.As(err, &fe) || fe.Route != "r1" || fe.Field != "nats.subject" {
		t.Errorf("got %#v", fe)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(route("path: /users/{id}", "nats: {subject: 'users.{id}.get', timeout: 2s}")))
	f.Add([]byte("routes:\n  - name: a\n    path: /a\n    nats: &n {subject: a}\n  - name: b\n    path: /b\n    nats:\n      <<: *n\n"))
	f.Add([]byte("nats:\n  url: ${NATS_URL}\nroutes: []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := routes.Load("fuzz.yaml", data, env(map[string]string{"NATS_URL": "nats://127.0.0.1:4222", "X": "${X}"}))
		if err != nil {
			if !errors.Is(err, routes.ErrInvalidConfig) {
				t.Fatalf("error does not wrap ErrInvalidConfig: %v", err)
			}
			if tb != nil {
				t.Fatalf("Load returned a table with an error")
			}
			return
		}
		if len(tb.Routes) == 0 {
			t.Fatalf("a table without routes loaded")
		}
		_ = tb.Format(nil)
	})
}

// FuzzCompileRoute drives Compile with arbitrary field values in a
// well-formed file: whatever it accepts, the gateway can serve.
func FuzzCompileRoute(f *testing.F) {
	f.Add("get-user", "GET", "/users/{id}", "users.{id}.get", "request", "2s", "1MiB")
	f.Add("files", "*", "/files/*", "files.{*}", "publish", "1m", "0")
	f.Add("re", "PUT", "/a/{id:[0-9]+}/{b}", "a.{id}-{b}", "jetstream", "0s", "64KiB")
	f.Add("x", "get", "/a/{id}/{id}", "a.{id}", "", "", "")
	f.Add("y", "POST", "/{a}{b}", "{a}.{b}", "request", "5", "1XB")
	f.Fuzz(func(t *testing.T, name, method, path, subject, pattern, timeout, maxBody string) {
		yaml := "routes:\n  - name: " + strconv.Quote(name) +
			"\n    method: " + strconv.Quote(method) +
			"\n    path: " + strconv.Quote(path) +
			"\n    max_body: " + strconv.Quote(maxBody) +
			"\n    nats:\n      subject: " + strconv.Quote(subject) +
			"\n      pattern: " + strconv.Quote(pattern) +
			"\n      timeout: " + strconv.Quote(timeout) + "\n"
		tb, err := routes.Load("fuzz.yaml", []byte(yaml), noEnv)
		if err != nil {
			if !errors.Is(err, routes.ErrInvalidConfig) {
				t.Fatalf("error does not wrap ErrInvalidConfig: %v", err)
			}
			return
		}
		r := tb.Routes[0]
		if r.Timeout <= 0 || r.MaxBody < 0 || r.Subject == nil {
			t.Fatalf("compiled route %+v", r)
		}
		values := make([]string, len(r.Params))
		for i := range values {
			values[i] = "v"
		}
		for _, p := range r.Subject.Params() {
			if !slices.Contains(r.Params, p) {
				t.Fatalf("subject uses {%s}, path params %q", p, r.Params)
			}
		}
		out, err := r.Subject.Render(r.Params, values, 0)
		if err != nil {
			t.Fatalf("render %q: %v", r.Subject, err)
		}
		if got, want := strings.Count(out, ".")+1, strings.Count(r.Subject.String(), ".")+1; got != want {
			t.Fatalf("%q rendered %q", r.Subject, out)
		}
		mux := chi.NewRouter()
		noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
		if r.Method == "*" {
			mux.Handle(r.Path, noop)
		} else {
			mux.Method(r.Method, r.Path, noop)
		}
	})
}
