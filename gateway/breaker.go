package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/natsgate/natsgate/routes"
	"github.com/sony/gobreaker/v2"
)

// breaker is a circuit breaker in front of one target: a route's NATS side
// or an upstream. It counts only outcomes that say something about the
// target's health, as classify decided them (failure.breaker): timeouts,
// transport failures and a worker's 5xx are failures; answers, a worker's
// 4xx included, are successes; what a client caused, no responders and a
// connection that is down are not counted at all. It opens when a rolling
// window holds at least min_requests counted requests of which a
// failure_ratio share failed, so a few bad requests never open it for
// everyone.
type breaker struct {
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	target  string
	openFor time.Duration
}

// The outcomes gobreaker is told of. Its IsSuccessful and IsExcluded only
// read which of these a pass reported.
var (
	errUnhealthy  = errors.New("the target failed")
	errNotCounted = errors.New("the outcome says nothing about the target")
)

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

// newBreaker builds a closed breaker; onChange is told of every state
// change.
func newBreaker(name, target string, cfg routes.Breaker, log *slog.Logger, onChange func(gobreaker.State)) *breaker {
	minRequests, ratio := uint32(cfg.MinRequests), cfg.FailureRatio
	return &breaker{
		target:  target,
		openFor: cfg.OpenFor,
		cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:         name,
			MaxRequests:  1,
			Interval:     cfg.Window,
			BucketPeriod: cfg.Window / 10, // the window rolls in tenths
			Timeout:      cfg.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				counted := c.TotalSuccesses + c.TotalFailures
				return counted >= minRequests && float64(c.TotalFailures) >= ratio*float64(counted)
			},
			OnStateChange: func(name string, from, to gobreaker.State) {
				log.Warn("circuit breaker state changed", "breaker", name, "from", from.String(), "to", to.String())
				onChange(to)
			},
			IsSuccessful: func(err error) bool { return err == nil },
			IsExcluded:   func(err error) bool { return err == errNotCounted },
		}),
	}
}

// pass is one request let through a breaker; report must be called with
// its outcome.
type pass struct{ done func(error) }

// report tells the breaker what the request's outcome says about the
// target.
func (p pass) report(e effect) {
	switch e {
	case healthy:
		p.done(nil)
	case unhealthy:
		p.done(errUnhealthy)
	default:
		p.done(errNotCounted)
	}
}

// reportErr reports the outcome of a request that ended with err (nil: a
// healthy answer).
func (p pass) reportErr(err error) {
	if err == nil {
		p.done(nil)
		return
	}
	p.report(classify(err).breaker)
}

// allow asks to send a request. The error is an *openError while the
// breaker is open.
func (b *breaker) allow() (pass, error) {
	done, err := b.cb.Allow()
	if err != nil {
		return pass{}, &openError{target: b.target, retryAfter: b.openFor}
	}
	return pass{done: done}, nil
}

// state is the breaker's state as text: closed, half-open or open.
func (b *breaker) state() string { return b.cb.State().String() }
