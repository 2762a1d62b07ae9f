package api

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration accepts Go durations ("36h", "90m", "1h30m") and a leading
// days component as Kong Mesh documents ("1d", "2d12h"). Negative or zero
// values are refused: no certificate lifetime or timeout can be zero.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseUint(s[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: want a Go duration such as 36h or 90m, or days such as 1d", orig)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: want a Go duration such as 36h or 90m, or days such as 1d", orig)
		}
		rest = d
	}
	d := days + rest
	if d <= 0 {
		return 0, fmt.Errorf("invalid duration %q: must be positive", orig)
	}
	return d, nil
}
