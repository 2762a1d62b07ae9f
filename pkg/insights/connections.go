package insights

import (
	"strconv"
	"sync"
	"time"
)

// keepSubscriptions is how many past SDS streams are remembered per data
// plane (Kuma keeps a few too, most recent last).
const keepSubscriptions = 5

// Connections records the SDS streams of data planes: when each was opened
// and closed and when secrets were last pushed on it. A data plane is online
// while one of its streams is open. It is safe for concurrent use.
type Connections struct {
	instanceID string
	now        func() time.Time

	mu  sync.Mutex
	seq uint64
	dps map[dpKey][]*stream
}

type dpKey struct{ mesh, name string }

type stream struct {
	id                    string
	connected, lastUpdate time.Time
	disconnected          time.Time // zero while open
}

// NewConnections returns an empty record. instanceID names this control
// plane in each subscription (Kuma's controlPlaneInstanceId); now is the
// clock (time.Now when nil).
func NewConnections(instanceID string, now func() time.Time) *Connections {
	if now == nil {
		now = time.Now
	}
	return &Connections{instanceID: instanceID, now: now, dps: map[dpKey][]*stream{}}
}

// Open records a stream of mesh/name opening now. updated is to be called
// whenever secrets are pushed on it, closed once when it ends.
func (c *Connections) Open(mesh, name string) (updated, closed func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := c.now()
	s := &stream{id: c.instanceID + "-" + strconv.FormatUint(c.seq, 10), connected: t, lastUpdate: t}
	k := dpKey{mesh, name}
	list := append(c.dps[k], s)
	if len(list) > keepSubscriptions {
		// Drop the oldest closed stream; open ones are never forgotten.
		for i, old := range list {
			if !old.disconnected.IsZero() {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
	}
	c.dps[k] = list
	var once sync.Once
	updated = func() {
		c.mu.Lock()
		if s.disconnected.IsZero() {
			s.lastUpdate = c.now()
		}
		c.mu.Unlock()
	}
	closed = func() {
		once.Do(func() {
			c.mu.Lock()
			s.disconnected = c.now()
			c.mu.Unlock()
		})
	}
	return updated, closed
}

// Subscriptions returns the streams of mesh/name, oldest first, as Kuma's
// DataplaneInsight.subscriptions.
func (c *Connections) Subscriptions(mesh, name string) []Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := c.dps[dpKey{mesh, name}]
	if len(list) == 0 {
		return nil
	}
	out := make([]Subscription, 0, len(list))
	for _, s := range list {
		sub := Subscription{
			ID:                     s.id,
			ControlPlaneInstanceID: c.instanceID,
			ConnectTime:            s.connected.UTC(),
			Status:                 SubscriptionStatus{LastUpdateTime: s.lastUpdate.UTC()},
		}
		if !s.disconnected.IsZero() {
			t := s.disconnected.UTC()
			sub.DisconnectTime = &t
		}
		out = append(out, sub)
	}
	return out
}
