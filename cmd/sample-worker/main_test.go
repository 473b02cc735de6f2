package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/examples/legacy"
)

// --fail-rate turns exactly that share of the legacy service's answers
// into 500 problems, spread evenly, and leaves the rest as they were.
func TestLegacyFailRateFailsThatShare(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		want int // 500s out of 100
	}{{0, 0}, {0.1, 10}, {0.25, 25}, {1, 100}} {
		srv := httptest.NewServer(worse(legacy.Handler(), 0, tc.rate))
		failed, run, longestRun := 0, 0, 0
		for i := range 100 {
			resp, err := http.Get(srv.URL + "/profiles/7")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case 500:
				failed++
				run = 0
				if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" || !strings.Contains(string(body), `"status":500`) {
					t.Errorf("rate %g, answer %d: a 500 with %s %s, want a problem body", tc.rate, i, ct, body)
				}
			case 200:
				run++
				longestRun = max(longestRun, run)
				if !strings.Contains(string(body), `"name":"user-7"`) {
					t.Errorf("rate %g, answer %d: 200 %s, want user 7", tc.rate, i, body)
				}
			default:
				t.Errorf("rate %g, answer %d: %d %s", tc.rate, i, resp.StatusCode, body)
			}
		}
		srv.Close()
		if failed != tc.want {
			t.Errorf("rate %g: %d of 100 answers failed, want %d", tc.rate, failed, tc.want)
		}
		if tc.rate > 0 && float64(longestRun) > 1/tc.rate {
			t.Errorf("rate %g: %d good answers in a row, want failures spread evenly", tc.rate, longestRun)
		}
	}
}

// --delay makes every legacy answer take at least that long.
func TestLegacyDelaySlowsEveryAnswer(t *testing.T) {
	const delay = 30 * time.Millisecond
	srv := httptest.NewServer(worse(legacy.Handler(), delay, 0))
	defer srv.Close()
	for _, path := range []string{"/profiles/1", "/users/2", "/version", "/anything"} {
		start := time.Now()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if took := time.Since(start); resp.StatusCode != 200 || took < delay {
			t.Errorf("GET %s: %d after %v, want 200 after at least %v", path, resp.StatusCode, took, delay)
		}
	}
}
