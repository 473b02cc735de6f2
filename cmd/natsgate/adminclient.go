package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
)

// How the commands that talk to a running gateway (rollout, report) find
// its admin API and read its answers.

// adminTimeout bounds one exchange with the admin API, so a gateway that
// accepts and never answers cannot hang a command.
const adminTimeout = 15 * time.Second

// adminProblem is the part of an RFC 9457 problem body the command prints.
type adminProblem struct {
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Route     string `json:"route"`
	RequestID string `json:"request_id"`
}

// adminEndpoint is where a command finds a running gateway's admin API:
// its base URL, the bearer token for changes, and, for an admin listener
// on HTTPS known from the config, the TLS that trusts exactly its
// certificate.
type adminEndpoint struct {
	Base, Token string
	TLS         *tls.Config // nil: the default (plain HTTP, or an https URL checked against the system's roots)
}

// adminCertFlags registers --cert and --key on fs: a client certificate
// for an admin listener that asks for one (admin.tls.client_ca_file).
func adminCertFlags(fs *flag.FlagSet) (cert, key *string) {
	cert = fs.String("cert", "", "a PEM client certificate `FILE`, for an admin listener that asks for one")
	key = fs.String("key", "", "the PEM key `FILE` of --cert")
	return cert, key
}

// adminCertUsage is the usage text of adminCertFlags, for the commands'
// usage pages.
const adminCertUsage = `  --cert FILE, --key FILE
                      a client certificate and its key, for an admin
                      listener with admin.tls.client_ca_file (every request
                      with client_auth require, changes with mutations)
`

// withClientCert adds the client certificate in certFile and keyFile to
// the endpoint's TLS; both or neither must be given.
func (e *adminEndpoint) withClientCert(certFile, keyFile string) error {
	if certFile == "" && keyFile == "" {
		return nil
	}
	if certFile == "" || keyFile == "" {
		return errors.New("--cert and --key go together")
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("--cert %s, --key %s: %w", certFile, keyFile, err)
	}
	if e.TLS == nil {
		e.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		e.TLS = e.TLS.Clone()
	}
	e.TLS.Certificates = []tls.Certificate{pair}
	return nil
}

// client is an HTTP client for the endpoint, bounded by timeout.
func (e adminEndpoint) client(timeout time.Duration) *http.Client {
	c := &http.Client{Timeout: timeout}
	if e.TLS != nil {
		c.Transport = &http.Transport{TLSClientConfig: e.TLS, Proxy: http.ProxyFromEnvironment}
	}
	return c
}

// adminTarget is the admin API's base URL and bearer token: --admin, else
// admin.listen from --config (dialled on loopback when it listens
// everywhere), else http://127.0.0.1:9090; --token, else admin.token from
// --config, else $NATSGATE_ADMIN_TOKEN. With admin.tls in the config the
// URL is https and the command trusts the certificate in
// admin.tls.cert_file, whatever signed it and whatever names it holds: it
// dials loopback, where a certificate made for the host's public name
// would not verify, and the file is the one the gateway serves. A config
// that does not load is the error, as gateway.LoadConfig reports it, and
// so is a certificate file that does not read.
func adminTarget(configFile, admin, token string) (adminEndpoint, error) {
	e := adminEndpoint{Base: "http://" + loopbackFor(routes.DefaultAdminListen), Token: os.Getenv(gateway.TokenEnv)}
	if configFile != "" {
		t, err := gateway.LoadConfig(configFile)
		if err != nil {
			return adminEndpoint{}, err
		}
		e.Base = "http://" + loopbackFor(t.Config.Admin.Listen)
		if tc := t.Config.Admin.TLS; tc != nil && tc.CertFile != "" {
			pin, err := pinnedTLS(tc.CertFile)
			if err != nil {
				return adminEndpoint{}, err
			}
			e.Base, e.TLS = "https://"+loopbackFor(t.Config.Admin.Listen), pin
		}
		if t.Config.Admin.Token != "" {
			e.Token = t.Config.Admin.Token
		}
	}
	if admin != "" {
		e.Base = admin
		if !strings.Contains(e.Base, "://") {
			e.Base = "http://" + e.Base
		}
		if !strings.HasPrefix(e.Base, "https://") {
			e.TLS = nil
		}
	}
	if token != "" {
		e.Token = token
	}
	e.Base = strings.TrimRight(e.Base, "/")
	return e, nil
}

// pinnedTLS trusts exactly the leaf certificate of certFile (PEM, leaf
// first): the server must present that certificate, byte for byte. A
// certificate rotated in the file is the one the gateway serves within
// its check interval (2 s).
func pinnedTLS(certFile string) (*tls.Config, error) {
	raw, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("admin.tls.cert_file: %w", err)
	}
	var block *pem.Block
	for rest := raw; ; {
		if block, rest = pem.Decode(rest); block == nil || block.Type == "CERTIFICATE" {
			break
		}
	}
	if block == nil {
		return nil, fmt.Errorf("admin.tls.cert_file %s: no PEM certificate in it", certFile)
	}
	leaf := block.Bytes
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is checked below, against the one certificate
		// trusted; the name cannot be, as the command dials loopback.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			if len(rawCerts) == 0 || !bytes.Equal(rawCerts[0], leaf) {
				return fmt.Errorf("the admin listener's certificate is not the one in %s", certFile)
			}
			return nil
		},
	}, nil
}

// loopbackFor turns a listen address into one a client on the same host
// dials: ":9090", "0.0.0.0:9090" and "[::]:9090" listen everywhere,
// loopback included.
func loopbackFor(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch ip := net.ParseIP(host); {
	case host == "":
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified() && ip.To4() != nil:
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// adminDo sends one request to the admin API and returns the body of a
// 200 answer, or an error that says what failed: the URL it could not
// reach, or the problem body's title and detail.
func adminDo(e adminEndpoint, req *http.Request) ([]byte, error) {
	endpoint := req.URL.String()
	req.Header.Set("Accept", "application/json, application/problem+json")
	client := e.client(adminTimeout)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin API at %s: %v", endpoint, unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer from %s: %v", endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		var p adminProblem
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") && json.Unmarshal(raw, &p) == nil && p.Title != "" {
			if p.Detail == "" {
				p.Detail = fmt.Sprintf("status %d", resp.StatusCode)
			}
			return nil, fmt.Errorf("%s: %s", p.Title, p.Detail)
		}
		return nil, fmt.Errorf("%s: %s answered %q", http.StatusText(resp.StatusCode), endpoint, clipText(string(raw), 200))
	}
	return raw, nil
}

// unwrapURLError drops net/http's `Get "URL":` prefix: the message names
// the URL once already.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// clipText shortens a body quoted in an error.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
