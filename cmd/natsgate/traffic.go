package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	mathrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// The demo's traffic defaults, also in what the demo prints (trafficNote).
const (
	defaultTrafficRate    = 20
	defaultTrafficBackoff = 3 * time.Second
)

// trafficOptions shape the demo's sample traffic.
type trafficOptions struct {
	// PerSecond is the steady request rate over all routes. Default 20.
	PerSecond int
	// Inflight bounds the requests waiting for an answer; a tick that
	// finds the bound reached sends nothing. Default 8.
	Inflight int
	// Backoff is how long a route rests after a 5xx or a failed request,
	// so that a slow or unanswered route is sampled, not flooded.
	// Default 3s.
	Backoff time.Duration
}

// traffic sends steady sample requests to every route of a table, round
// robin, so the dashboard and /metrics have something to show. It only
// talks to the gateway at base, on loopback.
type traffic struct {
	base    string
	opts    trafficOptions
	targets []*trafficTarget
	client  *http.Client
	log     *slog.Logger
	sent    atomic.Int64
}

// trafficTarget is one route and when it may be sent to next.
type trafficTarget struct {
	rt        *routes.Route
	restUntil atomic.Int64 // unix nanoseconds
}

func newTraffic(base string, t *routes.Table, opts trafficOptions, log *slog.Logger) *traffic {
	if opts.PerSecond <= 0 {
		opts.PerSecond = defaultTrafficRate
	}
	if opts.Inflight <= 0 {
		opts.Inflight = 8
	}
	if opts.Backoff <= 0 {
		opts.Backoff = defaultTrafficBackoff
	}
	tr := &traffic{
		base:   strings.TrimRight(base, "/"),
		opts:   opts,
		client: &http.Client{Timeout: 10 * time.Second},
		log:    log,
	}
	for _, rt := range t.Routes {
		tr.targets = append(tr.targets, &trafficTarget{rt: rt})
	}
	return tr
}

// startTraffic sends the demo's sample traffic until the returned stop is
// called; stop waits for the requests in flight.
func startTraffic(base string, t *routes.Table, opts trafficOptions, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	tr := newTraffic(base, t, opts, log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// run sends until ctx ends.
func (tr *traffic) run(ctx context.Context) {
	if len(tr.targets) == 0 {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, tr.opts.Inflight)
	tick := time.NewTicker(time.Second / time.Duration(tr.opts.PerSecond))
	defer tick.Stop()
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		target := tr.pick(&next)
		if target == nil {
			continue
		}
		select {
		case sem <- struct{}{}:
		default: // at the in-flight bound: skip this tick
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			tr.send(ctx, target)
		}()
	}
}

// pick returns the next route not resting, or nil if all are.
func (tr *traffic) pick(next *int) *trafficTarget {
	now := time.Now().UnixNano()
	for range tr.targets {
		t := tr.targets[*next%len(tr.targets)]
		*next++
		if t.restUntil.Load() <= now {
			return t
		}
	}
	return nil
}

// send makes one request to a route and rests the route after a failure.
func (tr *traffic) send(ctx context.Context, t *trafficTarget) {
	req, err := sampleRequest(ctx, tr.base, t.rt, tr.sent.Add(1))
	if err != nil {
		tr.log.Debug("traffic: no sample request", "route", t.rt.Name, "error", err)
		t.restUntil.Store(time.Now().Add(time.Hour).UnixNano())
		return
	}
	resp, err := tr.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			tr.log.Debug("traffic: request failed", "route", t.rt.Name, "error", err)
			t.restUntil.Store(time.Now().Add(tr.opts.Backoff).UnixNano())
		}
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		t.restUntil.Store(time.Now().Add(tr.opts.Backoff).UnixNano())
	}
}

// sampleRequest builds a request a route accepts: path parameters filled
// (ids from 1 to 1000, now and then 0, which the sample services answer
// with 404), a JSON body for methods that carry one, a fresh
// Idempotency-Key, and a traceparent so that latencies carry exemplars.
func sampleRequest(ctx context.Context, base string, rt *routes.Route, n int64) (*http.Request, error) {
	method := rt.Method
	if method == "*" {
		method = http.MethodGet
	}
	path, err := samplePath(rt.Path)
	if err != nil {
		return nil, err
	}
	var body io.Reader
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		body = strings.NewReader(fmt.Sprintf(`{"sample":%d,"sku":"A%d","qty":%d}`, n, mathrand.IntN(50), 1+mathrand.IntN(5)))
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("traffic-%d-%d", time.Now().Unix(), n))
	}
	req.Header.Set("Traceparent", newTraceparent())
	req.Header.Set("User-Agent", "natsgate-demo-traffic")
	return req, nil
}

// samplePath fills a chi pattern: {name} and {name:regexp} with a sample
// value, a trailing * with "version".
func samplePath(pattern string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '{':
			end := strings.IndexByte(pattern[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("unclosed parameter in %q", pattern)
			}
			name, _, _ := strings.Cut(pattern[i+1:i+end], ":")
			b.WriteString(sampleValue(name))
			i += end
		case '*':
			b.WriteString("version")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

var sampleWords = []string{"click", "view", "signup", "search"}

func sampleValue(param string) string {
	if strings.Contains(strings.ToLower(param), "id") {
		if mathrand.IntN(100) < 3 {
			return "0" // unknown to the sample services: a 404
		}
		return fmt.Sprint(1 + mathrand.IntN(1000))
	}
	return sampleWords[mathrand.IntN(len(sampleWords))]
}

// newTraceparent is a W3C traceparent with a random trace and span id.
func newTraceparent() string {
	var id [24]byte
	_, _ = rand.Read(id[:])
	return "00-" + hex.EncodeToString(id[:16]) + "-" + hex.EncodeToString(id[16:]) + "-01"
}
