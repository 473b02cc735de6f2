package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"testing"
	"time"
)

// TestPairsVerify: each pair verifies for the usage and the names it was
// made for, against the pool that should trust it, and fails for another
// usage, another name, another authority or outside its window.
func TestPairsVerify(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(cn string, opts ...Option) *Pair {
		t.Helper()
		p, err := ca.Issue(cn, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	self, err := SelfSigned("self", Names("localhost"), ServerAuth(), ClientAuth())
	if err != nil {
		t.Fatal(err)
	}
	server, client := issue("server"), issue("client", ClientAuth())
	expired := issue("expired", ValidFor(-time.Minute))
	early := issue("early", Valid(time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)))
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	var unknown x509.UnknownAuthorityError
	for _, tc := range []struct {
		name  string
		pair  *Pair
		pool  *x509.CertPool
		usage x509.ExtKeyUsage
		host  string
		want  any // nil: verifies; else a pointer to the error type wanted
	}{
		{"server on 127.0.0.1", server, ca.Pool(), x509.ExtKeyUsageServerAuth, "127.0.0.1", nil},
		{"server on localhost", server, ca.Pool(), x509.ExtKeyUsageServerAuth, "localhost", nil},
		{"server on another name", server, ca.Pool(), x509.ExtKeyUsageServerAuth, "example.com", &hostname},
		{"server as a client", server, ca.Pool(), x509.ExtKeyUsageClientAuth, "", &invalid},
		{"client", client, ca.Pool(), x509.ExtKeyUsageClientAuth, "", nil},
		{"client as a server", client, ca.Pool(), x509.ExtKeyUsageServerAuth, "127.0.0.1", &invalid},
		{"another authority", server, other.Pool(), x509.ExtKeyUsageServerAuth, "127.0.0.1", &unknown},
		{"expired", expired, ca.Pool(), x509.ExtKeyUsageServerAuth, "127.0.0.1", &invalid},
		{"not valid yet", early, ca.Pool(), x509.ExtKeyUsageServerAuth, "127.0.0.1", &invalid},
		{"self-signed as a server", self, self.Pool(), x509.ExtKeyUsageServerAuth, "localhost", nil},
		{"self-signed as a client", self, self.Pool(), x509.ExtKeyUsageClientAuth, "", nil},
		{"self-signed on 127.0.0.1, which it does not name", self, self.Pool(), x509.ExtKeyUsageServerAuth, "127.0.0.1", &hostname},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.pair.Cert.Verify(x509.VerifyOptions{Roots: tc.pool, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("does not verify: %v", err)
			case tc.want != nil && (err == nil || !errors.As(err, tc.want)):
				t.Errorf("verifies with error %v, want a %T", err, tc.want)
			}
		})
	}
	if !expired.Cert.NotAfter.Before(time.Now()) {
		t.Errorf("the expired pair is valid until %v, after now", expired.Cert.NotAfter)
	}
	if server.Cert.SerialNumber.Cmp(client.Cert.SerialNumber) == 0 {
		t.Errorf("two pairs share the serial %v", server.Cert.SerialNumber)
	}
}

// TestFilesLoad: what WriteFiles and WriteMutual write loads as crypto/tls
// reads a cert_file and key_file, and a pair issued WithChain carries the
// CA after the leaf.
func TestFilesLoad(t *testing.T) {
	dir := t.TempDir()
	f, err := WriteMutual(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	for _, kp := range [][2]string{{f.ServerCert, f.ServerKey}, {f.ClientCert, f.ClientKey}} {
		if _, err := tls.LoadX509KeyPair(kp[0], kp[1]); err != nil {
			t.Errorf("%s, %s: %v", kp[0], kp[1], err)
		}
	}
	raw, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(raw) {
		t.Errorf("%s holds no certificate", f.CA)
	}

	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.Issue("server", WithChain())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := p.WriteFiles(dir, "chain.crt", "chain.key")
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.Certificate) != 2 || string(loaded.Certificate[1]) != string(ca.Cert.Raw) {
		t.Errorf("the file holds %d certificates, want the leaf then the CA", len(loaded.Certificate))
	}
	if got := p.TLSCertificate().Certificate; len(got) != 2 {
		t.Errorf("TLSCertificate holds %d certificates, want the leaf then the CA", len(got))
	}
}
