package gateway

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// chi routes only the methods in its own table (the standard ones and
// QUERY); any other token gets 405 even on a route registered for every
// method. chi.RegisterMethod grows that table for good, in a bitmask of
// at most a word's width, so it cannot take whatever tokens clients send.
// natsgate registers one placeholder instead and routes every extension
// method (PURGE, PROPFIND, REPORT, ...) under it: a route with method "*"
// is registered for the placeholder too and answers them, while a route
// with one method is not, and refuses them with 405. The placeholder only
// steers chi's search; the handler still sees the request's own method and
// forwards it to the worker.
const extensionMethod = "NATSGATE-EXTENSION-METHOD"

// init registers the placeholder before any router is built: a route for
// every method takes the methods chi knows when it is registered.
func init() { chi.RegisterMethod(extensionMethod) }

// routeExtensionMethod returns r as chi should see it: unchanged for a
// method chi knows, else with a routing context that makes chi look the
// path up as the placeholder method. chi reads a routing context already
// in the request's context and then takes its RouteMethod over r.Method.
func routeExtensionMethod(r *http.Request, mux *chi.Mux) *http.Request {
	if chiKnows(r.Method) || !validMethod(r.Method) {
		return r
	}
	rctx := chi.NewRouteContext()
	rctx.Routes = mux
	rctx.RouteMethod = extensionMethod
	return r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, rctx))
}

// chiKnows reports the methods chi routes by its own table (see chi's
// tree.go). A method missing here would still be routed, as an extension.
func chiKnows(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace, "QUERY":
		return true
	}
	return false
}

// validMethod reports whether m is a method token (RFC 9110, 9.1). net/http
// refuses any other before a handler runs; this keeps a handler mounted
// elsewhere from routing one.
func validMethod(m string) bool {
	return m != "" && validHeaderName(m)
}
