package controlplane

import (
	"strings"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	for in, want := range map[string]int64{
		"auto":     -1,
		"":         -1,
		"off":      0,
		"OFF":      0,
		"256MiB":   256 << 20,
		"1GiB":     1 << 30,
		"1.5GiB":   3 << 29,
		"300MB":    300e6,
		"16777216": 16 << 20,
		"64 MiB":   64 << 20,
	} {
		got, err := ParseMemoryLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"lots", "-1GiB", "0", "1MiB", "12 parsecs", "1e30GiB"} {
		if _, err := ParseMemoryLimit(in); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
			t.Errorf("ParseMemoryLimit(%q): err = %v, want an error naming --memory-limit", in, err)
		}
	}
}

func TestSoftLimitFor(t *testing.T) {
	for _, c := range []struct{ container, want int64 }{
		{300e6, 300e6 - 64<<20},     // small: the binary's pages dominate the reserve
		{1 << 30, 1<<30 - 1<<30/10}, // large: 10 %
		{100 << 20, 50 << 20},       // tiny: at least half
	} {
		if got := softLimitFor(c.container); got != c.want {
			t.Errorf("softLimitFor(%d) = %d, want %d", c.container, got, c.want)
		}
	}
}
