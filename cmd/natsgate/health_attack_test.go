package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealthDoesNotFollowRedirects: /readyz is the gateway's own answer.
// A 3xx from the admin address (a proxy in front of it, a login page, a
// port reused by another service) is not "ready", whatever the page it
// points to answers; following it would make the HEALTHCHECK pass on a
// gateway that never said so.
func TestHealthDoesNotFollowRedirects(t *testing.T) {
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("some other service, all fine"))
	}))
	defer elsewhere.Close()
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect} {
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL+"/ok", status)
		}))
		var stdout, stderr bytes.Buffer
		code := run([]string{"health", "--admin", redirector.URL}, &stdout, &stderr)
		redirector.Close()
		if code != 1 || !strings.Contains(stderr.String(), "not ready") {
			t.Errorf("/readyz answering %d to elsewhere: exit %d, want 1 saying not ready\nstdout:\n%s\nstderr:\n%s", status, code, stdout.String(), stderr.String())
		}
	}
}
