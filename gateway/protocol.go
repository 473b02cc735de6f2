package gateway

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/routes"
	"github.com/natsgate/natsgate/wire"
)

// Headers of the wire protocol between natsgate and its workers, the
// names package wire defines for worker authors (its doc comment and the
// docs/protocol.md are the reference); these names are
// part of the product. The others are natsgate's own: JetStream's
// message id, the client's idempotency key, and the backend it tells
// the client.
const (
	HeaderMethod         = wire.HeaderMethod
	HeaderPath           = wire.HeaderPath
	HeaderQuery          = wire.HeaderQuery
	HeaderRoute          = wire.HeaderRoute
	HeaderParam          = wire.HeaderParamPrefix // + the parameter's name as written in the path
	HeaderStatus         = wire.HeaderStatus
	HeaderShadow         = wire.HeaderShadow
	HeaderRequestID      = wire.HeaderRequestID
	HeaderServiceErr     = wire.HeaderServiceError
	HeaderServiceErrCode = wire.HeaderServiceErrorCode
	HeaderServerTiming   = wire.HeaderServerTiming
	HeaderMsgID          = "Nats-Msg-Id"
	HeaderIdempotency    = "Idempotency-Key"
	HeaderBackend        = "X-Natsgate-Backend"
)

// protocolRequestHeaders are the client headers every route forwards to
// NATS, besides those a route lists. Content-Encoding travels with the
// body it describes: the body is passed on as sent, so a worker without
// it would take a compressed body for one in its Content-Type.
var protocolRequestHeaders = []string{"Content-Type", "Content-Encoding", "Accept", "Traceparent", "Tracestate"}

// natsHeaderName gives the name a forwarded header carries on NATS: the
// W3C trace headers keep their lower-case spelling, others their canonical
// HTTP form. NATS headers are case-sensitive.
func natsHeaderName(canonical string) string {
	switch canonical {
	case "Traceparent":
		return "traceparent"
	case "Tracestate":
		return "tracestate"
	}
	return canonical
}

// requestHeader builds the NATS header of a request in a map of its own,
// for a message that outlives the request (a shadow copy). The request
// route's own message is built with fillRequestHeader into a pooled map
// (see natsSide.send).
func requestHeader(rt *routes.Route, r *http.Request, reqID string, names, values []string) nats.Header {
	h := make(nats.Header, requestHeaderCount(rt, r, names))
	fillRequestHeader(h, make([]string, 5+len(names)), rt, r, reqID, names, values)
	return h
}

// requestHeaderCount is how many names fillRequestHeader will set, so
// that a new map can be sized to hold them (a map of at most 8 entries
// costs two allocations, a larger one four).
func requestHeaderCount(rt *routes.Route, r *http.Request, names []string) int {
	size := 4 + len(names)
	if r.URL.RawQuery != "" {
		size++
	}
	for _, name := range protocolRequestHeaders {
		if len(r.Header[name]) > 0 {
			size++
		}
	}
	for _, name := range rt.ForwardHeaders {
		if len(r.Header[name]) > 0 {
			size++
		}
	}
	return size
}

// fillRequestHeader sets the NATS header of a request in h, which must be
// empty. Only the protocol's own headers and the route's allowlist are
// copied, so a client can never set an Http-* header or a Nats-* control
// header by sending it. names and values are the path parameters (already
// checked by the subject render). one backs the single values natsgate
// sets itself, one slice for all of them: it must hold 5+len(names)
// strings.
func fillRequestHeader(h nats.Header, one []string, rt *routes.Route, r *http.Request, reqID string, names, values []string) {
	set := func(i int, k, v string) {
		one[i] = v
		h[k] = one[i : i+1 : i+1]
	}
	set(0, HeaderMethod, r.Method)
	set(1, HeaderPath, r.URL.EscapedPath())
	if r.URL.RawQuery != "" {
		set(2, HeaderQuery, r.URL.RawQuery)
	}
	set(3, HeaderRoute, rt.Name)
	set(4, HeaderRequestID, reqID)
	for i, name := range names {
		set(5+i, paramHeader(name), values[i])
	}
	for _, name := range protocolRequestHeaders {
		if v := r.Header[name]; len(v) > 0 {
			h[natsHeaderName(name)] = v
		}
	}
	for _, name := range rt.ForwardHeaders {
		if _, own := h[name]; own {
			continue // X-Request-Id and the like are the gateway's to set
		}
		v := r.Header[name]
		if name == "Host" && r.Host != "" {
			v = []string{r.Host} // net/http keeps Host out of the header map
		}
		if len(v) > 0 {
			h[name] = v
		}
	}
}

// natsHeaders are the header maps of request routes' messages, reused:
// nats.go serialises a message's header while PublishMsg runs and keeps
// no reference to the map, so once the publish has returned the map is
// free again. A map keeps the room it grew to, so a route's message costs
// no allocation for its header once the pool holds a map for it.
var natsHeaders = sync.Pool{New: func() any { return make(nats.Header, 8) }}

// releaseHeader empties h and returns it to natsHeaders.
func releaseHeader(h nats.Header) {
	clear(h)
	natsHeaders.Put(h)
}

// outbound is room, inside a request's exchange, for the NATS message a
// route sends: the message itself, its path parameters' values and the
// single values of the headers natsgate sets (five of its own and one a
// parameter), so that none of them is an allocation of its own. A route
// with more parameters than fit allocates for them.
type outbound struct {
	msg    nats.Msg
	params [4]string
	values [5 + 4]string
}

// releaseHeader gives the message's header map back to natsHeaders, once
// the message is sent.
func (o *outbound) releaseHeader() {
	if o.msg.Header != nil {
		releaseHeader(o.msg.Header)
		o.msg.Header = nil
	}
}

// paramHeaders caches "Http-Param-<name>" by parameter name. Names come
// only from configured paths, so it stays small.
var paramHeaders sync.Map

// paramHeader is the header that carries path parameter name.
func paramHeader(name string) string {
	if v, ok := paramHeaders.Load(name); ok {
		return v.(string)
	}
	v, _ := paramHeaders.LoadOrStore(name, HeaderParam+name)
	return v.(string)
}

// reply is a worker's answer mapped to HTTP.
type reply struct {
	status int
	header http.Header // response headers to add
	body   []byte
	// workerErr is set when the worker answered with a micro error.
	workerErr *workerError
	// workerTime is the worker's own time from its Server-Timing, or -1.
	workerTime time.Duration
}

// workerError is a service error a worker reported with the micro headers.
type workerError struct {
	code    int
	message string
}

func (e *workerError) Error() string { return e.message }

// hopByHop are headers that describe one connection, never forwarded.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true,
}

// mapReply turns a NATS reply into an HTTP status, headers and body. It
// takes msg over: its header map becomes the reply's header.
//
// Http-Status sets the status (default 200); Nats-Service-Error-Code and
// Nats-Service-Error (what nats.go micro's req.Error sets) give that 4xx or
// 5xx status with a problem body, any other code 502; other headers become
// response headers, except hop-by-hop ones and the protocol's own. A value
// holding a control byte is dropped; spellings of one name that differ in
// case (NATS headers are case-sensitive) are merged under the canonical
// name. The answer is never content-sniffed (see answerHeader).
func mapReply(msg *nats.Msg) reply {
	rep := reply{status: http.StatusOK, body: msg.Data, workerTime: -1}
	if len(msg.Header) == 0 {
		rep.header = answerHeader(nil, len(msg.Data) > 0)
		return rep
	}
	if code := msg.Header.Get(HeaderServiceErrCode); code != "" {
		n, err := strconv.Atoi(strings.TrimSpace(code))
		text := msg.Header.Get(HeaderServiceErr)
		if err != nil || n < 400 || n > 599 {
			rep.workerErr = &workerError{code: http.StatusBadGateway, message: "worker sent error code " + strconv.Quote(code) + ": " + text}
		} else {
			rep.workerErr = &workerError{code: n, message: text}
		}
		rep.status = rep.workerErr.code
	} else if s := msg.Header.Get(HeaderStatus); s != "" {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 200 || n > 599 {
			rep.workerErr = &workerError{code: http.StatusBadGateway, message: "worker sent an invalid Http-Status " + strconv.Quote(s)}
			rep.status = http.StatusBadGateway
		} else {
			rep.status = n
		}
	}
	// The reply is ours alone, so its header map becomes the response
	// headers in place, without a copy: what must not pass is deleted
	// while ranging, and names not in canonical form are moved to it after
	// the loop, in a fixed order (see mergeSpellings). The map is ranged
	// once: names a Connection header lists, rare in a reply, are taken
	// out in a second pass only when there is one.
	var connection map[string]bool
	var spellings []string
	for k, v := range msg.Header {
		canon, ok := canonicalName(k)
		switch {
		// A name with a byte HTTP does not allow in one ("nats-x y") is
		// dropped, so the prefix checks below always see the canonical
		// form.
		case !ok:
			delete(msg.Header, k)
			continue
		case canon == "Connection":
			connection = connectionTokens(connection, v)
			delete(msg.Header, k)
			continue
		case hopByHop[canon],
			strings.HasPrefix(canon, "Http-"), strings.HasPrefix(canon, "Nats-"),
			canon == HeaderRequestID, canon == HeaderBackend: // the gateway's own
			delete(msg.Header, k)
			continue
		case canon == HeaderServerTiming:
			rep.workerTime = workerDuration(v)
			delete(msg.Header, k)
			continue
		}
		if !fieldValues(v) {
			if v = dropControlValues(v); len(v) == 0 {
				delete(msg.Header, k)
				continue
			}
			msg.Header[k] = v
		}
		if canon != k {
			spellings = append(spellings, k)
		}
	}
	if connection != nil {
		spellings = dropConnectionListed(msg.Header, connection, spellings, &rep)
	}
	if spellings != nil {
		mergeSpellings(msg.Header, spellings)
	}
	rep.header = answerHeader(http.Header(msg.Header), len(msg.Data) > 0)
	return rep
}

// mergeSpellings moves the values of names not in canonical form to their
// canonical name. A worker may send set-cookie and Set-Cookie in one
// reply, and HTTP has one name for both: every value is kept, the
// canonical spelling's first, then the others' in byte order of their
// spelling, so that the response is the same whatever the map's order.
func mergeSpellings(h nats.Header, spellings []string) {
	slices.Sort(spellings)
	for _, k := range spellings {
		canon := http.CanonicalHeaderKey(k)
		// Clip: the values may share an array with another name's.
		h[canon] = append(slices.Clip(h[canon]), h[k]...)
		delete(h, k)
	}
}

// fieldValues reports whether every value is a valid field value.
func fieldValues(vs []string) bool {
	for _, v := range vs {
		if !validFieldValue(v) {
			return false
		}
	}
	return true
}

// validFieldValue reports whether v is a valid field value (RFC 9110,
// 5.5): no control byte other than horizontal tab. A CR, LF or NUL could
// end the header line or the header block at some reader, and the other
// control bytes reach terminals and logs.
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// dropControlValues returns the values of vs that are valid field values.
func dropControlValues(vs []string) []string {
	var out []string
	for _, v := range vs {
		if validFieldValue(v) {
			out = append(out, v)
		}
	}
	return out
}

// Values of the headers natsgate sets on every worker answer, shared so
// that the request path does not allocate them. A header map holding one
// is never appended to in place: its capacity is its length.
var (
	nosniff     = []string{"nosniff"}
	octetStream = []string{"application/octet-stream"}
)

// answerHeader completes the headers of a worker's answer (h may be nil):
// X-Content-Type-Options: nosniff on every one, and, on a body the worker
// gave no Content-Type, application/octet-stream. Without them net/http
// and browsers guess the type from the body, and a worker's data that
// looks like HTML would be served, and run, as HTML from the gateway's
// origin. An empty body needs no type.
func answerHeader(h http.Header, hasBody bool) http.Header {
	if h == nil {
		h = make(http.Header, 2)
	}
	h["X-Content-Type-Options"] = nosniff
	if ct := h["Content-Type"]; hasBody && (len(ct) == 0 || ct[0] == "") {
		h["Content-Type"] = octetStream
	}
	return h
}

// connectionTokens adds the header names a Connection header's values
// list to names (nil: none yet): they describe the worker's hop only (RFC
// 9110, 7.6.1).
func connectionTokens(names map[string]bool, values []string) map[string]bool {
	for _, v := range values {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				if names == nil {
					names = map[string]bool{}
				}
				names[http.CanonicalHeaderKey(tok)] = true
			}
		}
	}
	return names
}

// dropConnectionListed deletes from h the names a Connection header
// listed, in any spelling, and returns spellings without them. A listed
// Server-Timing is the worker's hop's, so it tells nothing of the worker's
// time either.
func dropConnectionListed(h nats.Header, listed map[string]bool, spellings []string, rep *reply) []string {
	if listed[HeaderServerTiming] {
		rep.workerTime = -1
	}
	for k := range h {
		if listed[http.CanonicalHeaderKey(k)] {
			delete(h, k)
		}
	}
	return slices.DeleteFunc(spellings, func(k string) bool {
		_, kept := h[k]
		return !kept
	})
}

// tokenByte marks the bytes an HTTP field name (an RFC 9110 token) may
// hold: visible ASCII but the delimiters.
var tokenByte = func() (t [256]bool) {
	for c := '!'; c <= '~'; c++ {
		t[c] = !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c)
	}
	return t
}()

// validHeaderName reports whether s is an HTTP field name (an RFC 9110
// token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte[s[i]] {
			return false
		}
	}
	return true
}

// canonicalName is http.CanonicalHeaderKey(s) for a valid field name, and
// ok false for an invalid one, in one pass over a name already in
// canonical form, which is how workers mostly send them ("Content-Type").
func canonicalName(s string) (canon string, ok bool) {
	if s == "" {
		return "", false
	}
	upper, canonical := true, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !tokenByte[c] {
			return "", false
		}
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canonical = false
		}
		upper = c == '-'
	}
	if canonical {
		return s, true
	}
	return http.CanonicalHeaderKey(s), true
}

// workerDuration finds "worker;dur=<ms>" in Server-Timing values, or -1.
func workerDuration(values []string) time.Duration {
	for _, v := range values {
		for entry := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(entry), ";")
			if strings.TrimSpace(name) != "worker" {
				continue
			}
			for p := range strings.SplitSeq(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if !ok || k != "dur" {
					continue
				}
				ms, err := strconv.ParseFloat(strings.Trim(val, `"`), 64)
				if err != nil || !(ms >= 0 && ms <= 1e9) { // NaN fails both
					return -1
				}
				return time.Duration(ms * float64(time.Millisecond))
			}
		}
	}
	return -1
}
