// Package loadgen is the closed-loop HTTP load generator of natsgate's
// benchmark: a fixed number of clients, each sending its next request as
// soon as the last one is answered, with latencies kept in HdrHistogram-style
// log-linear histograms.
//
// It is built to cost little next to what it measures: one reused request,
// one histogram and one Transport per client (a Transport shared by all
// would make every request take its idle-pool lock twice: the most
// contended lock of the whole benchmark), response bodies read into a
// reused buffer.
package loadgen

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Config is one measurement.
type Config struct {
	// URL every request is sent to (GET).
	URL string
	// Concurrency is the number of clients, each with one request in flight.
	Concurrency int
	// Warmup runs before measuring; its requests are not recorded.
	Warmup time.Duration
	// Duration of the measurement.
	Duration time.Duration
	// MaxRequests bounds the requests of the measurement (0: 10 million),
	// so that a run ends even on a machine faster than expected.
	MaxRequests int64
}

// Result is what one measurement saw.
type Result struct {
	Concurrency int
	Requests    uint64 // answered with a 2xx status and recorded
	Errors      uint64 // transport errors and non-2xx answers
	Sent        uint64 // every request sent, warm-up included
	FirstError  string
	Elapsed     time.Duration
	Latency     *Histogram
}

// Throughput is answered requests per second.
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Merge adds another measurement of the same target to r, as if the two
// had been one longer run.
func (r *Result) Merge(o *Result) {
	r.Requests += o.Requests
	r.Errors += o.Errors
	r.Sent += o.Sent
	if r.FirstError == "" {
		r.FirstError = o.FirstError
	}
	r.Elapsed += o.Elapsed
	r.Latency.Merge(o.Latency)
}

// Clients are the load generator's HTTP/1.1 clients, one per concurrent
// client, each with its own Transport and keep-alive connections.
type Clients []*http.Client

// NewClients returns n clients. Each keeps one idle connection per host (a
// client has one request in flight), for up to 16 hosts, so one set of
// clients can measure several targets and keep its connections warm.
func NewClients(n int) Clients {
	cs := make(Clients, n)
	for i := range cs {
		cs[i] = &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConns:        16,
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     90 * time.Second,
				DisableCompression:  true,
			},
			Timeout: 30 * time.Second,
		}
	}
	return cs
}

// CloseIdleConnections closes every client's idle connections.
func (cs Clients) CloseIdleConnections() {
	for _, c := range cs {
		c.CloseIdleConnections()
	}
}

// Run measures cfg.URL with the first cfg.Concurrency clients. It returns
// once the duration has passed, the request bound is reached or ctx ends.
func Run(ctx context.Context, clients Clients, cfg Config) (*Result, error) {
	if cfg.Concurrency < 1 || cfg.Concurrency > len(clients) {
		return nil, fmt.Errorf("loadgen: concurrency %d with %d clients", cfg.Concurrency, len(clients))
	}
	maxReq := cfg.MaxRequests
	if maxReq <= 0 {
		maxReq = 10_000_000
	}
	perClient := max(maxReq/int64(cfg.Concurrency), 1)

	type clientResult struct {
		hist     *Histogram
		errors   uint64
		firstErr string
		requests uint64
		sent     uint64
	}
	results := make([]clientResult, cfg.Concurrency)
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range results {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL, nil)
		if err != nil {
			return nil, err
		}
		res := &results[i]
		res.hist = NewHistogram()
		client := clients[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for n := int64(0); n < perClient; {
				t0 := time.Now()
				if t0.After(end) || ctx.Err() != nil {
					return
				}
				status, err := send(client, req, buf)
				d := time.Since(t0)
				res.sent++
				if t0.Before(measureFrom) {
					continue
				}
				n++
				switch {
				case err != nil:
					res.errors++
					if res.firstErr == "" {
						res.firstErr = err.Error()
					}
				case status < 200 || status > 299:
					res.errors++
					if res.firstErr == "" {
						res.firstErr = fmt.Sprintf("status %d", status)
					}
				default:
					res.requests++
					res.hist.Record(d)
				}
			}
		}()
	}
	wg.Wait()
	out := &Result{Concurrency: cfg.Concurrency, Latency: NewHistogram(), Elapsed: time.Since(measureFrom)}
	if out.Elapsed > cfg.Duration {
		// Clients stop starting requests at end; the time spent finishing
		// the last ones is not throughput time.
		out.Elapsed = cfg.Duration
	}
	for _, r := range results {
		out.Requests += r.requests
		out.Errors += r.errors
		out.Sent += r.sent
		if out.FirstError == "" {
			out.FirstError = r.firstErr
		}
		out.Latency.Merge(r.hist)
	}
	return out, ctx.Err()
}

// send does one request and reads the whole body, so the connection goes
// back to the idle pool.
func send(client *http.Client, req *http.Request, buf []byte) (int, error) {
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	for {
		_, err := resp.Body.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			resp.Body.Close()
			return 0, err
		}
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
