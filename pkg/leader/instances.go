package leader

import (
	"context"
	"fmt"
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

// heartbeat records this instance in control_planes (and forgets instances
// silent for instanceRetention).
func (e *Elector) heartbeat(ctx context.Context) {
	_, err := e.db.Exec(ctx, `INSERT INTO control_planes (id, address, version, started_at, heartbeat_at)
		VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, version = EXCLUDED.version, heartbeat_at = now()`,
		e.opts.ID, e.addr(), e.opts.Version, e.started)
	if err == nil {
		_, err = e.db.Exec(ctx, `DELETE FROM control_planes WHERE heartbeat_at < now() - $1 * interval '1 microsecond'`, micros(instanceRetention))
	}
	if err != nil && ctx.Err() == nil {
		e.opts.Logger.Warn("instance heartbeat failed", "error", err)
	}
}

// Instances lists the instances sharing the database (only this one for
// Static), sorted by id.
func (e *Elector) Instances(ctx context.Context) ([]Instance, error) {
	if e.db == nil {
		now := e.opts.Now()
		since := e.started
		return []Instance{{ID: e.opts.ID, Address: e.addr(), Version: e.opts.Version, Leader: true,
			LeaderSince: &since, StartedAt: e.started, LastHeartbeat: now, Online: true}}, nil
	}
	rows, err := e.db.Query(ctx, `SELECT c.id, c.address, c.version, c.started_at, c.heartbeat_at,
			c.heartbeat_at > now() - $2 * interval '1 microsecond',
			l.holder IS NOT NULL AND l.expires_at > now(), l.acquired_at
		FROM control_planes c LEFT JOIN leader_lease l ON l.name = $1 AND l.holder = c.id
		ORDER BY c.id`, leaseName, micros(e.opts.LeaseDuration))
	if err != nil {
		return nil, fmt.Errorf("list control planes: %w", err)
	}
	defer rows.Close()
	var out []Instance
	for rows.Next() {
		var in Instance
		var since *time.Time
		if err := rows.Scan(&in.ID, &in.Address, &in.Version, &in.StartedAt, &in.LastHeartbeat, &in.Online, &in.Leader, &since); err != nil {
			return nil, fmt.Errorf("list control planes: %w", err)
		}
		in.StartedAt, in.LastHeartbeat = in.StartedAt.UTC(), in.LastHeartbeat.UTC()
		if in.Leader && since != nil {
			t := since.UTC()
			in.LeaderSince = &t
		}
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list control planes: %w", err)
	}
	return out, nil
}
