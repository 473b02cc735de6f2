package metrics

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRouteRequestCountsEachKey(t *testing.T) {
	m := New(prometheus.NewRegistry())
	r := m.Route("get-user", "GET", "request", "legacy")
	calls := []struct {
		method, backend string
		code            int
	}{
		{"GET", BackendNATS, 200}, {"GET", BackendNATS, 200}, {"GET", BackendNATS, 404},
		{"GET", BackendLegacy, 200}, {"BREW", BackendNATS, 200}, {"GET", BackendNATS, 200},
	}
	var wg sync.WaitGroup
	for range 4 { // concurrently, as requests record
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range calls {
				r.Request(c.method, c.backend, c.code, time.Millisecond, "")
			}
		}()
	}
	wg.Wait()
	for _, tc := range []struct {
		method, code, backend string
		want                  float64
	}{
		{"GET", "200", BackendNATS, 12}, {"GET", "404", BackendNATS, 4},
		{"GET", "200", BackendLegacy, 4}, {"other", "200", BackendNATS, 4},
	} {
		got := testutil.ToFloat64(m.Requests.WithLabelValues("get-user", tc.method, tc.code, tc.backend))
		if got != tc.want {
			t.Errorf("requests{method=%s,code=%s,backend=%s} = %v, want %v", tc.method, tc.code, tc.backend, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.RequestDuration); n != 3 {
		t.Errorf("%d request duration series, want 3 (GET/nats, GET/legacy, other/nats)", n)
	}
}

func BenchmarkRouteRequest(b *testing.B) {
	m := New(prometheus.NewRegistry())
	r := m.Route("get-user", "GET", "request", "")
	b.ReportAllocs()
	for b.Loop() {
		r.Request("GET", BackendNATS, 200, 300*time.Microsecond, "")
	}
}
