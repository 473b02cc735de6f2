package routes_test

import (
	"strings"
	"testing"

	"github.com/natsgate/natsgate/routes"
)

// TestLoadTLSErrors: every tls field is checked at load, each problem
// naming file, line and field like any other.
func TestLoadTLSErrors(t *testing.T) {
	r := route("path: /a", "nats: {subject: a}")
	tests := []struct {
		name string
		yaml string
		want wantError
	}{
		{"http tls without a certificate", "http:\n  tls:\n    key_file: k.pem\n" + r,
			wantError{3, "", "http.tls.cert_file", "is required"}},
		{"http tls without a key", "http:\n  tls:\n    cert_file: c.pem\n" + r,
			wantError{3, "", "http.tls.key_file", "is required"}},
		{"an unknown TLS version", "http:\n  tls:\n    cert_file: c.pem\n    key_file: k.pem\n    min_version: 1.1\n" + r,
			wantError{5, "", "http.tls.min_version", `"1.1" is not a TLS version natsgate serves`}},
		{"client certificates on the public listener", "http:\n  tls:\n    cert_file: c.pem\n    key_file: k.pem\n    client_ca_file: ca.pem\n" + r,
			wantError{5, "", "http.tls.client_ca_file", "unknown field"}},
		{"h2c beside tls", "http:\n  h2c: true\n  tls: {cert_file: c.pem, key_file: k.pem}\n" + r,
			wantError{2, "", "http.h2c", "cleartext HTTP/2"}},
		{"admin client_auth without a CA", "admin:\n  tls:\n    cert_file: c.pem\n    key_file: k.pem\n    client_auth: require\n" + r,
			wantError{5, "", "admin.tls.client_auth", "needs admin.tls.client_ca_file"}},
		{"admin client_auth unknown", "admin:\n  tls:\n    cert_file: c.pem\n    key_file: k.pem\n    client_ca_file: ca.pem\n    client_auth: sometimes\n" + r,
			wantError{6, "", "admin.tls.client_auth", `unknown value "sometimes"`}},
		{"upstream tls on http", "upstreams:\n  old:\n    url: http://127.0.0.1:1\n    tls: {ca_file: ca.pem}\n" + r,
			wantError{4, "", "upstreams.old.tls", "is for an https upstream"}},
		{"upstream client cert without key", "upstreams:\n  old:\n    url: https://127.0.0.1:1\n    tls:\n      cert_file: c.pem\n" + r,
			wantError{5, "", "upstreams.old.tls", "cert_file and key_file go together"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := routes.Load("gate.yaml", []byte(tt.yaml), noEnv)
			if err == nil {
				t.Fatalf("loaded without an error, want %v", tt.want)
			}
			got := findError(fieldErrors(t, err), tt.want)
			if got == nil {
				t.Fatalf("want an error %v, got:\n%v", tt.want, err)
			}
			if got.File != "gate.yaml" || got.Line != tt.want.line {
				t.Errorf("error at %s:%d, want gate.yaml:%d: %v", got.File, got.Line, tt.want.line, got)
			}
		})
	}
}

// TestTLSDefaults: min_version defaults to 1.2 and client_auth to
// require once a client CA is named; the parsed config is left as written.
func TestTLSDefaults(t *testing.T) {
	yaml := "http:\n  tls: {cert_file: c.pem, key_file: k.pem}\nadmin:\n  tls: {cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem}\n" +
		route("path: /a", "nats: {subject: a}")
	cfg, err := routes.Parse("gate.yaml", []byte(yaml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := routes.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.Config.HTTP.TLS.MinVersion; got != "1.2" {
		t.Errorf("http.tls.min_version = %q, want 1.2", got)
	}
	if got := tb.Config.Admin.TLS.ClientAuth; got != routes.ClientAuthRequire {
		t.Errorf("admin.tls.client_auth = %q, want require", got)
	}
	if cfg.HTTP.TLS.MinVersion != "" || cfg.Admin.TLS.ClientAuth != "" {
		t.Errorf("Compile filled defaults into the parsed config: %+v %+v", *cfg.HTTP.TLS, *cfg.Admin.TLS)
	}
}

// TestTableProblem: a problem found after Compile names the field's line
// and, inside a route, the route, so I/O checks report like the rest.
func TestTableProblem(t *testing.T) {
	yaml := "http:\n  tls:\n    cert_file: c.pem\n    key_file: k.pem\n" + strings.Replace(route("path: /a", "nats: {subject: a}"), "r1", "get-a", 1)
	tb, err := routes.Load("gate.yaml", []byte(yaml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	p := tb.Problem("http.tls.key_file", "cannot read %q", "k.pem")
	if got, want := p.Error(), `gate.yaml:4: http.tls.key_file: cannot read "k.pem"`; got != want {
		t.Errorf("problem reads %q, want %q", got, want)
	}
	p = tb.Problem("routes[0].path", "x")
	if p.Route != "get-a" || p.Line != 7 || p.Field != "path" {
		t.Errorf("route problem = %+v, want route get-a, line 7, field path", p)
	}
}
