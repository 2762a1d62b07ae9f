package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// samples are the series of one Prometheus text exposition, keyed by the
// series as written: `name` or `name{label="value",...}`.
type samples map[string]float64

// parseMetrics reads the Prometheus text format (comments skipped; an
// optional timestamp after the value is ignored).
func parseMetrics(r io.Reader) (samples, error) {
	out := samples{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The value follows the last '}' if there are labels, else the first space.
		var series, rest string
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], strings.TrimSpace(line[i+1:])
		} else {
			var ok bool
			series, rest, ok = strings.Cut(line, " ")
			if !ok {
				return nil, fmt.Errorf("metrics: malformed line %q", line)
			}
		}
		valStr, _, _ := strings.Cut(rest, " ")
		v, err := strconv.ParseFloat(valStr, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: line %q: %w", line, err)
		}
		out[series] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

// scrape fetches and parses /metrics.
func scrape(ctx context.Context, hc *http.Client, apiURL string) (samples, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape /metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

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
