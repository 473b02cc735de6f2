package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/routes"
	"github.com/sony/gobreaker/v2"
)

// breaker is a circuit breaker in front of one target: a route's NATS side
// or an upstream. 5xx answers, no responders, timeouts and lost connections
// count as failures; 4xx answers count as successes, and a client that
// leaves counts as neither.
type breaker struct {
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	target  string
	openFor time.Duration
}

// errServerError is passed to a breaker for an answer with a 5xx status.
var errServerError = errors.New("5xx answer")

// openError is returned while a breaker is open; it is ErrBreakerOpen and
// says when to retry.
type openError struct {
	target     string
	retryAfter time.Duration
}

func (e *openError) Error() string {
	return fmt.Sprintf("circuit breaker for %s is open", e.target)
}

func (e *openError) Is(target error) bool { return target == ErrBreakerOpen }

// Breaker states as natsgate_breaker_state reports them.
const (
	breakerClosed   = 0
	breakerHalfOpen = 1
	breakerOpen     = 2
)

func breakerValue(s gobreaker.State) float64 {
	switch s {
	case gobreaker.StateHalfOpen:
		return breakerHalfOpen
	case gobreaker.StateOpen:
		return breakerOpen
	}
	return breakerClosed
}

// newBreaker builds a breaker; onChange is told of every state change.
func newBreaker(name, target string, cfg routes.Breaker, log *slog.Logger, onChange func(gobreaker.State)) *breaker {
	failures := uint32(cfg.Failures)
	return &breaker{
		target:  target,
		openFor: cfg.OpenFor,
		cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        name,
			MaxRequests: 1,
			Timeout:     cfg.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
			OnStateChange: func(name string, from, to gobreaker.State) {
				log.Warn("circuit breaker state changed", "breaker", name, "from", from.String(), "to", to.String())
				onChange(to)
			},
			IsSuccessful: func(err error) bool { return err == nil || isClientError(err) },
			// A client that left, or sent a request NATS cannot take, says
			// nothing about the backend: such requests are not counted, or
			// a few bad requests would open the breaker for everyone.
			IsExcluded: func(err error) bool {
				return errors.Is(err, ErrClientGone) || errors.Is(err, context.Canceled) ||
					errors.Is(err, ErrBadRequest) || errors.Is(err, ErrBodyTooLarge) || errors.Is(err, nats.ErrMaxPayload)
			},
		}),
	}
}

// isClientError reports a worker's 4xx answer: the worker is healthy. It
// is a function of its own so that, on the common nil-error path, the
// *workerError it looks for is not allocated.
func isClientError(err error) bool {
	var we *workerError
	return errors.As(err, &we) && we.code < 500
}

// allow asks to send a request. The returned done must be called with the
// outcome; the error is an *openError while the breaker is open.
func (b *breaker) allow() (func(error), error) {
	done, err := b.cb.Allow()
	if err != nil {
		return nil, &openError{target: b.target, retryAfter: b.openFor}
	}
	return done, nil
}

// state is the breaker's state as text: closed, half-open or open.
func (b *breaker) state() string { return b.cb.State().String() }
