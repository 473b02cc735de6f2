package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/natsgate/natsgate/internal/natstest"
)

// Behind a load balancer that terminates TLS, the legacy service must see
// the scheme and host the client used: an application that builds
// absolute URLs or redirects to https from X-Forwarded-Proto otherwise
// sees "http" and loops. From a trusted proxy natsgate keeps a valid
// X-Forwarded-Proto and X-Forwarded-Host, as it keeps and extends
// X-Forwarded-For; from any other peer, and for values that are not one
// plain scheme or host, it sets its own.
func TestForwardedProtoAndHostFromATrustedProxyAreKept(t *testing.T) {
	ns := natstest.RunServer(t)
	type seen struct{ proto, host string }
	got := make(chan seen, 1)
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Host")}
	}))
	t.Cleanup(legacy.Close)
	config := func(http string) string {
		return http + `
upstreams:
  legacy: {url: ` + legacy.URL + `}
routes:
  - {name: all, method: "*", path: "/*", upstream: legacy}
`
	}
	trusting := startGateway(t, ns, config("http: {trusted_proxies: [127.0.0.1/32]}"))
	untrusting := startGateway(t, ns, config(""))
	for _, tc := range []struct {
		name      string
		gw        *testGateway
		proto     []string
		host      []string
		wantProto string
		wantHost  string // "" for the Host the gateway was asked for
	}{
		{"trusted proxy", trusting, []string{"https"}, []string{"api.example.com"}, "https", "api.example.com"},
		{"trusted proxy, upper case", trusting, []string{"HTTPS"}, []string{"api.example.com:8443"}, "https", "api.example.com:8443"},
		{"trusted proxy, no headers", trusting, nil, nil, "http", ""},
		{"trusted proxy, a list", trusting, []string{"https, http"}, []string{"a.example, b.example"}, "http", ""},
		{"trusted proxy, two headers", trusting, []string{"https", "http"}, []string{"a.example", "b.example"}, "http", ""},
		{"trusted proxy, another scheme", trusting, []string{"javascript"}, []string{"a b"}, "http", ""},
		{"untrusted peer", untrusting, []string{"https"}, []string{"api.example.com"}, "http", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			h["X-Forwarded-Proto"], h["X-Forwarded-Host"] = tc.proto, tc.host
			resp, body := do(t, "GET", tc.gw.URL+"/page", nil, h)
			if resp.StatusCode != 200 {
				t.Fatalf("GET /page: %d %s", resp.StatusCode, body)
			}
			s := <-got
			wantHost := tc.wantHost
			if wantHost == "" {
				wantHost = tc.gw.Addr()
			}
			if s.proto != tc.wantProto || s.host != wantHost {
				t.Errorf("the upstream saw X-Forwarded-Proto %q and X-Forwarded-Host %q, want %q and %q", s.proto, s.host, tc.wantProto, wantHost)
			}
		})
	}
}
