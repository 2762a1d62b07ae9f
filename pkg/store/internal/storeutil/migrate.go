package storeutil

import (
	"context"
	"fmt"
)

// MigrationTx is the transaction a SQL store runs its schema migration in.
type MigrationTx interface {
	Exec(ctx context.Context, query string, args ...any) error
	// Version reads schema_version; ok=false when it holds no row yet.
	Version(ctx context.Context) (version int, ok bool, err error)
}

// Migrate brings the schema to len(steps): step i moves version i to i+1.
// setVersion is the dialect's `UPDATE schema_version SET version = <param>`.
// A database newer than the binary is refused. It reports the versions it
// moved between; the caller commits.
func Migrate(ctx context.Context, tx MigrationTx, steps []string, setVersion string) (from, to int, err error) {
	if err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return 0, 0, fmt.Errorf("migrate: %w", err)
	}
	current, ok, err := tx.Version(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("migrate: read schema version: %w", err)
	}
	if !ok {
		if err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return 0, 0, fmt.Errorf("migrate: %w", err)
		}
	}
	if current > len(steps) {
		return 0, 0, fmt.Errorf("migrate: database schema version %d is newer than this binary supports (%d)", current, len(steps))
	}
	for i := current; i < len(steps); i++ {
		if err := tx.Exec(ctx, steps[i]); err != nil {
			return 0, 0, fmt.Errorf("migrate: step %d: %w", i+1, err)
		}
	}
	if err := tx.Exec(ctx, setVersion, len(steps)); err != nil {
		return 0, 0, fmt.Errorf("migrate: %w", err)
	}
	return current, len(steps), nil
}
