package controlplane

import (
	"context"
	"log/slog"

	"meshca/pkg/leader"
	"meshca/pkg/store"
)

// newElector returns the elector of this instance: a lease in PostgreSQL
// when the store is shared, else leader.Static (the single process leads).
func newElector(ctx context.Context, cfg Config, st store.Store, logger *slog.Logger) (*leader.Elector, error) {
	opts := leader.Options{
		Address:       cfg.APIAddress,
		Version:       cfg.Version,
		LeaseDuration: cfg.LeaderLeaseDuration,
		RenewInterval: cfg.LeaderRenewInterval,
		Logger:        logger,
	}
	if storeName(cfg) != "postgres" {
		return leader.Static(opts), nil
	}
	return leader.New(ctx, cfg.StoreDSN, st, opts)
}
