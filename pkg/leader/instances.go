package leader

import (
	"context"
	"time"
)

// Instance is one meshca-cp on the database, as GET /control-planes shows it.
type Instance struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Version string `json:"version"`
	Leader  bool   `json:"leader"`
	// LeaderSince is when its lease was taken, for the leader.
	LeaderSince *time.Time `json:"leaderSince,omitempty"`
	StartedAt   time.Time  `json:"startedAt"`
	// LastHeartbeat is its last heartbeat; Online says it is within a
	// lease duration (an instance killed is listed, offline, for an hour).
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	Online        bool      `json:"online"`
}

// instanceRetention is how long an instance that stopped heartbeating stays
// listed.
const instanceRetention = time.Hour

// heartbeat records this instance in the list.
func (e *Elector) heartbeat(ctx context.Context) {
	err := e.b.heartbeat(ctx, instanceInfo{Address: e.addr(), Version: e.opts.Version, StartedAt: e.started})
	if err != nil && ctx.Err() == nil {
		e.opts.Logger.Warn("instance heartbeat failed", "error", err)
	}
}

// Instances lists the instances sharing the store (only this one for
// Static), sorted by id.
func (e *Elector) Instances(ctx context.Context) ([]Instance, error) {
	if e.b == nil {
		now := e.opts.Now()
		since := e.started
		return []Instance{{ID: e.opts.ID, Address: e.addr(), Version: e.opts.Version, Leader: true,
			LeaderSince: &since, StartedAt: e.started, LastHeartbeat: now, Online: true}}, nil
	}
	return e.b.instances(ctx)
}
