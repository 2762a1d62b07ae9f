package memory_test

import (
	"testing"

	"meshca/pkg/store"
	"meshca/pkg/store/memory"
	"meshca/pkg/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := memory.New()
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
