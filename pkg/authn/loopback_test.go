package authn_test

import (
	"testing"

	"meshca/pkg/authn"
)

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost":          true,
		"LOCALHOST:5681":     true,
		"api.localhost:5681": true,
		"127.0.0.1:5681":     true,
		"127.8.9.1":          true,
		"[::1]:5681":         true,
		"::1":                true,
		"[::ffff:127.0.0.1]": true,
		"":                   false,
		"evil.example":       false,
		"evil.example:5681":  false,
		"localhost.evil.com": false,
		"10.0.0.1:5681":      false,
		"0.0.0.0:5681":       false,
		"127.0.0.1.nip.io":   false,
	} {
		if got := authn.IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestIsLoopbackBind(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:5681": true,
		"localhost:0":    true,
		"[::1]:5681":     true,
		":5681":          false,
		"0.0.0.0:5681":   false,
		"[::]:5681":      false,
		"10.1.2.3:5681":  false,
		"garbage":        false,
	} {
		if got := authn.IsLoopbackBind(addr); got != want {
			t.Errorf("IsLoopbackBind(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:40000":          true,
		"[::1]:40000":              true,
		"[::ffff:127.0.0.1]:40000": true,
		"192.0.2.1:1234":           false,
		"[2001:db8::1]:1234":       false,
		"localhost:1234":           false, // RemoteAddr is always an IP
	} {
		if got := authn.IsLoopbackAddr(addr); got != want {
			t.Errorf("IsLoopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
