package controlplane

import (
	"context"
	"log/slog"
	"time"

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

// whileLeading runs fn for every term this instance leads, with a context
// that ends with the term (or ctx); fn fences its writes with the term's.
func whileLeading(ctx context.Context, el *leader.Elector, fn func(context.Context, *leader.Term)) {
	for {
		term, err := el.Await(ctx)
		if err != nil {
			return
		}
		tctx, cancel := term.Context(ctx)
		fn(tctx, term)
		cancel()
		select {
		case <-term.Done():
		case <-ctx.Done():
			return
		}
	}
}

// failoverBudget is how long instances sharing the store may be without a
// leader after one dies: its lease runs out, then another takes it within a
// renew interval. Certificates are renewed at least that long before they
// expire (when their lifetime allows).
func failoverBudget(cfg Config) time.Duration {
	if storeName(cfg) != "postgres" {
		return 0
	}
	lease, renew := cfg.LeaderLeaseDuration, cfg.LeaderRenewInterval
	if lease <= 0 {
		lease = leader.DefaultLeaseDuration
	}
	if renew <= 0 {
		renew = leader.DefaultRenewInterval
	}
	return 2*lease + renew
}
