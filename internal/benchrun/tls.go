package benchrun

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/internal/loadgen"
	"github.com/natsgate/natsgate/internal/testpki"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// tlsSide is what scenarios H and I measure: natsgate as shipped with
// http.tls on, a self-signed certificate made for the run, and clients
// that trust it, speaking HTTP/1.1 (H) or h2 (I). Each client keeps one
// connection with one request in flight, as the plain clients do, so the
// rows differ by TLS and the protocol alone.
type tlsSide struct {
	gw     *gateway.Server
	dir    string
	url    string
	h1, h2 loadgen.Clients
}

// startTLS starts the HTTPS natsgate of scenarios H and I, its access log
// off like G's so that H against G is the cost of TLS.
func (r *rig) startTLS(ctx context.Context, clients int) error {
	dir, err := os.MkdirTemp("", "natsgate-bench-tls-")
	if err != nil {
		return err
	}
	r.tls = &tlsSide{dir: dir}
	pair, err := testpki.SelfSigned("natsgate-bench")
	if err != nil {
		return err
	}
	certFile, keyFile, err := pair.WriteFiles(dir, "bench.crt", "bench.key")
	if err != nil {
		return err
	}
	pool := pair.Pool()
	cfg := gatewayConfig(r.ns.ClientURL(), r.legacy.url, r.gwName+"-tls", false)
	cfg = strings.Replace(cfg, "http:\n  listen: 127.0.0.1:0\n",
		"http:\n  listen: 127.0.0.1:0\n  tls: {cert_file: "+strconv.Quote(certFile)+", key_file: "+strconv.Quote(keyFile)+"}\n", 1)
	table, err := routes.Load("bench-tls.yaml", []byte(cfg), noEnv)
	if err != nil {
		return err
	}
	gw, err := gateway.New(ctx, gateway.Options{Table: table, Logger: discardLogger(), Registry: prometheus.NewRegistry()})
	if err != nil {
		return err
	}
	if err := gw.Start(); err != nil {
		_ = gw.Shutdown(ctx)
		return err
	}
	r.tls.gw, r.tls.url = gw, "https://"+gw.Addr()
	r.tls.h1, r.tls.h2 = tlsClients(clients, pool, false), tlsClients(clients, pool, true)
	return nil
}

func (t *tlsSide) close() {
	if t == nil {
		return
	}
	for _, cs := range []loadgen.Clients{t.h1, t.h2} {
		cs.CloseIdleConnections()
	}
	if t.gw != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = t.gw.Shutdown(ctx)
		cancel()
	}
	_ = os.RemoveAll(t.dir)
}

// tlsClients are loadgen's clients trusting pool, speaking h2 only or
// HTTP/1.1 only.
func tlsClients(n int, pool *x509.CertPool, h2 bool) loadgen.Clients {
	cs := loadgen.NewClients(n)
	for _, c := range cs {
		tr := c.Transport.(*http.Transport)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		p := new(http.Protocols)
		if h2 {
			p.SetHTTP2(true)
		} else {
			p.SetHTTP1(true)
		}
		tr.Protocols = p
	}
	return cs
}
