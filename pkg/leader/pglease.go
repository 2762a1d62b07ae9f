package leader

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pgLease keeps the lease in the table leader_lease and the instances in
// control_planes of the database the postgres store migrated; every time is
// the database's clock.
type pgLease struct {
	db            *pgxpool.Pool
	id            string
	leaseDuration time.Duration
}

func micros(d time.Duration) int64 { return d.Microseconds() }

func (p *pgLease) acquire(ctx context.Context) (bool, error) {
	tag, err := p.db.Exec(ctx, `INSERT INTO leader_lease (name, holder, acquired_at, renewed_at, expires_at)
		VALUES ($1, $2, now(), now(), now() + $3 * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,
			acquired_at = CASE WHEN leader_lease.holder = EXCLUDED.holder THEN leader_lease.acquired_at ELSE now() END,
			renewed_at = now(), expires_at = EXCLUDED.expires_at
		WHERE leader_lease.expires_at < now() OR leader_lease.holder = EXCLUDED.holder`,
		leaseName, p.id, micros(p.leaseDuration))
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

func (p *pgLease) renew(ctx context.Context) (bool, error) {
	tag, err := p.db.Exec(ctx, `UPDATE leader_lease SET renewed_at = now(), expires_at = now() + $3 * interval '1 microsecond'
		WHERE name = $1 AND holder = $2 AND expires_at > now()`, leaseName, p.id, micros(p.leaseDuration))
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

func (p *pgLease) release(ctx context.Context) error {
	_, err := p.db.Exec(ctx, `UPDATE leader_lease SET expires_at = now() WHERE name = $1 AND holder = $2`, leaseName, p.id)
	return err
}

func (p *pgLease) heartbeat(ctx context.Context, self instanceInfo) error {
	_, err := p.db.Exec(ctx, `INSERT INTO control_planes (id, address, version, started_at, heartbeat_at)
		VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, version = EXCLUDED.version, heartbeat_at = now()`,
		p.id, self.Address, self.Version, self.StartedAt)
	if err == nil {
		_, err = p.db.Exec(ctx, `DELETE FROM control_planes WHERE heartbeat_at < now() - $1 * interval '1 microsecond'`, micros(instanceRetention))
	}
	return err
}

func (p *pgLease) leave(ctx context.Context) error {
	_, err := p.db.Exec(ctx, `DELETE FROM control_planes WHERE id = $1`, p.id)
	return err
}

func (p *pgLease) instances(ctx context.Context) ([]Instance, error) {
	rows, err := p.db.Query(ctx, `SELECT c.id, c.address, c.version, c.started_at, c.heartbeat_at,
			c.heartbeat_at > now() - $2 * interval '1 microsecond',
			l.holder IS NOT NULL AND l.expires_at > now(), l.acquired_at
		FROM control_planes c LEFT JOIN leader_lease l ON l.name = $1 AND l.holder = c.id
		ORDER BY c.id`, leaseName, micros(p.leaseDuration))
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

func (p *pgLease) close() { p.db.Close() }
