// Package worker is natsgate's sample worker: a NATS micro service that
// answers the demo's routes. It speaks only NATS; it has no HTTP listener.
// Run it as its own process with `go run ./cmd/sample-worker`, or let
// `natsgate demo` start two instances in one queue group.
package worker

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/natsgate/natsgate/wire"
)

// QueueGroup is the queue group every sample worker joins, so NATS spreads
// requests across however many run.
const QueueGroup = "natsgate-demo"

// User is what the users endpoint answers.
type User struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	// ServedBy names the instance that answered, to show the queue group
	// spreading load. The demo's shadow comparison ignores it.
	ServedBy string `json:"served_by,omitempty"`
}

// Options tune a worker.
type Options struct {
	// Instance names this worker in its replies.
	Instance string
	// SlowDelay is how long the slow endpoint takes. Default 3s.
	SlowDelay time.Duration
	// Delay is added to every answer, to play a slower version of the
	// worker. Default 0.
	Delay time.Duration
	// FailRate is the share of users answers, 0 to 1, that are a 500
	// service error instead, spread evenly, to play a faulty version.
	// Default 0.
	FailRate float64
}

// FailEvery picks which answers fail so that, over any run of them, the
// share that does is rate, spread evenly: answer n fails when it carries
// the count of failures past a whole number. Safe for concurrent use.
type FailEvery struct {
	rate float64
	n    atomic.Uint64
}

// NewFailEvery fails the given share of answers; 0 never, 1 always.
func NewFailEvery(rate float64) *FailEvery { return &FailEvery{rate: rate} }

// Next reports whether the next answer fails.
func (f *FailEvery) Next() bool {
	if f == nil || f.rate <= 0 {
		return false
	}
	n := f.n.Add(1)
	return uint64(float64(n)*f.rate) > uint64(float64(n-1)*f.rate)
}

// Start registers the sample service on nc and returns it once the server
// has its endpoints' subscriptions; Stop it to leave the queue group.
func Start(nc *nats.Conn, opts Options) (micro.Service, error) {
	if opts.SlowDelay == 0 {
		opts.SlowDelay = 3 * time.Second
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        "natsgate-sample",
		Version:     "1.0.0",
		Description: "Sample worker for the natsgate demo",
		QueueGroup:  QueueGroup,
	})
	if err != nil {
		return nil, err
	}
	fail := NewFailEvery(opts.FailRate)
	endpoints := []struct {
		name, subject string
		handler       micro.HandlerFunc
	}{
		{"get-user", "users.*.get", func(req micro.Request) {
			start := time.Now() // Server-Timing counts the delay: the worker is slower
			answer := func() {
				if fail.Next() {
					_ = req.Error("500", "injected failure: this worker fails a share of its answers", nil)
					return
				}
				getUser(req, opts.Instance, start)
			}
			if opts.Delay <= 0 {
				answer()
				return
			}
			// Later, on a timer's goroutine: the endpoint's handler runs one
			// request at a time, and a sleep here would queue the others
			// behind it instead of making each answer Delay slower.
			time.AfterFunc(opts.Delay, answer)
		}},
		{"slow", "demo.slow", func(req micro.Request) {
			time.Sleep(opts.SlowDelay + opts.Delay)
			_ = req.Respond([]byte("finally\n"))
		}},
		{"events", "events.>", func(req micro.Request) {
			// Published events need no answer; a reply subject is absent.
		}},
	}
	for _, e := range endpoints {
		if err := svc.AddEndpoint(e.name, e.handler, micro.WithEndpointSubject(e.subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("endpoint %s: %w", e.name, err)
		}
	}
	// The endpoints subscribed on nc; a round trip makes sure the server
	// has them, so a request sent on another connection once Start has
	// returned (the gateway's) finds this worker, not no responders.
	if err := nc.Flush(); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("flush the endpoints' subscriptions: %w", err)
	}
	return svc, nil
}

// getUser answers users.<id>.get. Ids 1 to 1000 exist; any other id is a
// 404 sent as a micro service error, which natsgate turns into a problem
// body.
func getUser(req micro.Request, instance string, start time.Time) {
	id := wire.MicroRequest(req).Param("id")
	if id == "" { // not sent through natsgate: take it from the subject
		if parts := strings.Split(req.Subject(), "."); len(parts) == 3 {
			id = parts[1]
		}
	}
	n, err := strconv.Atoi(id)
	if err != nil || n < 1 || n > 1000 {
		_ = req.Error("404", fmt.Sprintf("no user %q", id), nil)
		return
	}
	body, _ := json.Marshal(User{ID: n, Name: "user-" + id, ServedBy: instance})
	_ = wire.Respond(req, wire.Reply{
		Header: nats.Header{"Content-Type": {"application/json"}},
		Body:   body,
		Start:  start, // the worker's time, in Server-Timing
	})
}
