package api

import (
	"strings"
	"testing"
)

// BenchmarkDuplicateKeys: the walk over a 1 MiB Secret body (one large
// string) and over a Mesh-sized body.
func BenchmarkDuplicateKeys(b *testing.B) {
	for _, bc := range []struct{ name, body string }{
		{"secret-1MiB", `{"type":"Secret","mesh":"default","name":"s","data":"` + strings.Repeat("A", 1<<20) + `"}`},
		{"mesh", `{"type":"Mesh","name":"default","mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"builtin","dpCert":{"rotation":{"expiration":"1d"}},"conf":{"caCert":{"RSAbits":2048,"expiration":"10y"}}}]}}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			js := []byte(bc.body)
			b.SetBytes(int64(len(js)))
			b.ReportAllocs()
			for b.Loop() {
				v := &ValidationError{}
				DuplicateKeys(v, js, "")
				if v.OrNil() != nil {
					b.Fatal(v)
				}
			}
		})
	}
}
