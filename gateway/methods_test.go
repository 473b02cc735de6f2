package gateway

import (
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// A route with method "*" takes any method token, the extension methods
// of WebDAV and caches (PURGE, PROPFIND, REPORT, ...) as well as the
// standard ones, and its worker sees the method as the client sent it. A
// route with one method still refuses every other with 405 and an Allow
// that lists what the path does take.
func TestAnyMethodRouteTakesExtensionMethods(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: dav
    method: "*"
    path: /dav/{id}
    nats: {subject: "dav.{id}", timeout: 5s}
  - name: get-thing
    method: GET
    path: /things/{id}
    nats: {subject: "things.{id}.get", timeout: 5s}
  - name: any-thing
    method: "*"
    path: /things/{id}/raw
    nats: {subject: "things.{id}.raw", timeout: 5s}
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 5s}
  - name: put-user
    method: PUT
    path: /users/{id}
    nats: {subject: "users.{id}.put", timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, ">", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte(m.Subject + " " + m.Header.Get(HeaderMethod) + " " + m.Header.Get(HeaderRoute))}
	})

	for _, tt := range []struct {
		method, path, want string
	}{
		{"PURGE", "/dav/1", "dav.1 PURGE dav"},
		{"PROPFIND", "/dav/1", "dav.1 PROPFIND dav"},
		{"REPORT", "/dav/1", "dav.1 REPORT dav"},
		{"MKCOL", "/dav/1", "dav.1 MKCOL dav"},
		{"purge", "/dav/1", "dav.1 purge dav"}, // methods are case-sensitive: forwarded as sent
		{"X-CUSTOM_1", "/dav/1", "dav.1 X-CUSTOM_1 dav"},
		{"GET", "/dav/1", "dav.1 GET dav"},
		{"DELETE", "/dav/1", "dav.1 DELETE dav"},
		{"QUERY", "/dav/1", "dav.1 QUERY dav"},
		{"PURGE", "/things/2/raw", "things.2.raw PURGE any-thing"},
		{"GET", "/things/2", "things.2.get GET get-thing"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := do(t, tt.method, gw.URL+tt.path, nil, nil)
			if resp.StatusCode != 200 || body != tt.want {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, tt.want)
			}
		})
	}

	for _, tt := range []struct {
		method, path, allow string
	}{
		{"PURGE", "/users/7", "GET, PUT"},
		{"PROPFIND", "/things/2", "GET"},
		{"DELETE", "/users/7", "GET, PUT"},
	} {
		t.Run(tt.method+" "+tt.path+" refused", func(t *testing.T) {
			resp, body := do(t, tt.method, gw.URL+tt.path, nil, http.Header{"X-Request-Id": {"m-1"}})
			checkProblem(t, resp, body, 405, nil)
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
		})
	}

	// An extension method on a path no route has is still 404.
	resp, body := do(t, "PURGE", gw.URL+"/nowhere", nil, nil)
	checkProblem(t, resp, body, 404, nil)
}

// A route that names its method wins over a "*" route on the same path,
// whichever comes first in the file: the "*" route takes the other
// methods only.
func TestMethodRouteWinsOverAnyMethodRoute(t *testing.T) {
	ns := natstest.RunServer(t)
	worker := natstest.Connect(t, ns)
	respond(t, worker, ">", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte(m.Header.Get(HeaderRoute))}
	})
	named := `
  - name: get-item
    method: GET
    path: /items/{id}
    nats: {subject: "items.{id}.get"}
`
	star := `
  - name: any-item
    method: "*"
    path: /items/{id}
    nats: {subject: "items.{id}.any"}
`
	for _, order := range []struct{ name, routes string }{
		{"named first", named + star},
		{"star first", star + named},
	} {
		t.Run(order.name, func(t *testing.T) {
			gw := startGateway(t, ns, "routes:"+order.routes)
			for method, want := range map[string]string{"GET": "get-item", "POST": "any-item", "PURGE": "any-item"} {
				resp, body := do(t, method, gw.URL+"/items/1", nil, nil)
				if resp.StatusCode != 200 || body != want {
					t.Errorf("%s /items/1: %d %q, want 200 from %s", method, resp.StatusCode, body, want)
				}
			}
		})
	}
}
