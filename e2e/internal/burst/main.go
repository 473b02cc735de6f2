// Command burst sends many HTTP requests at once, each on its own
// connection, and prints how they were answered as one JSON object. The
// e2e suite runs it as a separate process: ten thousand goroutines are more
// than the race detector allows in the test binary itself.
//
//	burst -url http://127.0.0.1:8080/slow -n 10000 -timeout 60s
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

// Result is what burst prints.
type Result struct {
	// Status counts responses by status code.
	Status map[int]int `json:"status"`
	// Errors counts requests that got no response, by error text.
	Errors map[string]int `json:"errors"`
	// MaxMillis is the slowest answer; P50Millis the median.
	MaxMillis float64 `json:"max_ms"`
	P50Millis float64 `json:"p50_ms"`
}

func main() {
	url := flag.String("url", "", "URL to GET")
	n := flag.Int("n", 10000, "requests, all at once")
	timeout := flag.Duration("timeout", time.Minute, "per-request timeout")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "burst: -url is required")
		os.Exit(2)
	}
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext:       (&net.Dialer{Timeout: *timeout}).DialContext,
		},
	}
	var (
		mu    sync.Mutex
		res   = Result{Status: map[int]int{}, Errors: map[string]int{}}
		times = make([]float64, 0, *n)
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			resp, err := client.Get(*url)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			ms := float64(time.Since(t0).Microseconds()) / 1000
			mu.Lock()
			defer mu.Unlock()
			times = append(times, ms)
			if err != nil {
				res.Errors[err.Error()]++
				return
			}
			res.Status[resp.StatusCode]++
		}()
	}
	close(start)
	wg.Wait()
	sort.Float64s(times)
	if len(times) > 0 {
		res.MaxMillis, res.P50Millis = times[len(times)-1], times[len(times)/2]
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
}
