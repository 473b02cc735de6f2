package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
)

// attackRoutes put every kind of registration side by side: a method
// route and a "*" route on one path, a literal beside a parameter, two
// parameter names at one place for two methods, a catch-all, the root,
// trailing slashes.
const attackRoutes = `
routes:
  - {name: get-user, method: GET, path: "/users/{id}", nats: {subject: "users.{id}.get"}}
  - {name: put-user, method: PUT, path: "/users/{uid}", nats: {subject: "users.{uid}.put"}}
  - {name: any-user, method: "*", path: "/users/{id}", nats: {subject: "users.{id}.any"}}
  - {name: user-order, method: GET, path: "/users/{id}/orders/{order}", nats: {subject: "orders.{id}.{order}"}}
  - {name: me, method: GET, path: "/users/me", nats: {subject: "users.me"}}
  - {name: files, method: GET, path: "/files/*", nats: {subject: "files.get"}}
  - {name: any-files, method: "*", path: "/files/*", nats: {subject: "files.any"}}
  - {name: root, method: GET, path: "/", nats: {subject: "root"}}
  - {name: dav, method: "*", path: "/dav/{id}", nats: {subject: "dav.{id}"}}
  - {name: del-cache, method: DELETE, path: "/cache/{key}", nats: {subject: "cache.{key}.del"}}
  - {name: post-only, method: POST, path: "/orders", nats: {subject: "orders.create"}}
  - {name: slash, method: GET, path: "/slash/", nats: {subject: "slash"}}
  - {name: deep, method: GET, path: "/a/{x}/b/{y}/c", nats: {subject: "deep.{x}.{y}"}}
`

// routeReference is natsgate's routing of attackRoutes (compiled.route,
// then chi's mux for what it leaves) beside chi's own ServeHTTP on the
// same registrations, each reporting which route served a request and
// with which parameters.
type routeReference struct {
	c   *compiled
	ref *chi.Mux

	mu  sync.Mutex
	got string // what ref served
}

func newRouteReference(t testing.TB) *routeReference {
	t.Helper()
	c, table := bareCompiled(t, attackRoutes)
	rr := &routeReference{c: c, ref: chi.NewRouter()}
	rr.ref.NotFound(func(http.ResponseWriter, *http.Request) { rr.got = "404" })
	rr.ref.MethodNotAllowed(func(http.ResponseWriter, *http.Request) { rr.got = "405" })
	register(rr.ref, table.Routes, func(rt *routes.Route) http.Handler {
		return http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			rr.got = rt.Name + " " + paramsString(chi.RouteContext(r.Context()), rt.Params)
		})
	})
	return rr
}

// agree routes r both ways and returns an error when they differ.
func (rr *routeReference) agree(r *http.Request) error {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	rr.got = ""
	rr.ref.ServeHTTP(nil, routeExtensionMethod(r, rr.ref))
	want := rr.got
	target := r.URL.RequestURI()
	if len(target) > 200 {
		target = target[:200] + "…"
	}
	h, rctx := rr.c.match(r)
	if h == nil {
		// Left to chi's mux, which has the same registrations: right for
		// what chi refuses and for an extension method, which the mux
		// routes under its placeholder (methods.go); wrong for a
		// request chi's tree would have served as one of its own methods.
		if want != "404" && want != "405" && chiKnows(r.Method) {
			return fmt.Errorf("%s %q: match took nothing, chi served %s", r.Method, target, want)
		}
		return nil
	}
	mine := h.rt.Name + " " + paramsString(rctx, h.rt.Params)
	routeContexts.Put(rctx)
	if mine != want {
		return fmt.Errorf("%s %q: match serves %q, chi %q", r.Method, target, mine, want)
	}
	return nil
}

// requestFor builds the request net/http would hand the gateway for a
// request line, or nil when net/http would refuse the line.
func requestFor(method, target string) *http.Request {
	if !validMethod(method) {
		return nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return nil
	}
	return &http.Request{Method: method, URL: u, RequestURI: target, Header: http.Header{}, Host: "gw"}
}

// Paths chi treats specially, routed by natsgate's match and by chi's own
// ServeHTTP on the same registrations: the same route, the same
// parameters, or both refuse.
func TestRouteMatchAgreesWithChiOnHostilePaths(t *testing.T) {
	rr := newRouteReference(t)
	long := strings.Repeat("x", 64<<10)
	targets := []string{
		"//users/7", "/users//7", "/users/7//", "/users/7/", "/users/", "/users", "/users/me/", "/users/ME",
		"/users/a%2Fb", "/users/a%2fb/orders/c%2Fd", "/users/%2e%2e", "/users/..", "/users/../files/x", "/files/../users/7",
		"/users/.", "/./users/7", "/users/7/orders/", "/users/7/orders//", "/users//orders/9",
		"/files", "/files/", "/files//", "/files/a//b", "/files/%00", "/files/%zz",
		"/a/1/b/2/c", "/a//b/2/c", "/a/1/b//c", "/a/1/b/2/c/", "/a/%2F/b/%2F/c",
		"/", "//", "///", "/?", "/users/7?x=1", "/users/7%3Fx", "/users/7#frag", "/users/7%23",
		"/users/" + long, "/files/" + long, "/" + long,
		"/cache/k", "/cache/", "/dav/1", "/dav/", "/dav/1/2", "/slash", "/slash/", "/slash//", "/orders", "/orders/",
		"/users/\u00e9", "/users/%C3%A9", "/users/%FF",
	}
	methods := []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "QUERY",
		"PURGE", "PROPFIND", "get", extensionMethod, "M-SEARCH"}
	for _, target := range targets {
		for _, method := range methods {
			r := requestFor(method, target)
			if r == nil {
				continue
			}
			if err := rr.agree(r); err != nil {
				t.Error(err)
			}
		}
	}
}

// FuzzRouteMatchAgreesWithChi builds requests from a fuzzed method and
// request target and holds natsgate's match to chi's ServeHTTP on the same
// registrations.
func FuzzRouteMatchAgreesWithChi(f *testing.F) {
	for _, s := range []string{"/users/7", "//users/7", "/users/a%2Fb", "/files/a/b", "/users/7/orders/9", "/", "/a/1/b/2/c", "/cache/x", "/dav/1"} {
		for _, m := range []string{"GET", "PUT", "PURGE", "OPTIONS", extensionMethod} {
			f.Add(m, s)
		}
	}
	rr := newRouteReference(f)
	f.Fuzz(func(t *testing.T, method, target string) {
		r := requestFor(method, target)
		if r == nil {
			return // net/http refuses the request line: nothing is routed
		}
		if err := rr.agree(r); err != nil {
			t.Fatal(err)
		}
	})
}

// Requests on one route with different parameters, in parallel, on a
// real gateway: each gets the parameters of its own path, never another's
// (the routing contexts are pooled; run under -race).
func TestPooledRouteContextsNeverMixParameters(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - {name: user-order, method: GET, path: "/users/{id}/orders/{order}", nats: {subject: "orders.{id}.{order}", timeout: 5s}}
  - {name: star-order, method: "*", path: "/shops/{shop}/items/{item}", nats: {subject: "items.{shop}.{item}", timeout: 5s}}
`)
	worker := natstest.Connect(t, ns)
	echo := func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte(m.Subject + " " + m.Header.Get("Http-Param-id") + m.Header.Get("Http-Param-shop") +
			"/" + m.Header.Get("Http-Param-order") + m.Header.Get("Http-Param-item"))}
	}
	respond(t, worker, "orders.*.*", echo)
	respond(t, worker, "items.*.*", echo)
	const clients, each = 8, 60
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				a, b := fmt.Sprintf("c%d", c), fmt.Sprintf("r%d", i)
				path, want := "/users/"+a+"/orders/"+b, "orders."+a+"."+b+" "+a+"/"+b
				method := "GET"
				if i%2 == 1 {
					path, want, method = "/shops/"+a+"/items/"+b, "items."+a+"."+b+" "+a+"/"+b, "PURGE"
				}
				req, err := http.NewRequest(method, gw.URL+path, nil)
				if err != nil {
					errs <- err
					return
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					return
				}
				var body strings.Builder
				_, _ = fmt.Fprint(&body, readAll(resp))
				if resp.StatusCode != 200 || body.String() != want {
					errs <- fmt.Errorf("%s %s: %d %q, want %q", method, path, resp.StatusCode, body.String(), want)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// readAll is a response's body, closed.
func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}
