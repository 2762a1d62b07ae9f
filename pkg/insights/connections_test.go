package insights

import (
	"testing"
	"time"
)

func TestConnectionsKeepOpenStreamsAndTheLatestClosed(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewConnections("cp", func() time.Time { return now })
	_, closeFirst := c.Open("m", "dp")
	open := 1
	for i := 0; i < 2*keepSubscriptions; i++ {
		now = now.Add(time.Second)
		_, closed := c.Open("m", "dp")
		closed()
	}
	subs := c.Subscriptions("m", "dp")
	if len(subs) != keepSubscriptions {
		t.Fatalf("%d subscriptions kept, want %d", len(subs), keepSubscriptions)
	}
	if subs[0].DisconnectTime != nil {
		t.Errorf("the open stream was forgotten: %+v", subs[0])
	}
	if last := subs[len(subs)-1]; !last.ConnectTime.Equal(now) {
		t.Errorf("latest stream not kept: %+v", last)
	}
	ids := map[string]bool{}
	for _, s := range subs {
		ids[s.ID] = true
	}
	if len(ids) != len(subs) {
		t.Errorf("stream ids are not unique: %v", ids)
	}
	closeFirst()
	open--
	for _, s := range c.Subscriptions("m", "dp") {
		if s.DisconnectTime == nil {
			open++
		}
	}
	if open != 0 {
		t.Errorf("%d streams still open", open)
	}
	if got := c.Subscriptions("m", "other"); got != nil {
		t.Errorf("unknown data plane has %v", got)
	}
}
