package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into
// 2^subBits linear buckets, so a recorded value is off by less than
// 1/2^subBits (under 0.8%), as HdrHistogram's "significant digits" do.
const subBits = 7

// maxValue is the largest latency recorded exactly; longer ones are
// clamped to it. 2^36 ns is about 69 s.
const maxValue = 1<<36 - 1

// Histogram is a log-linear latency histogram in the style of
// HdrHistogram: constant relative precision over the whole range, fixed
// memory, and recording that costs a few instructions and no allocation.
// It is not safe for concurrent use; give each goroutine its own and Merge.
type Histogram struct {
	counts   []uint64
	total    uint64
	sum      time.Duration
	min, max time.Duration
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, bucketIndex(maxValue)+1), min: math.MaxInt64}
}

// bucketIndex maps a value to its bucket. Values below 2^(subBits+1) have a
// bucket each; above, a bucket spans 2^shift values.
func bucketIndex(v uint64) int {
	n := bits.Len64(v)
	if n <= subBits+1 {
		return int(v)
	}
	shift := n - subBits - 1
	return shift<<subBits + int(v>>shift)
}

// bucketHigh is the highest value that lands in bucket i.
func bucketHigh(i int) uint64 {
	if i < 1<<(subBits+1) {
		return uint64(i)
	}
	shift := i>>subBits - 1
	top := uint64(i - shift<<subBits)
	return (top+1)<<shift - 1
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	if v > maxValue {
		v = maxValue
	}
	h.counts[bucketIndex(v)]++
	h.total++
	h.sum += d
	h.min = min(h.min, d)
	h.max = max(h.max, d)
}

// Merge adds every value of o into h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.total }

// Mean is the average latency.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return h.sum / time.Duration(h.total)
}

// Max is the largest latency recorded.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile is the latency at or under which a fraction q (0 to 1) of the
// values fall, reported as the highest value of its bucket, as
// HdrHistogram reports percentiles.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(bucketHigh(i)), h.max)
		}
	}
	return h.max
}
