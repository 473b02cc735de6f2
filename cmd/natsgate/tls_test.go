package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/internal/testpki"
)

// selfSigned writes a self-signed pair to dir as name.crt and name.key,
// for both server and client authentication (a command's client
// certificate is also its own authority). It names localhost and not
// 127.0.0.1, which the commands dial: they trust the file, not the name.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	p, err := testpki.SelfSigned(name, testpki.Names("localhost"), testpki.ServerAuth(), testpki.ClientAuth())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err = p.WriteFiles(dir, name+".crt", name+".key")
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestValidateTLSFiles: natsgate validate reads the tls sections' files
// and reports each that cannot serve with file, line and field, exiting
// 1; a good pair validates.
func TestValidateTLSFiles(t *testing.T) {
	dir := t.TempDir()
	certA, keyA := selfSigned(t, dir, "a")
	_, keyB := selfSigned(t, dir, "b")
	routes := "routes:\n  - {name: r, path: /r, nats: {subject: r}}\n"
	file := filepath.Join(dir, "natsgate.yaml")
	for _, tc := range []struct {
		name, yaml string
		code       int
		want       string
	}{
		{"good pair", "http:\n  tls: {cert_file: " + certA + ", key_file: " + keyA + "}\n", 0, "ok, 1 routes"},
		{"key of another certificate", "http:\n  tls:\n    cert_file: " + certA + "\n    key_file: " + keyB + "\n", 1,
			file + ":4: http.tls.key_file: the key in " + keyB + " does not match the certificate in " + certA},
		{"missing client CA", "admin:\n  tls:\n    cert_file: " + certA + "\n    key_file: " + keyA + "\n    client_ca_file: " + filepath.Join(dir, "none.pem") + "\n", 1,
			file + ":5: admin.tls.client_ca_file: cannot read the authorities"},
		{"unknown version", "http:\n  tls:\n    cert_file: " + certA + "\n    key_file: " + keyA + "\n    min_version: \"1.0\"\n", 1,
			file + `:5: http.tls.min_version: "1.0" is not a TLS version`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tc.yaml+routes), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run([]string{"validate", "--config", file}, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit %d and %q", code, out, tc.code, tc.want)
			}
		})
	}
}

// TestCommandsReachAnHTTPSAdminFromTheConfig: with admin.tls in the
// config, health, report and rollout found the admin listener from
// --config and spoke plain HTTP to it, so the image's HEALTHCHECK said
// "not ready" for a gateway that was serving. They now speak HTTPS and
// trust exactly the certificate in admin.tls.cert_file; a listener that
// presents another is refused, saying so.
func TestCommandsReachAnHTTPSAdminFromTheConfig(t *testing.T) {
	ns := natstest.RunServer(t)
	dir := t.TempDir()
	cert, key := selfSigned(t, dir, "admin")
	other, otherKey := selfSigned(t, dir, "other")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	ln.Close()
	config := func(certFile, keyFile string) string {
		return writeConfig(t, fmt.Sprintf(`nats: {url: %s}
http: {listen: "127.0.0.1:0"}
admin:
  listen: %s
  tls: {cert_file: %s, key_file: %s}
routes:
  - {name: get-user, method: GET, path: "/users/{id}", nats: {subject: "users.{id}.get"}}
`, ns.ClientURL(), adminAddr, certFile, keyFile))
	}
	file := config(cert, key)
	g := startServe(t, "serve", "--config", file, "--log-format", "json")
	g.waitFor(t, "natsgate serving")

	if code, stdout, stderr := runBin(t, "health", "--config", file); code != 0 || !strings.Contains(stdout, "https://") {
		t.Errorf("natsgate health -c with admin.tls: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if code, stdout, stderr := runBin(t, "report", "--config", file, "--format", "json"); code != 0 || !strings.Contains(stdout, "get-user") {
		t.Errorf("natsgate report -c with admin.tls: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// rollout status reaches the listener: the route has no plan, and the
	// admin API says so (a problem body, not a TLS or HTTP error).
	if code, _, stderr := runBin(t, "rollout", "status", "get-user", "--config", file); code != 1 || !strings.Contains(stderr, "rollout") || strings.Contains(stderr, "cannot reach") {
		t.Errorf("natsgate rollout status -c with admin.tls: exit %d, want the admin API's answer\nstderr:\n%s", code, stderr)
	}
	// A config naming another certificate than the one served.
	if code, _, stderr := runBin(t, "health", "--config", config(other, otherKey)); code != 1 || !strings.Contains(stderr, "not the one in") {
		t.Errorf("natsgate health against a listener with another certificate: exit %d, want 1 saying so\nstderr:\n%s", code, stderr)
	}
}

// TestCommandsSendAClientCertificate: an admin listener with
// client_auth: require refuses a command without a client certificate at
// the handshake; with --cert and --key it is answered. --cert without
// --key is bad usage, said at once.
func TestCommandsSendAClientCertificate(t *testing.T) {
	ns := natstest.RunServer(t)
	dir := t.TempDir()
	cert, key := selfSigned(t, dir, "admin")
	clientCert, clientKey := selfSigned(t, dir, "ops") // its own authority
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	ln.Close()
	file := writeConfig(t, fmt.Sprintf(`nats: {url: %s}
http: {listen: "127.0.0.1:0"}
admin:
  listen: %s
  tls: {cert_file: %s, key_file: %s, client_ca_file: %s, client_auth: require}
routes:
  - {name: get-user, method: GET, path: "/users/{id}", nats: {subject: "users.{id}.get"}}
`, ns.ClientURL(), adminAddr, cert, key, clientCert))
	g := startServe(t, "serve", "--config", file, "--log-format", "json")
	g.waitFor(t, "natsgate serving")

	if code, _, stderr := runBin(t, "health", "--config", file); code != 1 || !strings.Contains(stderr, "cannot reach") {
		t.Errorf("natsgate health without a client certificate against client_auth require: exit %d, want 1\nstderr:\n%s", code, stderr)
	}
	if code, stdout, stderr := runBin(t, "health", "--config", file, "--cert", clientCert, "--key", clientKey); code != 0 {
		t.Errorf("natsgate health --cert --key: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if code, stdout, stderr := runBin(t, "report", "--config", file, "--cert", clientCert, "--key", clientKey, "--format", "json"); code != 0 || !strings.Contains(stdout, "get-user") {
		t.Errorf("natsgate report --cert --key: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if code, _, stderr := runBin(t, "health", "--config", file, "--cert", clientCert); code != 1 || !strings.Contains(stderr, "--cert and --key go together") {
		t.Errorf("natsgate health --cert without --key: exit %d, want 1 saying both are needed\nstderr:\n%s", code, stderr)
	}
}
