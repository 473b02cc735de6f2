package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/routes"
	"github.com/sony/gobreaker/v2"
)

// Errors natsgate itself raises. Each maps to one status in statusOf.
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

// failure is an error on its way to the client: the status, a short kind
// that names it in problem bodies and metrics, and a detail for people.
type failure struct {
	status     int
	kind       string // problem "kind" member
	natsKind   string // natsgate_nats_errors_total kind, or ""
	retryAfter time.Duration
	detail     string
}

// classify is the one place that maps errors to HTTP. Order matters only
// where errors wrap each other: the first match wins.
func classify(err error) failure {
	var we *workerError
	var open *openError
	switch {
	case errors.As(err, &open):
		return failure{status: http.StatusServiceUnavailable, kind: "breaker_open", retryAfter: open.retryAfter, detail: open.Error()}
	case errors.As(err, &we):
		return failure{status: we.code, kind: "worker_error", detail: we.message}
	case errors.Is(err, ErrClientGone), errors.Is(err, context.Canceled):
		return failure{status: StatusClientClosed, kind: "client_closed", detail: "the client closed the request"}
	case errors.Is(err, routes.ErrBadParam):
		return failure{status: http.StatusBadRequest, kind: "bad_param", detail: err.Error()}
	case errors.Is(err, routes.ErrSubjectTooLong):
		return failure{status: http.StatusRequestURITooLong, kind: "subject_too_long", detail: "the path makes a NATS subject longer than allowed"}
	case errors.Is(err, ErrBodyTooLarge), errors.Is(err, nats.ErrMaxPayload):
		return failure{status: http.StatusRequestEntityTooLarge, kind: "body_too_large", natsKind: natsKindIf(err, nats.ErrMaxPayload, metrics.KindPayload), detail: err.Error()}
	case errors.Is(err, ErrBodyTimeout):
		return failure{status: http.StatusRequestTimeout, kind: "body_timeout", detail: err.Error()}
	case errors.Is(err, ErrBadRequest):
		return failure{status: http.StatusBadRequest, kind: "bad_request", detail: err.Error()}
	case errors.Is(err, ErrBreakerOpen), errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return failure{status: http.StatusServiceUnavailable, kind: "breaker_open", retryAfter: time.Second, detail: "the circuit breaker is open after repeated failures"}
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, ErrNoStream):
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, ErrNoStream) {
			return failure{status: http.StatusServiceUnavailable, kind: "no_stream", natsKind: metrics.KindNoResponders, retryAfter: time.Second, detail: "no JetStream stream stores this subject"}
		}
		return failure{status: http.StatusServiceUnavailable, kind: "no_responders", natsKind: metrics.KindNoResponders, retryAfter: time.Second, detail: "no worker is subscribed to this subject"}
	case errors.Is(err, ErrDisconnected), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected):
		return failure{status: http.StatusServiceUnavailable, kind: "nats_disconnected", natsKind: metrics.KindDisconnected, retryAfter: time.Second, detail: "natsgate is not connected to NATS"}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return failure{status: http.StatusGatewayTimeout, kind: "timeout", natsKind: metrics.KindTimeout, detail: "no reply within the route's timeout"}
	case errors.Is(err, ErrOverloaded):
		return failure{status: http.StatusServiceUnavailable, kind: "overloaded", retryAfter: time.Second, detail: err.Error()}
	case errors.Is(err, ErrNotFound):
		return failure{status: http.StatusNotFound, kind: "not_found", detail: err.Error()}
	case errors.Is(err, ErrMethodNotAllowed):
		return failure{status: http.StatusMethodNotAllowed, kind: "method_not_allowed", detail: err.Error()}
	case errors.Is(err, ErrUpstreamTimeout):
		return failure{status: http.StatusGatewayTimeout, kind: "upstream_timeout", detail: err.Error()}
	case errors.Is(err, ErrUpstream):
		return failure{status: http.StatusBadGateway, kind: "upstream_error", detail: err.Error()}
	}
	return failure{status: http.StatusBadGateway, kind: "nats_error", natsKind: metrics.KindOther, detail: err.Error()}
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
		Kind:      f.kind,
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
