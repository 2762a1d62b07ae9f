// Package promtext reads the Prometheus text exposition that meshca-cp serves
// at /metrics, for the load tools and the end-to-end tests.
package promtext

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Samples are the series of one exposition, keyed as written: `name` or
// `name{label="value",...}`.
type Samples map[string]float64

// Parse reads the text format (comments skipped; an optional timestamp after
// the value is ignored).
func Parse(r io.Reader) (Samples, error) {
	out := Samples{}
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
			if series, rest, ok = strings.Cut(line, " "); !ok {
				return nil, fmt.Errorf("metrics: malformed line %q", line)
			}
		}
		val, _, _ := strings.Cut(rest, " ")
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: line %q: %w", line, err)
		}
		out[series] = v
	}
	return out, sc.Err()
}

// Scrape fetches and parses apiURL/metrics within 10 s.
func Scrape(ctx context.Context, hc *http.Client, apiURL string) (Samples, error) {
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
	return Parse(resp.Body)
}

// Get returns one series as written (0 when absent).
func (s Samples) Get(series string) float64 { return s[series] }

// SumWhere sums every series of metric name whose labels contain all of the
// given `label="value"` pairs.
func (s Samples) SumWhere(name string, labels ...string) float64 {
	var sum float64
	for k, v := range s {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(k, l) {
				ok = false
				break
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}

// ByLabel sums the series of metric name by the value of one label.
func (s Samples) ByLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range s {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		_, after, ok := strings.Cut(k, label+`="`)
		if !ok {
			continue
		}
		val, _, _ := strings.Cut(after, `"`)
		out[val] += v
	}
	return out
}
