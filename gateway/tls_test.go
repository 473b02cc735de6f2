package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/internal/testpki"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// newTestCA is a certificate authority named name, made for one test.
func newTestCA(t *testing.T, name string) *testpki.CA {
	t.Helper()
	ca, err := testpki.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue signs a server certificate for 127.0.0.1 and localhost, the CA
// after it (a chain is fine in cert_file), or a client certificate, valid
// from an hour ago for validFor.
func issue(t *testing.T, ca *testpki.CA, cn string, client bool, validFor time.Duration) *testpki.Pair {
	t.Helper()
	usage := testpki.WithChain()
	if client {
		usage = testpki.ClientAuth()
	}
	return mustIssue(t, ca, cn, usage, testpki.ValidFor(validFor))
}

// mustIssue is ca.Issue, failing t on an error.
func mustIssue(t *testing.T, ca *testpki.CA, cn string, opts ...testpki.Option) *testpki.Pair {
	t.Helper()
	p, err := ca.Issue(cn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsFiles writes a pair to dir as <name>.crt and <name>.key.
func tlsFiles(t *testing.T, dir, name string, p *testpki.Pair) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := p.WriteFiles(dir, name+".crt", name+".key")
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// tlsClient is Go's client trusting pool, speaking HTTP/2 only (h2) or
// HTTP/1.1 only, showing certs.
func tlsClient(pool *x509.CertPool, h2 bool, certs ...tls.Certificate) *http.Client {
	p := new(http.Protocols)
	if h2 {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}, Protocols: p}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, method, url string, body io.Reader, h http.Header) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// tlsGateway is a gateway serving HTTPS with a pair from ca.
type tlsGateway struct {
	*testGateway
	HTTPS, AdminHTTPS string // https:// base URLs
	certFile, keyFile string
	ca                *testpki.CA
	served            *testpki.Pair
	log               *syncBuffer
	dir               string
}

// startTLSGateway serves yamlText with http.tls set to a fresh pair from
// ca; "$CERT" and "$KEY" in yamlText name the pair's files.
func startTLSGateway(t *testing.T, yamlText string) *tlsGateway {
	t.Helper()
	ca := newTestCA(t, "natsgate test CA")
	dir := t.TempDir()
	served := issue(t, ca, "natsgate", false, 24*time.Hour)
	certFile, keyFile := tlsFiles(t, dir, "server", served)
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.PEM)
	// Quoted: a test's folder may hold spaces and commas.
	yamlText = strings.NewReplacer("$CERT", strconv.Quote(certFile), "$KEY", strconv.Quote(keyFile)).Replace(yamlText)
	ns := natstest.RunServer(t)
	logBuf := &syncBuffer{}
	gw := startGatewayLogging(t, ns, yamlText, logBuf)
	tg := &tlsGateway{testGateway: gw, certFile: certFile, keyFile: keyFile, ca: ca, served: served, log: logBuf, dir: dir,
		HTTPS: "https://" + gw.Addr(), AdminHTTPS: "https://" + gw.AdminAddr()}
	return tg
}

// servedSerial is the serial of the certificate a new handshake gets.
func servedSerial(t *testing.T, addr string, pool *x509.CertPool) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

const tlsRoute = `
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
`

func userWorker(t *testing.T, gw *tlsGateway) {
	t.Helper()
	respond(t, natstest.Connect(t, gw.NS), "users.*.get", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte("hello " + m.Header.Get("Http-Param-id"))}
	})
}

// TestTLSVersions: TLS 1.2 and 1.3 clients are served; a client that
// offers at most TLS 1.1 is refused at the handshake, and with
// min_version 1.3 so is a TLS 1.2 client.
func TestTLSVersions(t *testing.T) {
	for _, tc := range []struct {
		minVersion string
		client     uint16 // the client's highest version
		ok         bool
	}{
		{"1.2", tls.VersionTLS12, true},
		{"1.2", tls.VersionTLS13, true},
		{"1.2", tls.VersionTLS11, false},
		{"1.3", tls.VersionTLS12, false},
		{"1.3", tls.VersionTLS13, true},
	} {
		t.Run(fmt.Sprintf("min %s client %s", tc.minVersion, tls.VersionName(tc.client)), func(t *testing.T) {
			gw := startTLSGateway(t, "http:\n  tls: {cert_file: $CERT, key_file: $KEY, min_version: \""+tc.minVersion+"\"}\nroutes:"+tlsRoute)
			conn, err := tls.Dial("tcp", gw.Addr(), &tls.Config{RootCAs: gw.ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tc.client})
			if !tc.ok {
				if err == nil {
					conn.Close()
					t.Fatalf("a client offering at most %s was served", tls.VersionName(tc.client))
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			if v := conn.ConnectionState().Version; v != tc.client {
				t.Errorf("negotiated %s, want %s", tls.VersionName(v), tls.VersionName(tc.client))
			}
		})
	}
}

// TestHTTP2ByALPN: both listeners negotiate h2 with a client that offers
// it and serve HTTP/1.1 to one that does not; the plain-HTTP client is
// refused, not answered in cleartext.
func TestHTTP2ByALPN(t *testing.T) {
	gw := startTLSGateway(t, "http:\n  tls: {cert_file: $CERT, key_file: $KEY}\nadmin:\n  tls: {cert_file: $CERT, key_file: $KEY}\nroutes:"+tlsRoute)
	userWorker(t, gw)
	for _, h2 := range []bool{true, false} {
		c := tlsClient(gw.ca.Pool(), h2)
		resp, body, err := get(t, c, "GET", gw.HTTPS+"/users/7", nil, nil)
		if err != nil {
			t.Fatalf("h2 %v: %v", h2, err)
		}
		want := 1
		if h2 {
			want = 2
		}
		if resp.ProtoMajor != want || resp.StatusCode != 200 || body != "hello 7" {
			t.Errorf("h2 %v: got %s %d %q, want HTTP/%d 200 \"hello 7\"", h2, resp.Proto, resp.StatusCode, body, want)
		}
		if resp.TLS == nil || (h2 && resp.TLS.NegotiatedProtocol != "h2") {
			t.Errorf("h2 %v: ALPN negotiated %+v", h2, resp.TLS)
		}
		resp, _, err = get(t, c, "GET", gw.AdminHTTPS+"/healthz", nil, nil)
		if err != nil || resp.ProtoMajor != want || resp.StatusCode != 200 {
			t.Errorf("admin, h2 %v: %v %v", h2, resp, err)
		}
	}
	if resp, err := http.Get(gw.URL + "/users/7"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP on the TLS listener was served: %d %q", resp.StatusCode, b)
		}
	}
}

// TestH2C: http.h2c serves cleartext HTTP/2 to a client with prior
// knowledge, and HTTP/1.1 still.
func TestH2C(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, "http:\n  h2c: true\nroutes:"+tlsRoute)
	respond(t, natstest.Connect(t, ns), "users.*.get", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("hi")} })
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: 10 * time.Second}
	resp, body, err := get(t, c, "GET", gw.URL+"/users/1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || body != "hi" {
		t.Errorf("h2c: got %s %d %q, want HTTP/2 200 \"hi\"", resp.Proto, resp.StatusCode, body)
	}
	if resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil); resp.ProtoMajor != 1 || body != "hi" {
		t.Errorf("HTTP/1.1 beside h2c: %s %q", resp.Proto, body)
	}
}

// TestCurlHTTP2: curl, a client not written in Go, negotiates h2.
func TestCurlHTTP2(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not on PATH")
	}
	if v, err := exec.Command(curl, "--version").Output(); err != nil || !strings.Contains(string(v), "HTTP2") {
		t.Skipf("this curl has no HTTP/2: %s", v)
	}
	gw := startTLSGateway(t, "http:\n  tls: {cert_file: $CERT, key_file: $KEY}\nroutes:"+tlsRoute)
	userWorker(t, gw)
	out, err := exec.Command(curl, "--http2", "-sS", "--max-time", "10", "--cacert", filepath.Join(gw.dir, "ca.pem"),
		"-w", "\n%{http_version} %{http_code}", gw.HTTPS+"/users/9").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	if got := string(out); got != "hello 9\n2 200" {
		t.Errorf("curl --http2 got %q, want %q", got, "hello 9\n2 200")
	}
}

// TestStatusRowsOverHTTP2: the status table's rows, and the guarantees
// around them, hold over HTTP/2 as over HTTP/1.1: request, publish,
// JetStream and legacy routes, body limits, params as one token, control
// headers kept from NATS, shadow copies, fallback, and a legacy answer
// streamed as it comes.
func TestStatusRowsOverHTTP2(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/stream") {
			_, _ = io.WriteString(w, "first;")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
			_, _ = io.WriteString(w, "second")
			return
		}
		_, _ = io.WriteString(w, `{"id":1,"from":"legacy"}`)
	}))
	t.Cleanup(legacy.Close)
	gw := startTLSGateway(t, `
http:
  tls: {cert_file: $CERT, key_file: $KEY}
nats:
  streams: [{name: ORDERS, subjects: [orders.>]}]
defaults: {max_body: 1KiB, max_subject: 40}
upstreams:
  legacy: {url: `+legacy.URL+`, timeout: 5s}
routes:
  - {name: get-user, method: GET, path: "/users/{id}", nats: {subject: "users.{id}.get", timeout: 2s}}
  - {name: fail, method: GET, path: /fail, nats: {subject: fail.get, timeout: 2s}}
  - {name: slow, method: GET, path: /slow, nats: {subject: slow.get, timeout: 300ms}}
  - {name: nobody, method: GET, path: /nobody, nats: {subject: nobody.get, timeout: 2s}}
  - {name: upload, method: POST, path: /upload, nats: {subject: upload.post, timeout: 500ms}}
  - {name: post-event, method: POST, path: /events, nats: {subject: events.created, pattern: publish}}
  - {name: create-order, method: POST, path: /orders, nats: {subject: orders.created, pattern: jetstream}}
  - {name: legacy-api, method: GET, path: "/legacy/*", upstream: legacy}
  - {name: shadowed, method: GET, path: "/shadow/{id}", nats: {subject: "shadow.{id}.get", timeout: 2s}, upstream: legacy, cutover: shadow}
  - {name: fallback, method: GET, path: "/fb/{id}", nats: {subject: "gone.{id}", timeout: 2s}, upstream: legacy, cutover: nats, fallback: true}
`)
	worker := natstest.Connect(t, gw.NS)
	respond(t, worker, "users.*.get", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte("user " + m.Header.Get("Http-Param-id"))} })
	respond(t, worker, "fail.get", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Header: nats.Header{"Nats-Service-Error-Code": {"404"}, "Nats-Service-Error": {"no such thing"}}}
	})
	respond(t, worker, "slow.get", func(m *nats.Msg) *nats.Msg { return nil })
	respond(t, worker, "upload.post", func(m *nats.Msg) *nats.Msg { return &nats.Msg{Data: m.Data} })
	var shadowCopies atomic.Int64
	respond(t, worker, "shadow.*.get", func(m *nats.Msg) *nats.Msg {
		shadowCopies.Add(1)
		return &nats.Msg{Data: []byte(`{"id":1,"from":"legacy"}`)}
	})
	events, err := worker.SubscribeSync("events.created")
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Flush(); err != nil {
		t.Fatal(err)
	}
	c := tlsClient(gw.ca.Pool(), true)

	for _, tc := range []struct {
		name, method, path, body string
		header                   http.Header
		status                   int
		inBody, backend          string
	}{
		{"reply", "GET", "/users/7", "", nil, 200, "user 7", "nats"},
		{"worker error code", "GET", "/fail", "", nil, 404, "no such thing", ""},
		{"no responders", "GET", "/nobody", "", nil, 503, `"kind":"no_responders"`, ""},
		{"timeout", "GET", "/slow", "", nil, 504, `"route":"slow"`, ""},
		{"param of two tokens", "GET", "/users/a.b", "", nil, 400, `"route":"get-user"`, ""},
		{"subject too long", "GET", "/users/" + strings.Repeat("x", 60), "", nil, 414, `"route":"get-user"`, ""},
		{"body over max_body", "POST", "/upload", strings.Repeat("x", 2000), nil, 413, `"route":"upload"`, ""},
		{"body within max_body", "POST", "/upload", "ping", nil, 200, "ping", ""},
		{"publish", "POST", "/events", "e", hostileHeaders, 202, `"subject":"events.created"`, ""},
		{"jetstream", "POST", "/orders", "o", hostileHeaders, 202, `"stream":"ORDERS"`, ""},
		{"legacy", "GET", "/legacy/x", "", nil, 200, `"from":"legacy"`, "legacy"},
		{"fallback", "GET", "/fb/1", "", nil, 200, `"from":"legacy"`, "legacy"},
		{"shadow", "GET", "/shadow/1", "", nil, 200, `"from":"legacy"`, "legacy"},
		{"no route", "GET", "/nowhere", "", nil, 404, `"route":null`, ""},
		{"wrong method", "DELETE", "/users/1", "", nil, 405, `"kind":"method_not_allowed"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			h := http.Header{HeaderRequestID: {"req-" + strings.ReplaceAll(tc.name, " ", "-")}}
			for k, v := range tc.header {
				h[k] = v
			}
			resp, got, err := get(t, c, tc.method, gw.HTTPS+tc.path, body, h)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ProtoMajor != 2 {
				t.Fatalf("served over %s, want HTTP/2", resp.Proto)
			}
			if resp.StatusCode != tc.status || !strings.Contains(got, tc.inBody) {
				t.Errorf("got %d %s, want %d with %s", resp.StatusCode, got, tc.status, tc.inBody)
			}
			if tc.status >= 400 && !strings.Contains(got, `"request_id":"`+h.Get(HeaderRequestID)+`"`) {
				t.Errorf("the problem body %s does not name the request id", got)
			}
			if tc.backend != "" && resp.Header.Get(HeaderBackend) != tc.backend {
				t.Errorf("answered by %q, want %q", resp.Header.Get(HeaderBackend), tc.backend)
			}
		})
	}
	m, err := events.NextMsg(15 * time.Second)
	if err != nil {
		t.Fatalf("the publish subscriber got nothing: %v", err)
	}
	checkNoClientControl(t, "publish over h2", m.Header)
	natstest.Eventually(t, 15*time.Second, "the shadow copy to reach the worker", func() bool { return shadowCopies.Load() > 0 })

	t.Run("legacy answer streamed", func(t *testing.T) {
		resp, err := c.Get(gw.HTTPS + "/legacy/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		first := make([]byte, len("first;"))
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first;" {
			t.Fatalf("first chunk %q, %v: the answer was held back until the upstream finished", first, err)
		}
		releaseOnce.Do(func() { close(release) })
		rest, _ := io.ReadAll(resp.Body)
		if string(rest) != "second" || resp.ProtoMajor != 2 {
			t.Errorf("rest %q over %s", rest, resp.Proto)
		}
	})

	t.Run("stalled body gets 408", func(t *testing.T) {
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		go func() { _, _ = pw.Write([]byte("par")) }() // then nothing, never closed
		req, _ := http.NewRequest("POST", gw.HTTPS+"/upload", pr)
		req.ContentLength = 100
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 408 || !strings.Contains(string(b), `"route":"upload"`) {
			t.Errorf("got %d %s, want 408 naming the route", resp.StatusCode, b)
		}
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("answered after %v; the route's timeout is 500ms", d)
		}
	})
}

// adminTLSConfig is a gateway whose admin listener asks for client
// certificates from clientCA, in mode (require or mutations).
func adminTLSConfig(legacyURL, clientCA, mode string) string {
	return `
admin:
  token: secret
  tls: {cert_file: $CERT, key_file: $KEY, client_ca_file: ` + strconv.Quote(clientCA) + `, client_auth: ` + mode + `}
upstreams:
  legacy: {url: ` + legacyURL + `, timeout: 2s}
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
    upstream: legacy
    cutover: legacy
`
}

// TestAdminMutualTLS: with client_auth require, a client without a
// certificate, or with one from another CA, is refused at the handshake;
// with one from client_ca_file the cutover PUT works. With mutations,
// anyone may read, and a change needs the certificate (403 problem
// otherwise, naming the route and the request id).
func TestAdminMutualTLS(t *testing.T) {
	legacy := startLegacy(t)
	clients := newTestCA(t, "clients CA")
	other := newTestCA(t, "another CA")
	right := issue(t, clients, "ops", true, time.Hour).TLSCertificate()
	wrong := issue(t, other, "ops", true, time.Hour).TLSCertificate()
	put := func(c *http.Client, url string) (*http.Response, string, error) {
		return get(t, c, "PUT", url+"/admin/routes/get-user/cutover", strings.NewReader(`{"cutover":"nats"}`),
			http.Header{"Authorization": {"Bearer secret"}, HeaderRequestID: {"put-1"}})
	}
	// The clients' CA must be in place before the gateway starts, so each
	// case writes it first into a folder of its own.
	start := func(t *testing.T, mode string) *tlsGateway {
		t.Helper()
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "clients.pem"), clients.PEM)
		return startTLSGateway(t, adminTLSConfig(legacy.URL, filepath.Join(dir, "clients.pem"), mode))
	}
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("require/h2=%v", h2), func(t *testing.T) {
			gw := start(t, "require")
			if _, _, err := get(t, tlsClient(gw.ca.Pool(), h2), "GET", gw.AdminHTTPS+"/healthz", nil, nil); err == nil {
				t.Error("a client without a certificate was served")
			}
			if _, _, err := get(t, tlsClient(gw.ca.Pool(), h2, wrong), "GET", gw.AdminHTTPS+"/healthz", nil, nil); err == nil {
				t.Error("a client with a certificate from another CA was served")
			}
			resp, body, err := put(tlsClient(gw.ca.Pool(), h2, right), gw.AdminHTTPS)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("PUT with the right certificate: %v %v %s", resp, err, body)
			}
			natstest.Eventually(t, 15*time.Second, "the cutover to apply", func() bool { return stageOf(gw.testGateway, "get-user").Stage == "nats" })
		})
	}
	t.Run("mutations", func(t *testing.T) {
		gw := start(t, "mutations")
		anon := tlsClient(gw.ca.Pool(), true)
		if resp, _, err := get(t, anon, "GET", gw.AdminHTTPS+"/admin/routes", nil, nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET without a certificate: %v %v", resp, err)
		}
		for _, c := range []*http.Client{anon, tlsClient(gw.ca.Pool(), true, wrong)} {
			resp, body, err := put(c, gw.AdminHTTPS)
			if err == nil && resp.StatusCode == 200 {
				t.Fatalf("PUT without a verified certificate was served: %s", body)
			}
			if err == nil && (resp.StatusCode != 403 || !strings.Contains(body, `"route":"get-user"`) || !strings.Contains(body, `"request_id":"put-1"`)) {
				t.Errorf("PUT without a verified certificate: %d %s, want a 403 problem naming the route and request id", resp.StatusCode, body)
			}
		}
		if stageOf(gw.testGateway, "get-user").Stage != "legacy" {
			t.Fatal("a refused PUT moved the route")
		}
		resp, body, err := put(tlsClient(gw.ca.Pool(), true, right), gw.AdminHTTPS)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("PUT with the right certificate: %v %v %s", resp, err, body)
		}
	})
}

// TestCertificateRotationUnderLoad: new files are picked up by the
// watcher while clients keep sending, with no failed request; new
// handshakes get the new certificate and the expiry gauge follows it.
func TestCertificateRotationUnderLoad(t *testing.T) {
	gw := startTLSGateway(t, "http:\n  tls: {cert_file: $CERT, key_file: $KEY}\nroutes:"+tlsRoute)
	userWorker(t, gw)
	expiry := func() float64 {
		return testutil.ToFloat64(gw.metrics.TLSCertificateExpiry.WithLabelValues("http"))
	}
	if got, want := expiry(), float64(gw.served.Cert.NotAfter.Unix()); got != want {
		t.Errorf("natsgate_tls_certificate_expiry_seconds = %v, want %v", got, want)
	}
	if got := servedSerial(t, gw.Addr(), gw.ca.Pool()); got.Cmp(gw.served.Cert.SerialNumber) != 0 {
		t.Fatalf("serving serial %v, want %v", got, gw.served.Cert.SerialNumber)
	}

	// Load: four clients, two keeping connections alive (h2 and
	// HTTP/1.1), two making a new handshake for every request; bounded
	// in count and time.
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	clients := []*http.Client{tlsClient(gw.ca.Pool(), true), tlsClient(gw.ca.Pool(), false), tlsClient(gw.ca.Pool(), true), tlsClient(gw.ca.Pool(), false)}
	for i := 2; i < 4; i++ {
		clients[i].Transport.(*http.Transport).DisableKeepAlives = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 5000 && time.Now().Before(deadline); n++ {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				resp, err := c.Get(gw.HTTPS + "/users/1")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	natstest.Eventually(t, 10*time.Second, "load to start", func() bool { return sent.Load() > 50 })

	next := issue(t, gw.ca, "natsgate", false, 48*time.Hour)
	writeFile(t, gw.certFile, next.CertPEM) // not atomic: the key follows
	writeFile(t, gw.keyFile, next.KeyPEM)
	natstest.Eventually(t, 15*time.Second, "new handshakes to get the new certificate", func() bool {
		return servedSerial(t, gw.Addr(), gw.ca.Pool()).Cmp(next.Cert.SerialNumber) == 0
	})
	before := sent.Load()
	natstest.Eventually(t, 10*time.Second, "load to go on after the rotation", func() bool { return sent.Load() > before+50 })
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed during the rotation; the first: %v", n, sent.Load(), firstErr.Load())
	}
	if got, want := expiry(), float64(next.Cert.NotAfter.Unix()); got != want {
		t.Errorf("natsgate_tls_certificate_expiry_seconds = %v after the rotation, want %v", got, want)
	}
	t.Logf("%d requests, none failed, across the rotation", sent.Load())
}

// TestBrokenRotatedPairKeepsTheOldOne: a new certificate whose key does
// not match, or a file that is not PEM, is logged and the old pair keeps
// serving; a good pair afterwards is taken.
func TestBrokenRotatedPairKeepsTheOldOne(t *testing.T) {
	gw := startTLSGateway(t, "http:\n  tls: {cert_file: $CERT, key_file: $KEY}\nroutes:"+tlsRoute)
	a, b := issue(t, gw.ca, "natsgate", false, time.Hour), issue(t, gw.ca, "natsgate", false, time.Hour)
	for _, tc := range []struct {
		name      string
		cert, key []byte
	}{
		{"mismatched key", a.CertPEM, b.KeyPEM},
		{"not PEM", []byte("not a certificate"), a.KeyPEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, gw.certFile, tc.cert)
			writeFile(t, gw.keyFile, tc.key)
			gw.ReloadCertificates() // what SIGHUP does
			if got := servedSerial(t, gw.Addr(), gw.ca.Pool()); got.Cmp(gw.served.Cert.SerialNumber) != 0 {
				t.Fatalf("serving serial %v after a broken rotation, want the old %v", got, gw.served.Cert.SerialNumber)
			}
			if !strings.Contains(gw.log.String(), "TLS certificate not reloaded; the old one keeps serving") {
				t.Errorf("the broken pair was not logged:\n%s", gw.log.String())
			}
		})
	}
	writeFile(t, gw.certFile, b.CertPEM)
	writeFile(t, gw.keyFile, b.KeyPEM)
	gw.ReloadCertificates()
	if got := servedSerial(t, gw.Addr(), gw.ca.Pool()); got.Cmp(b.Cert.SerialNumber) != 0 {
		t.Errorf("serving serial %v after a good rotation, want %v", got, b.Cert.SerialNumber)
	}
}

// TestReloadFileRereadsCertificates: SIGHUP's path (ReloadFile) reads the
// certificates again, even when the config file did not change.
func TestReloadFileRereadsCertificates(t *testing.T) {
	gw := startTLSGateway(t, "http:\n  tls: {cert_file: $CERT, key_file: $KEY}\nroutes:"+tlsRoute)
	cfgFile := filepath.Join(gw.dir, "natsgate.yaml")
	writeFile(t, cfgFile, []byte("http:\n  tls: {cert_file: "+gw.certFile+", key_file: "+gw.keyFile+"}\nroutes:"+tlsRoute))
	gw.stopCertWatch() // so that only ReloadFile can read the new pair
	next := issue(t, gw.ca, "natsgate", false, time.Hour)
	writeFile(t, gw.certFile, next.CertPEM)
	writeFile(t, gw.keyFile, next.KeyPEM)
	gw.ReloadFile(cfgFile)
	if got := servedSerial(t, gw.Addr(), gw.ca.Pool()); got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("serving serial %v after ReloadFile, want %v", got, next.Cert.SerialNumber)
	}
}

// TestLoadConfigChecksTLSFiles: files that cannot serve are config errors
// naming file, line and field, as validate prints them.
func TestLoadConfigChecksTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "CA")
	a, b := issue(t, ca, "a", false, time.Hour), issue(t, ca, "b", false, time.Hour)
	certA, keyA := tlsFiles(t, dir, "a", a)
	_, keyB := tlsFiles(t, dir, "b", b)
	notPEM := filepath.Join(dir, "not.pem")
	writeFile(t, notPEM, []byte("hello"))
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"missing certificate", "http:\n  tls:\n    cert_file: " + missing + "\n    key_file: " + keyA + "\n",
			`natsgate.yaml:3: http.tls.cert_file: cannot read the certificate`},
		{"key of another certificate", "http:\n  tls:\n    cert_file: " + certA + "\n    key_file: " + keyB + "\n",
			`natsgate.yaml:4: http.tls.key_file: the key in ` + keyB + ` does not match the certificate in ` + certA},
		{"certificate not PEM", "admin:\n  tls:\n    cert_file: " + notPEM + "\n    key_file: " + keyA + "\n",
			`natsgate.yaml:3: admin.tls.cert_file: `},
		{"client CA not PEM", "admin:\n  tls:\n    cert_file: " + certA + "\n    key_file: " + keyA + "\n    client_ca_file: " + notPEM + "\n",
			`natsgate.yaml:5: admin.tls.client_ca_file: ` + notPEM + ` holds no PEM certificate`},
		{"upstream CA missing", "upstreams:\n  old:\n    url: https://127.0.0.1:1\n    tls:\n      ca_file: " + missing + "\n",
			`natsgate.yaml:5: upstreams.old.tls.ca_file: cannot read the authorities`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, "natsgate.yaml")
			writeFile(t, file, []byte(tc.yaml+"routes:"+tlsRoute))
			_, err := LoadConfig(file)
			if err == nil {
				t.Fatal("loaded without an error")
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tc.want)) {
				t.Errorf("error:\n%v\nwant it to hold %q", err, filepath.Join(dir, tc.want))
			}
		})
	}
	file := filepath.Join(dir, "natsgate.yaml")
	writeFile(t, file, []byte("http:\n  tls: {cert_file: "+certA+", key_file: "+keyA+"}\nroutes:"+tlsRoute))
	if _, err := LoadConfig(file); err != nil {
		t.Errorf("a good pair: %v", err)
	}
}

// TestLegacyUpstreamOverHTTPS: an https upstream that asks for a client
// certificate is reached with the upstream's tls settings; without its
// CA, or with the wrong server_name, the client gets 502; and
// insecure_skip_verify is served but logged as a warning at start.
func TestLegacyUpstreamOverHTTPS(t *testing.T) {
	ca := newTestCA(t, "upstream CA")
	dir := t.TempDir()
	serverPair := issue(t, ca, "upstream", false, time.Hour)
	clientCert, clientKey := tlsFiles(t, dir, "client", issue(t, ca, "natsgate", true, time.Hour))
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, ca.PEM)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			who = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		_, _ = io.WriteString(w, "legacy sees "+who)
	}))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{serverPair.TLSCertificate()}, ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
	up.StartTLS()
	t.Cleanup(up.Close)

	ns := natstest.RunServer(t)
	logBuf := &syncBuffer{}
	gw := startGatewayLogging(t, ns, fmt.Sprintf(`
log: {format: json}
upstreams:
  good: {url: %[1]s, tls: {ca_file: %[2]s, cert_file: %[3]s, key_file: %[4]s, server_name: localhost}}
  untrusted: {url: %[1]s}
  wrong-name: {url: %[1]s, tls: {ca_file: %[2]s, server_name: elsewhere.example}}
  insecure: {url: %[1]s, tls: {insecure_skip_verify: true}}
routes:
  - {name: good, method: GET, path: /good, upstream: good}
  - {name: untrusted, method: GET, path: /untrusted, upstream: untrusted}
  - {name: wrong-name, method: GET, path: /wrong-name, upstream: wrong-name}
  - {name: insecure, method: GET, path: /insecure, upstream: insecure}
`, up.URL, caFile, clientCert, clientKey), logBuf)
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/good", 200, "legacy sees natsgate"},
		{"/untrusted", 502, `"route":"untrusted"`},
		{"/wrong-name", 502, `"route":"wrong-name"`},
		{"/insecure", 200, "legacy sees "},
	} {
		resp, body := do(t, "GET", gw.URL+tc.path, nil, nil)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s: %d %s, want %d with %q", tc.path, resp.StatusCode, body, tc.status, tc.body)
		}
	}
	var warned bool
	for _, line := range strings.Split(logBuf.String(), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["level"] == "WARN" && e["upstream"] == "insecure" &&
			strings.Contains(fmt.Sprint(e["msg"]), "insecure_skip_verify") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("insecure_skip_verify was not logged as a warning:\n%s", logBuf.String())
	}
}

// TestTLSExpiryMetricOnMetrics: /metrics carries the expiry of each TLS
// listener's certificate, labelled by listener, as the alert rule reads it
// (the demo has no TLS, so the rules check in cmd/natsgate relies on this).
func TestTLSExpiryMetricOnMetrics(t *testing.T) {
	gw := startTLSGateway(t, "http:\n  tls: {cert_file: $CERT, key_file: $KEY}\nadmin:\n  tls: {cert_file: $CERT, key_file: $KEY}\nroutes:"+tlsRoute)
	_, body, err := get(t, tlsClient(gw.ca.Pool(), false), "GET", gw.AdminHTTPS+"/metrics", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"http", "admin"} {
		want := fmt.Sprintf(`natsgate_tls_certificate_expiry_seconds{listener=%q} %s`, l, strconv.FormatFloat(float64(gw.served.Cert.NotAfter.Unix()), 'g', -1, 64))
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
