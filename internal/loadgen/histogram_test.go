package loadgen

import (
	"testing"
	"time"
)

func TestBucketsRoundTrip(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 255, 256, 257, 1000, 12345, 1 << 20, 1<<20 + 12345, maxValue} {
		i := bucketIndex(v)
		if i < prev {
			t.Fatalf("bucketIndex(%d) = %d, below the previous %d", v, i, prev)
		}
		prev = i
		if hi := bucketHigh(i); hi < v || float64(hi-v) > float64(v)/float64(1<<subBits)+1 {
			t.Errorf("value %d: bucket %d ends at %d, too far", v, i, hi)
		}
		if i > 0 && bucketHigh(i-1) >= v {
			t.Errorf("value %d: the bucket before %d already ends at %d", v, i, bucketHigh(i-1))
		}
	}
}

func TestQuantiles(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}, {1, 10000 * time.Microsecond}} {
		got := h.Quantile(tc.q)
		if got < tc.want || float64(got-tc.want) > float64(tc.want)/100 {
			t.Errorf("q%.3f = %v, want %v within 1%%", tc.q, got, tc.want)
		}
	}
	o := NewHistogram()
	o.Record(time.Second)
	h.Merge(o)
	if h.Count() != 10001 || h.Max() != time.Second {
		t.Errorf("after merge: count %d max %v", h.Count(), h.Max())
	}
}
