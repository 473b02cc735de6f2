package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/natsgate/natsgate/routes"
)

// natsgate routes a request itself (compiled.match: chi's tree, without
// chi's ServeHTTP) and leaves to chi's mux only what it does not take. The
// two must never disagree: for every request, the route match takes is the
// route chi's own ServeHTTP serves on the same registrations, with the
// same parameters, and a request match leaves is one chi answers with 404
// or 405 or routes as an extension method.
func TestRouteMatchAgreesWithChi(t *testing.T) {
	const config = `
routes:
  - {name: get-user, method: GET, path: "/users/{id}", nats: {subject: "users.{id}.get"}}
  - {name: put-user, method: PUT, path: "/users/{id}", nats: {subject: "users.{id}.put"}}
  - {name: any-user, method: "*", path: "/users/{id}", nats: {subject: "users.{id}.any"}}
  - {name: user-order, method: GET, path: "/users/{id}/orders/{order}", nats: {subject: "orders.{id}.{order}"}}
  - {name: me, method: GET, path: "/users/me", nats: {subject: "users.me"}}
  - {name: files, method: GET, path: "/files/*", nats: {subject: "files.get"}}
  - {name: root, method: GET, path: "/", nats: {subject: "root"}}
  - {name: dav, method: "*", path: "/dav/{id}", nats: {subject: "dav.{id}"}}
  - {name: post-only, method: POST, path: "/orders", nats: {subject: "orders.create"}}
  - {name: slash, method: GET, path: "/slash/", nats: {subject: "slash"}}
`
	c, table := bareCompiled(t, config)

	// chi's own routing, on the same registrations, with handlers that
	// say which route they are and what chi gave them.
	type served struct{ route, params string }
	var got served
	ref := chi.NewRouter()
	ref.NotFound(func(http.ResponseWriter, *http.Request) { got = served{route: "404"} })
	ref.MethodNotAllowed(func(http.ResponseWriter, *http.Request) { got = served{route: "405"} })
	register(ref, table.Routes, func(rt *routes.Route) http.Handler {
		return http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			got = served{route: rt.Name, params: paramsString(chi.RouteContext(r.Context()), rt.Params)}
		})
	})

	for _, tc := range []struct{ method, target string }{
		{"GET", "/users/7"}, {"PUT", "/users/7"}, {"DELETE", "/users/7"}, {"PATCH", "/users/7"},
		{"GET", "/users/me"}, {"PUT", "/users/me"}, {"GET", "/users/7/orders/9"},
		{"POST", "/users/7/orders/9"}, {"GET", "/users/"}, {"GET", "/users"}, {"GET", "/users/7/"},
		{"GET", "/users/a%2Fb"}, {"GET", "/users/a%252F"}, {"GET", "/users/%E2%82%AC"},
		{"GET", "/files/a/b/c.txt"}, {"GET", "/files/"}, {"GET", "/files"}, {"HEAD", "/files/x"},
		{"GET", "/"}, {"POST", "/"}, {"GET", "/dav/1"}, {"OPTIONS", "/dav/1"}, {"QUERY", "/dav/1"},
		{"POST", "/orders"}, {"GET", "/orders"}, {"GET", "/slash/"}, {"GET", "/slash"},
		{"GET", "/nothing/here"}, {"GET", "//users/7"}, {"GET", "/USERS/7"},
		{"CONNECT", "/users/7"}, {"TRACE", "/dav/2"},
	} {
		r := httptest.NewRequest(tc.method, "http://gw"+tc.target, nil)
		got = served{}
		ref.ServeHTTP(nil, r)
		want := got
		h, rctx := c.match(r)
		if h == nil {
			if want.route != "404" && want.route != "405" {
				t.Errorf("%s %s: match took nothing, chi served route %s", tc.method, tc.target, want.route)
			}
			continue
		}
		mine := served{route: h.rt.Name, params: paramsString(rctx, h.rt.Params)}
		routeContexts.Put(rctx)
		if mine != want {
			t.Errorf("%s %s: match gives %+v, chi %+v", tc.method, tc.target, mine, want)
		}
	}
}

// paramsString is a route's parameters as chi's URLParam reads them
// from rctx, for comparison.
func paramsString(rctx *chi.Context, names []string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n + "=" + rctx.URLParam(n) + ";")
	}
	return b.String()
}

// bareCompiled compiles config into routes registered as the gateway
// registers them, with handlers that only name their route (they serve
// nothing): what match reads.
func bareCompiled(t testing.TB, config string) (*compiled, *routes.Table) {
	t.Helper()
	cfg, err := routes.Parse("test.yaml", []byte(config), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	table, err := routes.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	c := &compiled{handlers: map[string]*routeHandler{}, byPattern: map[routeKey]*routeHandler{}, mux: chi.NewRouter()}
	for _, rt := range table.Routes {
		c.handlers[rt.Name] = &routeHandler{gw: s, rt: rt}
	}
	c.registerRoutes(table.Routes)
	return c, table
}
