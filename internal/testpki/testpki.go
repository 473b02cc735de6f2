// Package testpki makes the X.509 certificates that natsgate's tests and
// its benchmark need: a certificate authority, pairs it signs for server
// or client authentication on 127.0.0.1 and localhost, and self-signed
// pairs, as PEM bytes, files, a tls.Certificate or a pool to trust.
//
// Every key is ECDSA P-256 and every certificate is made afresh, so a run
// never depends on files checked in or on the host's clock beyond "now".
// The functions return errors rather than take a testing.TB so that
// internal/benchrun, which is not a test, can use the package without
// importing testing.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// serial numbers every certificate of the process, so that a test telling
// pairs apart by serial (which one a listener serves after a rotation)
// never sees two alike.
var serial atomic.Int64

// CA is a certificate authority made for one test or run.
type CA struct {
	// Cert is the CA's certificate.
	Cert *x509.Certificate
	// PEM is Cert in PEM, as a client_ca_file or a NATS ca_file holds it.
	PEM []byte
	key *ecdsa.PrivateKey
}

// Pair is a certificate and its private key.
type Pair struct {
	// Cert is the certificate (the leaf, without any chain).
	Cert *x509.Certificate
	// CertPEM is Cert in PEM, followed by the CA's certificate when it
	// was issued WithChain: what a cert_file holds.
	CertPEM []byte
	// KeyPEM is the private key in PEM ("EC PRIVATE KEY"): a key_file.
	KeyPEM []byte
	key    *ecdsa.PrivateKey
	chain  [][]byte // DER: the leaf, then the CA WithChain
}

// Option changes what Issue or SelfSigned puts in a certificate.
type Option func(*settings)

type settings struct {
	usages              []x509.ExtKeyUsage
	names               []string
	notBefore, notAfter time.Time
	chain               bool
}

// ServerAuth makes a certificate for a server (the default when neither
// ServerAuth nor ClientAuth is given).
func ServerAuth() Option {
	return func(s *settings) { s.usages = append(s.usages, x509.ExtKeyUsageServerAuth) }
}

// ClientAuth makes a certificate for a client; with ServerAuth it is for
// both.
func ClientAuth() Option {
	return func(s *settings) { s.usages = append(s.usages, x509.ExtKeyUsageClientAuth) }
}

// WithChain puts the CA's certificate after the leaf in CertPEM and in
// TLSCertificate, as a server's cert_file usually holds it. It does
// nothing for a self-signed pair.
func WithChain() Option {
	return func(s *settings) { s.chain = true }
}

// Names sets the names the certificate is for, in place of the default
// 127.0.0.1 and localhost: each that parses as an IP address is an IP
// SAN, any other a DNS SAN. Names() makes a certificate for no name.
func Names(names ...string) Option {
	return func(s *settings) { s.names = names }
}

// Valid sets the certificate's validity window, for a pair that has
// expired or is not valid yet. Certificates hold whole seconds: the
// window read back from Cert is truncated to the second.
func Valid(notBefore, notAfter time.Time) Option {
	return func(s *settings) { s.notBefore, s.notAfter = notBefore, notAfter }
}

// ValidFor makes the certificate valid from an hour ago until d from now
// (the default is 24 hours); a negative d makes one that has expired.
func ValidFor(d time.Duration) Option {
	return func(s *settings) { s.notBefore, s.notAfter = time.Now().Add(-time.Hour), time.Now().Add(d) }
}

func newSettings(opts []Option) settings {
	s := settings{names: []string{"127.0.0.1", "localhost"}}
	ValidFor(24 * time.Hour)(&s)
	for _, o := range opts {
		o(&s)
	}
	if len(s.usages) == 0 {
		s.usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	return s
}

// NewCA makes a certificate authority whose certificate names cn, valid
// from an hour ago for 24 hours.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, cert, err := sign(tmpl, key, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("the CA certificate %q: %w", cn, err)
	}
	return &CA{Cert: cert, PEM: certPEM(der), key: key}, nil
}

// sign makes the certificate tmpl describes for key, signed by parent's
// parentKey, and parses it back.
func sign(tmpl *x509.Certificate, key *ecdsa.PrivateKey, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return der, cert, err
}

// Pool is a pool trusting the CA alone: a client's RootCAs or a server's
// ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteFile writes the CA's certificate in PEM to dir/name and returns
// the file's path.
func (ca *CA) WriteFile(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, ca.PEM, 0o600)
}

// Issue makes a pair whose certificate names cn and is signed by the CA:
// by default for server authentication on 127.0.0.1 and localhost, valid
// from an hour ago for 24 hours.
func (ca *CA) Issue(cn string, opts ...Option) (*Pair, error) {
	s := newSettings(opts)
	p, err := newPair(cn, s, ca.Cert, ca.key)
	if err != nil {
		return nil, err
	}
	if s.chain {
		p.chain = append(p.chain, ca.Cert.Raw)
		p.CertPEM = append(p.CertPEM, ca.PEM...)
	}
	return p, nil
}

// SelfSigned makes a pair whose certificate names cn and signs itself,
// with the same defaults as Issue: a peer trusts it by its Pool, or by
// holding the certificate itself.
func SelfSigned(cn string, opts ...Option) (*Pair, error) {
	return newPair(cn, newSettings(opts), nil, nil)
}

// newPair makes a key and a certificate for it, signed by parent's key
// or, with no parent, by its own.
func newPair(cn string, s settings, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    s.notBefore,
		NotAfter:     s.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  s.usages,
	}
	for _, n := range s.names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, cert, err := sign(tmpl, key, parent, parentKey)
	if err != nil {
		return nil, fmt.Errorf("the certificate %q: %w", cn, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("the key of %q: %w", cn, err)
	}
	return &Pair{Cert: cert, CertPEM: certPEM(der), KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		key: key, chain: [][]byte{der}}, nil
}

// TLSCertificate is the pair as a crypto/tls listener or client presents
// it, with the CA after the leaf when issued WithChain.
func (p *Pair) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: p.chain, PrivateKey: p.key, Leaf: p.Cert}
}

// Pool is a pool trusting the pair's own certificate: what a peer of a
// self-signed pair trusts.
func (p *Pair) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.Cert)
	return pool
}

// WriteFiles writes CertPEM to dir/certName and KeyPEM to dir/keyName
// and returns the two paths.
func (p *Pair) WriteFiles(dir, certName, keyName string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, certName), filepath.Join(dir, keyName)
	if err := os.WriteFile(certFile, p.CertPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, p.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// Files are the paths WriteMutual wrote.
type Files struct {
	CA                    string // ca.pem
	ServerCert, ServerKey string // server.pem, server-key.pem
	ClientCert, ClientKey string // client.pem, client-key.pem
}

// WriteMutual writes what mutual TLS with a NATS server needs into dir: a
// CA named caName (ca.pem), a server pair it signs (CN "server", for
// 127.0.0.1 and localhost: server.pem, server-key.pem) and a client pair
// it signs (CN "client": client.pem, client-key.pem).
func WriteMutual(dir, caName string) (Files, error) {
	ca, err := NewCA(caName)
	if err != nil {
		return Files{}, err
	}
	server, err := ca.Issue("server", ServerAuth())
	if err != nil {
		return Files{}, err
	}
	client, err := ca.Issue("client", ClientAuth())
	if err != nil {
		return Files{}, err
	}
	var f Files
	if f.CA, err = ca.WriteFile(dir, "ca.pem"); err != nil {
		return Files{}, err
	}
	if f.ServerCert, f.ServerKey, err = server.WriteFiles(dir, "server.pem", "server-key.pem"); err != nil {
		return Files{}, err
	}
	if f.ClientCert, f.ClientKey, err = client.WriteFiles(dir, "client.pem", "client-key.pem"); err != nil {
		return Files{}, err
	}
	return f, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
