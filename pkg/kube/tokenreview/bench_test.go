package tokenreview_test

import (
	"testing"

	"meshca/pkg/kube/tokenreview"
)

// What authenticating one SDS stream by ServiceAccount token costs: a
// TokenReview round trip to a real API server, or a cache hit.
func BenchmarkVerifyNode(b *testing.B) {
	e := startTB(b)
	tok := e.token(b, "payments", "web")
	b.Run("review", func(b *testing.B) {
		for b.Loop() {
			a := tokenreview.New(e.client, tokenreview.Options{}) // empty cache: asks the API server
			if _, _, _, err := a.VerifyNode(b.Context(), tok, "default.web-1.payments"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		a := tokenreview.New(e.client, tokenreview.Options{})
		for b.Loop() {
			if _, _, _, err := a.VerifyNode(b.Context(), tok, "default.web-1.payments"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
