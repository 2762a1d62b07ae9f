package main

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"meshca/internal/promtext"
)

// samples are the series of one /metrics scrape.
type samples = promtext.Samples

// bucket is one cumulative histogram bucket.
type bucket struct {
	le    float64
	count float64
}

// histogram is a Prometheus histogram read from samples (minus an earlier
// snapshot, when given).
type histogram struct {
	buckets []bucket // sorted by le, cumulative, ending with +Inf
	count   float64
	sum     float64
}

// histogramOf extracts the unlabelled histogram name from s, minus base (may be nil).
func histogramOf(s, base samples, name string) histogram {
	var h histogram
	prefix := name + `_bucket{le="`
	for k, v := range s {
		leStr, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		leStr = strings.TrimSuffix(leStr, `"}`)
		le, err := strconv.ParseFloat(leStr, 64) // handles "+Inf"
		if err != nil {
			continue
		}
		h.buckets = append(h.buckets, bucket{le: le, count: v - base[k]})
	}
	sort.Slice(h.buckets, func(i, j int) bool { return h.buckets[i].le < h.buckets[j].le })
	h.count = s[name+"_count"] - base[name+"_count"]
	h.sum = s[name+"_sum"] - base[name+"_sum"]
	return h
}

// quantile estimates the q-quantile as Prometheus' histogram_quantile does
// (linear interpolation within the bucket; the upper bound of the last
// finite bucket if it falls in +Inf). NaN when empty.
func (h histogram) quantile(q float64) float64 {
	if len(h.buckets) == 0 || h.count == 0 {
		return math.NaN()
	}
	total := h.buckets[len(h.buckets)-1].count
	rank := q * total
	prevLE, prevCount := 0.0, 0.0
	for i, b := range h.buckets {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				if i == 0 {
					return math.NaN()
				}
				return h.buckets[i-1].le
			}
			if b.count == prevCount {
				return b.le
			}
			return prevLE + (b.le-prevLE)*(rank-prevCount)/(b.count-prevCount)
		}
		prevLE, prevCount = b.le, b.count
	}
	return h.buckets[len(h.buckets)-1].le
}

// durationStats summarises a set of measured durations.
type durationStats struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_seconds"`
	P90   float64 `json:"p90_seconds"`
	P99   float64 `json:"p99_seconds"`
	Max   float64 `json:"max_seconds"`
}

// summarize returns nearest-rank percentiles of ds.
func summarize(ds []time.Duration) durationStats {
	if len(ds) == 0 {
		return durationStats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		i = min(max(i, 0), len(s)-1)
		return s[i].Seconds()
	}
	return durationStats{Count: len(s), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: s[len(s)-1].Seconds()}
}
