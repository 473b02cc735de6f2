package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
	"github.com/sony/gobreaker/v2"
)

// errOverMaxPayload is a body within the route's max_body that is larger
// than the NATS server takes: 413, though a fallback may answer it.
var errOverMaxPayload = errors.New("request body is larger than the NATS server's max_payload")

// Errors natsgate itself raises. Each maps to one failure in classify.
var (
	ErrDisconnected     = errors.New("the NATS connection is down")
	ErrBodyTooLarge     = errors.New("request body is larger than the route allows")
	ErrNoStream         = errors.New("no JetStream stream stores this subject")
	ErrBreakerOpen      = errors.New("circuit breaker is open")
	ErrClientGone       = errors.New("client closed the request")
	ErrOverloaded       = errors.New("too many requests in flight")
	ErrNotFound         = errors.New("no route matches this path")
	ErrMethodNotAllowed = errors.New("the route does not take this method")
	ErrBadRequest       = errors.New("bad request")
	ErrUpstream         = errors.New("the upstream failed")
	ErrUpstreamTimeout  = errors.New("the upstream did not answer in time")
	ErrBodyTimeout      = errors.New("the request body did not arrive within the route's timeout")
)

// StatusClientClosed is logged (never sent: the client is gone) when a
// client leaves before its answer, as nginx and caddy do.
const StatusClientClosed = 499

// Kind names a failure. It is the problem body's "kind" member, so its
// values are part of the product.
type Kind string

// The kinds of failure natsgate tells clients of.
const (
	KindBreakerOpen      Kind = "breaker_open"
	KindWorkerError      Kind = "worker_error"
	KindClientClosed     Kind = "client_closed"
	KindBadParam         Kind = "bad_param"
	KindSubjectTooLong   Kind = "subject_too_long"
	KindBodyTooLarge     Kind = "body_too_large"
	KindBodyTimeout      Kind = "body_timeout"
	KindBadRequest       Kind = "bad_request"
	KindNoResponders     Kind = "no_responders"
	KindNoStream         Kind = "no_stream"
	KindStreamFull       Kind = "stream_full"
	KindDisconnected     Kind = "nats_disconnected"
	KindTimeout          Kind = "timeout"
	KindNATSError        Kind = "nats_error"
	KindOverloaded       Kind = "overloaded"
	KindNotFound         Kind = "not_found"
	KindMethodNotAllowed Kind = "method_not_allowed"
	KindUpstreamTimeout  Kind = "upstream_timeout"
	KindUpstreamError    Kind = "upstream_error"
)

// effect is what an outcome says about a backend's health, for its breaker.
type effect uint8

const (
	// notCounted: the outcome says nothing about the backend. The client
	// caused it, nobody was there to ask (no responders: answered at once,
	// nothing to shed), or the connection is down (readiness covers that).
	notCounted effect = iota
	// healthy: the backend answered, if with a 4xx.
	healthy
	// unhealthy: a timeout, a transport failure, a worker's 5xx.
	unhealthy
)

// delivery says how far a failed request got.
type delivery uint8

const (
	// notSent: nothing reached a worker or an upstream.
	notSent delivery = iota
	// maybeDelivered: a worker or upstream may have received it, and acted.
	maybeDelivered
	// answered: the backend answered, with a refusal or an error.
	answered
)

// failure is everything decided about an error on its way to the client:
// the status and kind it is shown as, the metric kind it is counted under,
// what it tells a breaker, how far the request got, and a detail for
// people. classify makes it once; fallback, breakers, metrics and the
// problem renderer read it and decide nothing again.
type failure struct {
	status     int
	kind       Kind
	natsKind   string // natsgate_nats_errors_total kind, or ""
	breaker    effect
	delivery   delivery
	byClient   bool // the client's request caused it: no other backend would do better
	retryAfter time.Duration
	detail     string
}

// classify is the one place that maps errors to failures. Order matters
// only where errors wrap each other: the first match wins.
func classify(err error) failure {
	var done *classified
	if errors.As(err, &done) {
		return done.failure
	}
	var we *workerError
	var open *openError
	var api *jetstream.APIError
	switch {
	case errors.As(err, &open):
		return failure{status: http.StatusServiceUnavailable, kind: KindBreakerOpen, retryAfter: open.retryAfter, detail: open.Error()}
	case errors.As(err, &we):
		f := failure{status: we.code, kind: KindWorkerError, breaker: healthy, delivery: answered, detail: we.message}
		if we.code >= 500 {
			f.breaker = unhealthy
		}
		return f
	case errors.Is(err, ErrClientGone), errors.Is(err, context.Canceled):
		return failure{status: StatusClientClosed, kind: KindClientClosed, byClient: true, delivery: maybeDelivered, detail: "the client closed the request"}
	case errors.Is(err, routes.ErrBadParam):
		return failure{status: http.StatusBadRequest, kind: KindBadParam, byClient: true, detail: err.Error()}
	case errors.Is(err, routes.ErrSubjectTooLong):
		return failure{status: http.StatusRequestURITooLong, kind: KindSubjectTooLong, byClient: true, detail: "the path makes a NATS subject longer than allowed"}
	case errors.Is(err, errOverMaxPayload), errors.Is(err, nats.ErrMaxPayload):
		// NATS's own limit, under the route's: nothing was sent, and the
		// upstream may take what NATS cannot, so a fallback may answer.
		return failure{status: http.StatusRequestEntityTooLarge, kind: KindBodyTooLarge,
			natsKind: natsKindIf(err, nats.ErrMaxPayload, metrics.KindPayload), detail: err.Error()}
	case errors.Is(err, ErrBodyTooLarge):
		return failure{status: http.StatusRequestEntityTooLarge, kind: KindBodyTooLarge, byClient: true, detail: err.Error()}
	case errors.Is(err, ErrBodyTimeout):
		return failure{status: http.StatusRequestTimeout, kind: KindBodyTimeout, byClient: true, detail: err.Error()}
	case errors.Is(err, ErrBadRequest):
		return failure{status: http.StatusBadRequest, kind: KindBadRequest, byClient: true, detail: err.Error()}
	case errors.Is(err, ErrBreakerOpen), errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return failure{status: http.StatusServiceUnavailable, kind: KindBreakerOpen, retryAfter: time.Second, detail: "the circuit breaker is open after repeated failures"}
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, ErrNoStream):
		return failure{status: http.StatusServiceUnavailable, kind: KindNoStream, natsKind: metrics.KindNoResponders, retryAfter: time.Second, detail: "no JetStream stream stores this subject"}
	case errors.Is(err, nats.ErrNoResponders):
		return failure{status: http.StatusServiceUnavailable, kind: KindNoResponders, natsKind: metrics.KindNoResponders, retryAfter: time.Second, detail: "no worker is subscribed to this subject"}
	case errors.As(err, &api):
		return classifyRefusal(api)
	case errors.Is(err, errDroppedInFlight):
		return failure{status: http.StatusServiceUnavailable, kind: KindDisconnected, natsKind: metrics.KindDisconnected, delivery: maybeDelivered,
			retryAfter: time.Second, detail: "the NATS connection was lost while the request was out; a worker may have acted on it"}
	case errors.Is(err, ErrDisconnected), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected):
		return failure{status: http.StatusServiceUnavailable, kind: KindDisconnected, natsKind: metrics.KindDisconnected, retryAfter: time.Second, detail: "natsgate is not connected to NATS"}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return failure{status: http.StatusGatewayTimeout, kind: KindTimeout, natsKind: metrics.KindTimeout, breaker: unhealthy, delivery: maybeDelivered, detail: "no reply within the route's timeout"}
	case errors.Is(err, ErrOverloaded):
		return failure{status: http.StatusServiceUnavailable, kind: KindOverloaded, retryAfter: time.Second, detail: err.Error()}
	case errors.Is(err, ErrNotFound):
		return failure{status: http.StatusNotFound, kind: KindNotFound, byClient: true, detail: err.Error()}
	case errors.Is(err, ErrMethodNotAllowed):
		return failure{status: http.StatusMethodNotAllowed, kind: KindMethodNotAllowed, byClient: true, detail: err.Error()}
	case errors.Is(err, ErrUpstreamTimeout):
		return failure{status: http.StatusGatewayTimeout, kind: KindUpstreamTimeout, breaker: unhealthy, delivery: maybeDelivered, detail: err.Error()}
	case errors.Is(err, ErrUpstream):
		return failure{status: http.StatusBadGateway, kind: KindUpstreamError, breaker: unhealthy, delivery: maybeDelivered, detail: err.Error()}
	}
	return failure{status: http.StatusBadGateway, kind: KindNATSError, natsKind: metrics.KindOther, breaker: unhealthy, delivery: maybeDelivered, detail: err.Error()}
}

// JetStream API error codes natsgate tells apart (nats-server's
// jetstream_errors.json).
const (
	jsInsufficientResources     = 10023
	jsNotEnabledForAccount      = 10039
	jsNotEnabled                = 10076
	jsMemoryResourcesExceeded   = 10028
	jsStorageResourcesExceeded  = 10047
	jsMessageExceedsMaximum     = 10054
	jsStreamStoreFailed         = 10077
	jsStoreFailedMsgTooLarge    = "message too large"
	jsStoreFailedMaxMsgs        = "maximum messages exceeded"
	jsStoreFailedMaxBytes       = "maximum bytes exceeded"
	jsStoreFailedMaxMsgsPerSubj = "maximum messages per subject exceeded"
)

// classifyRefusal maps a stream's refusal to store a message. Limits the
// stream has reached are 503 with Retry-After: the client may try later,
// and the stream is not unhealthy, so no breaker counts it. A message over
// the stream's size is the client's: 413. The detail is a short reason of
// natsgate's own, never the server's text.
func classifyRefusal(api *jetstream.APIError) failure {
	full := failure{status: http.StatusServiceUnavailable, kind: KindStreamFull, natsKind: metrics.KindRefused, delivery: answered,
		retryAfter: time.Second, detail: "the stream is full; retry later"}
	tooLarge := failure{status: http.StatusRequestEntityTooLarge, kind: KindBodyTooLarge, natsKind: metrics.KindPayload, delivery: answered,
		byClient: true, detail: "the message is larger than the stream takes"}
	switch api.ErrorCode {
	case jsNotEnabled, jsNotEnabledForAccount:
		return failure{status: http.StatusServiceUnavailable, kind: KindNoStream, natsKind: metrics.KindNoResponders,
			retryAfter: time.Second, detail: "JetStream is not available"}
	case jsMessageExceedsMaximum:
		return tooLarge
	case jsInsufficientResources, jsMemoryResourcesExceeded, jsStorageResourcesExceeded:
		full.detail = "the stream's storage is exhausted; retry later"
		return full
	case jsStreamStoreFailed:
		switch api.Description {
		case jsStoreFailedMsgTooLarge:
			return tooLarge
		case jsStoreFailedMaxMsgs, jsStoreFailedMaxBytes, jsStoreFailedMaxMsgsPerSubj:
			return full
		}
	}
	return failure{status: http.StatusBadGateway, kind: KindNATSError, natsKind: metrics.KindOther, breaker: unhealthy, delivery: answered,
		detail: fmt.Sprintf("JetStream refused the message (error %d)", api.ErrorCode)}
}

// mayFallBack reports whether the upstream may answer a request whose NATS
// side failed so: never for what the client caused or what a backend
// answered; when nothing was sent, always; when a worker may have acted,
// only for methods that are safe to repeat.
func (f failure) mayFallBack(method string) bool {
	if f.byClient {
		return false
	}
	switch f.delivery {
	case notSent:
		return true
	case maybeDelivered:
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
			return true
		}
	}
	return false
}

func natsKindIf(err, target error, kind string) string {
	if errors.Is(err, target) {
		return kind
	}
	return ""
}

// problem is an RFC 9457 problem body. Route and RequestID are extension
// members: every error a client sees names both.
type problem struct {
	Type      string  `json:"type"`
	Title     string  `json:"title"`
	Status    int     `json:"status"`
	Detail    string  `json:"detail,omitempty"`
	Instance  string  `json:"instance,omitempty"`
	Kind      string  `json:"kind"`
	Route     *string `json:"route"`
	RequestID string  `json:"request_id"`
}

// writeProblem renders a failure as application/problem+json. route is ""
// when no route matched (the body then says "route": null).
func writeProblem(w http.ResponseWriter, r *http.Request, f failure, route, reqID string) {
	status := f.status
	if status == StatusClientClosed {
		// Nobody is listening; record the status, write nothing more.
		w.WriteHeader(status)
		return
	}
	p := problem{
		Type:      "about:blank",
		Title:     http.StatusText(status),
		Status:    status,
		Detail:    f.detail,
		Instance:  r.URL.EscapedPath(),
		Kind:      string(f.kind),
		RequestID: reqID,
	}
	if p.Title == "" {
		p.Title = "Error"
	}
	if route != "" {
		p.Route = &route
	}
	body, err := json.Marshal(p)
	if err != nil {
		body = []byte(`{"type":"about:blank","title":"Internal Server Error","status":500}`)
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	if status == http.StatusRequestEntityTooLarge {
		// Close instead of letting net/http drain up to 256 KiB of a body
		// natsgate refused before answering: a client that stops sending
		// would hold the 413 back.
		h.Set("Connection", "close")
	}
	if f.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((f.retryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
