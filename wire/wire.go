// Package wire is natsgate's wire protocol, for the authors of workers in
// Go: the names of the headers natsgate and its workers exchange, a view
// that reads a request, and helpers that write a reply. natsgate itself
// uses these constants, and so does its sample worker, so the two sides
// cannot drift apart.
//
// A worker is any NATS subscriber, usually in a queue group, on the
// subject a route names. A worker written with nats.go's micro package
// needs nothing else; this package only saves it from spelling header
// names and formats by hand.
//
// # Gateway to worker
//
// natsgate sends each HTTP request to the route's subject. The message's
// data is the request body, unchanged. Its headers:
//
//	Http-Method         the request method
//	Http-Path           the raw (still percent-escaped) path
//	Http-Query          the raw query string, only when there is one
//	Http-Route          the route's name
//	Http-Param-<name>   each path parameter, name exactly as in the path
//	                    pattern, value percent-decoded exactly once
//	X-Request-Id        the client's request id, or one natsgate made;
//	                    the client gets the same one back
//	Http-Shadow: true   only on shadow copies: the answer is compared with
//	                    the legacy service's and thrown away, so skip side
//	                    effects
//	Content-Type, Content-Encoding, Accept, traceparent, tracestate
//	                    as the client sent them, only when it did (the
//	                    data is never decoded: a body sent with
//	                    Content-Encoding: gzip arrives compressed)
//	the route's forward_headers, when the client sent them
//
// NATS header names are case-sensitive: read them with the spellings
// above (the constants below). A client can never set an Http-* header or
// a Nats-* control header: natsgate copies only the headers listed here.
// A path parameter is always exactly one subject token of valid UTF-8,
// with no white space, control or format character; natsgate answers 400
// to anything else and publishes nothing.
//
// [Request] reads these headers from a [*nats.Msg], a [micro.Request] or
// a bare [nats.Header].
//
// # Worker to gateway
//
// The reply's data is the response body. Its headers:
//
//	Http-Status                 the HTTP status, 200 to 599 (default 200);
//	                            anything else gives the client a 502
//	Nats-Service-Error-Code,    what micro's Request.Error sets: a code
//	Nats-Service-Error          from 400 to 599 becomes that status with
//	                            an RFC 9457 problem body holding the
//	                            description; any other code gives 502
//	Server-Timing: worker;dur=<ms>
//	                            the worker's own time, in milliseconds;
//	                            natsgate shows it in the response's
//	                            Server-Timing and in
//	                            natsgate_worker_duration_seconds
//	Content-Type                kept; a non-empty body without one is sent
//	                            as application/octet-stream, never sniffed
//	anything else               becomes a response header, except
//	                            hop-by-hop headers and Content-Length,
//	                            those a Connection header names, Http-*,
//	                            Nats-*, X-Request-Id and X-Natsgate-Backend
//
// A header value holding a control byte other than tab is dropped.
// Spellings of one name that differ only in case become one HTTP header.
//
// [SetStatus], [SetWorkerTime] and [SetError] write these headers into a
// reply's [nats.Header]; [Reply] and [Respond] send a whole answer to a
// micro request.
package wire

import (
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Headers of a request, set by natsgate.
const (
	// HeaderMethod carries the HTTP request method.
	HeaderMethod = "Http-Method"
	// HeaderPath carries the raw, still percent-escaped, request path.
	HeaderPath = "Http-Path"
	// HeaderQuery carries the raw query string; absent when there is none.
	HeaderQuery = "Http-Query"
	// HeaderRoute carries the name of the route that matched.
	HeaderRoute = "Http-Route"
	// HeaderParamPrefix followed by a path parameter's name, as written
	// in the route's path pattern, carries that parameter's decoded
	// value. See [ParamHeader].
	HeaderParamPrefix = "Http-Param-"
	// HeaderShadow is "true" on a shadow copy, whose answer is only
	// compared: the worker should skip side effects.
	HeaderShadow = "Http-Shadow"
	// HeaderRequestID carries the request's id, the one the client sees.
	HeaderRequestID = "X-Request-Id"
)

// Headers of a reply, set by the worker.
const (
	// HeaderStatus is the HTTP status of the answer, 200 to 599; absent
	// means 200.
	HeaderStatus = "Http-Status"
	// HeaderServiceError is the description of a service error, as
	// nats.go micro's Request.Error writes it.
	HeaderServiceError = micro.ErrorHeader
	// HeaderServiceErrorCode is the code of a service error; 400 to 599
	// becomes that HTTP status with a problem body, any other code 502.
	HeaderServiceErrorCode = micro.ErrorCodeHeader
	// HeaderServerTiming carries the worker's own time as
	// "worker;dur=<milliseconds>".
	HeaderServerTiming = "Server-Timing"
)

// ShadowValue is the value of [HeaderShadow] on a shadow copy.
const ShadowValue = "true"

// ParamHeader is the header that carries path parameter name:
// "Http-Param-" + name.
func ParamHeader(name string) string { return HeaderParamPrefix + name }

// Request is a read-only view of a request's headers as natsgate sends
// them. The zero Request has no headers: every method gives the zero
// value.
type Request struct {
	h nats.Header
}

// RequestOf views the headers h.
func RequestOf(h nats.Header) Request { return Request{h: h} }

// MsgRequest views the headers of a message a plain subscriber received.
func MsgRequest(m *nats.Msg) Request {
	if m == nil {
		return Request{}
	}
	return Request{h: m.Header}
}

// MicroRequest views the headers of a request a micro endpoint received.
func MicroRequest(req micro.Request) Request {
	return Request{h: nats.Header(req.Headers())}
}

// Method is the HTTP request method, such as "GET".
func (r Request) Method() string { return r.h.Get(HeaderMethod) }

// Path is the raw request path, still percent-escaped as the client sent
// it; url.PathUnescape decodes it. Path parameters are better read with
// [Request.Param], which natsgate has already decoded and checked.
func (r Request) Path() string { return r.h.Get(HeaderPath) }

// Param is the value of the path parameter name (as written in the
// route's path pattern, case and all), percent-decoded, or "" when the
// route's path has no such parameter.
func (r Request) Param(name string) string { return r.h.Get(HeaderParamPrefix + name) }

// RawQuery is the raw query string, without the "?", or "" when the URL
// had none.
func (r Request) RawQuery() string { return r.h.Get(HeaderQuery) }

// Query parses the query string. Pairs that do not parse are left out,
// as url.ParseQuery leaves them; use [Request.RawQuery] to see them.
func (r Request) Query() url.Values {
	v, _ := url.ParseQuery(r.RawQuery())
	return v
}

// Route is the name of the route that matched the request.
func (r Request) Route() string { return r.h.Get(HeaderRoute) }

// RequestID is the request's id, the one the client is answered with.
func (r Request) RequestID() string { return r.h.Get(HeaderRequestID) }

// Shadow reports whether the request is a shadow copy: natsgate compares
// its answer with the legacy service's and discards it, so a worker
// should skip side effects (writes, mails, charges) and answer as it
// would.
func (r Request) Shadow() bool { return r.h.Get(HeaderShadow) == ShadowValue }

// Header is the header a request arrived with, for the client's headers
// natsgate forwards (Content-Type, Content-Encoding, Accept, traceparent,
// a route's forward_headers). It is the message's own map: do not change it.
func (r Request) Header() nats.Header { return r.h }

// SetStatus sets the HTTP status of a reply. natsgate accepts 200 to 599
// and answers 502 for anything else.
func SetStatus(h nats.Header, code int) {
	h[HeaderStatus] = []string{strconv.Itoa(code)}
}

// SetWorkerTime sets the worker's own time spent on the request, which
// natsgate reports in the response's Server-Timing and in its
// natsgate_worker_duration_seconds histogram. It replaces any
// Server-Timing already in h: natsgate reads only the worker entry and
// passes no Server-Timing of the worker's on to the client. A negative d
// counts as 0.
func SetWorkerTime(h nats.Header, d time.Duration) {
	h[HeaderServerTiming] = []string{FormatWorkerTime(d)}
}

// FormatWorkerTime is the Server-Timing value for a worker time d:
// "worker;dur=" and the milliseconds with three decimals (microseconds).
func FormatWorkerTime(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	us := d.Microseconds()
	return "worker;dur=" + strconv.FormatInt(us/1000, 10) + "." + pad3(us%1000)
}

// pad3 formats n, 0 to 999, in three digits.
func pad3(n int64) string {
	s := strconv.FormatInt(n, 10)
	for len(s) < 3 {
		s = "0" + s
	}
	return s
}

// SetError makes a reply a service error, as micro's Request.Error does
// for a micro endpoint: natsgate answers with status code (400 to 599,
// else 502) and a problem body whose detail is description. For a plain
// subscriber, which has no Request.Error.
func SetError(h nats.Header, code int, description string) {
	h[HeaderServiceErrorCode] = []string{strconv.Itoa(code)}
	h[HeaderServiceError] = []string{description}
}

// Reply is a worker's answer before it is sent.
type Reply struct {
	// Status is the HTTP status; 0 sends no Http-Status, which natsgate
	// reads as 200.
	Status int
	// Header holds the answer's other headers (Content-Type, Location,
	// Cache-Control, …), which become response headers. May be nil;
	// Respond and Msg add the protocol's headers to it.
	Header nats.Header
	// Body is the response body.
	Body []byte
	// Start is when the worker began on the request. When set, the time
	// since it is sent as the worker time (see SetWorkerTime).
	Start time.Time
}

// header completes r's header with the protocol's headers.
func (r Reply) header() nats.Header {
	h := r.Header
	if h == nil {
		h = nats.Header{}
	}
	if r.Status != 0 {
		SetStatus(h, r.Status)
	}
	if !r.Start.IsZero() {
		SetWorkerTime(h, time.Since(r.Start))
	}
	return h
}

// Msg is the reply message, for a plain subscriber to send with
// (*nats.Msg).RespondMsg.
func (r Reply) Msg() *nats.Msg {
	return &nats.Msg{Header: r.header(), Data: r.Body}
}

// Respond sends rep as the answer to a micro request.
func Respond(req micro.Request, rep Reply) error {
	return req.Respond(rep.Body, micro.WithHeaders(micro.Headers(rep.header())))
}
