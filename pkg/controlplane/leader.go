package controlplane

import (
	"context"
	"log/slog"
	"time"

	"meshca/pkg/leader"
	"meshca/pkg/store"
)

// newElector returns the elector of this instance: a lease in PostgreSQL
// or a Kubernetes Lease in the system namespace when the store is shared,
// else leader.Static (the single process leads).
func newElector(ctx context.Context, cfg Config, st store.Store, logger *slog.Logger) (*leader.Elector, error) {
	opts := leader.Options{
		Address:       cfg.APIAddress,
		Version:       cfg.Version,
		LeaseDuration: cfg.LeaderLeaseDuration,
		RenewInterval: cfg.LeaderRenewInterval,
		Logger:        logger,
	}
	switch {
	case cfg.kubernetes():
		client, err := kubeClientset(cfg)
		if err != nil {
			return nil, err
		}
		// In a pod the hostname is the pod's name: the instance list then
		// names the pods (with a suffix telling restarts apart).
		return leader.NewKubernetes(client, cfg.systemNamespace(), st, opts)
	case storeName(cfg) == "postgres":
		return leader.New(ctx, cfg.StoreDSN, st, opts)
	default:
		return leader.Static(opts), nil
	}
}

// sharedStore tells whether several instances may share the store, and
// so elect a leader.
func sharedStore(cfg Config) bool { return cfg.kubernetes() || storeName(cfg) == "postgres" }

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
	if !sharedStore(cfg) {
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
