package identity

import (
	"errors"
	"testing"
	"time"

	"meshca/pkg/api"
)

// TestHistory: issuances are recorded with their serial as Insight shows
// it; repeated identical failures fold into one entry; the oldest entries
// go first once historyLen is reached.
func TestHistory(t *testing.T) {
	st := &dpState{}
	b := api.MTLSBackend{Name: "ca-1", Type: "builtin"}
	t0 := time.Unix(1000, 0)
	issued := func(serial string) *current {
		return &current{rec: record{Backend: "ca-1", NotAfter: t0.Add(time.Hour)}, serial: serial}
	}
	recordHistoryLocked(st, b, issued("abc"), nil, t0)
	down := errors.New("backend down")
	for i := 1; i <= 3; i++ {
		recordHistoryLocked(st, b, nil, down, t0.Add(time.Duration(i)*time.Second))
	}
	h := historyView(st.history)
	if len(h) != 2 || h[0].Serial != "0ABC" || h[1].Error != "backend down" || h[1].Attempts != 3 || !h[1].At.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("history %+v", h)
	}
	for i := 0; i < 2*historyLen; i++ {
		recordHistoryLocked(st, b, issued("ff"), nil, t0.Add(time.Minute))
	}
	if len(st.history) != historyLen || st.history[0].Error != "" {
		t.Fatalf("history kept %d entries (oldest %+v), want the last %d", len(st.history), st.history[0], historyLen)
	}
}
