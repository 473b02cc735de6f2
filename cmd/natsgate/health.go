package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// healthTimeout bounds the one request natsgate health makes, well inside
// a container runtime's health check timeout (Docker's default is 30s).
const healthTimeout = 5 * time.Second

// healthCmd runs `natsgate health`: it asks a running gateway's /readyz
// and exits 0 when it says ready, 1 when it says not ready or cannot be
// reached. It is the image's HEALTHCHECK: the distroless image has no
// shell and no curl.
func healthCmd(args []string, stdout, stderr io.Writer) int {
	f := newCommandFlags("health", "natsgate health [--admin ADDR | -c FILE] [--cert FILE --key FILE]",
		"health asks a running gateway's admin listener for /readyz and exits 0 when\n"+
			"it is ready, 1 when it is not ready (NATS not connected, shutting down)\n"+
			"or cannot be reached.")
	admin := f.String("admin", "", "the admin listener, `ADDR` or URL (default: admin.listen from --config, else 127.0.0.1:9090)")
	config := f.configFlag()
	cert, key := adminCertFlags(f.FlagSet)
	if code, done := f.parse(args, stdout, stderr); done {
		return code
	}
	e, err := adminTarget(*config, *admin, "")
	if err == nil {
		err = e.withClientCert(*cert, *key)
	}
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	endpoint := e.Base + "/readyz"
	// A redirect is not followed: only the gateway's own 200 means ready,
	// and a 3xx (a proxy, a login page, another service on the port) is
	// reported as not ready with its status.
	client := e.client(healthTimeout)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(endpoint)
	if err != nil {
		fmt.Fprintf(stderr, "natsgate health: cannot reach %s: %v\n", endpoint, unwrapURLError(err))
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	why := strings.TrimSpace(clipText(string(body), 200))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "natsgate health: %s: not ready (%d): %s\n", endpoint, resp.StatusCode, why)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ready\n", endpoint)
	return 0
}
