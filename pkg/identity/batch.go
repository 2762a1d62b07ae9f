package identity

import (
	"context"

	"meshca/pkg/store"
)

// Issued certificates are persisted in group commits: concurrent workers'
// records go to the store in one transaction, so a durable store (SQLite with
// a full fsync per commit) costs one sync per batch, not per certificate.
const maxBatch = 512

type writeReq struct {
	ops  []store.Op
	done chan error
}

func (m *Manager) writeBatches(ctx context.Context, reqs chan writeReq) {
	for {
		var first writeReq
		select {
		case <-ctx.Done():
			return
		case first = <-reqs:
		}
		batch := []writeReq{first}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		ops := make([]store.Op, 0, len(batch))
		for _, r := range batch {
			ops = append(ops, r.ops...)
		}
		// One fence for the batch: every write of the issuer is
		// conditional on its leader term, in the same transaction.
		ops, err := m.fenced(ops)
		if err == nil {
			err = m.store.Commit(ctx, ops...)
		}
		if err != nil && len(batch) > 1 && ctx.Err() == nil {
			// One request's condition (its Dataplane deleted meanwhile) must
			// not fail the others: commit each on its own to tell them apart.
			for _, r := range batch {
				ops, err := m.fenced(r.ops)
				if err == nil {
					err = m.store.Commit(ctx, ops...)
				}
				r.done <- err
			}
			continue
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// commit writes ops atomically, through the group-commit writer when it runs.
func (m *Manager) commit(ctx context.Context, ops ...store.Op) error {
	if m.writes == nil {
		ops, err := m.fenced(ops)
		if err != nil {
			return err
		}
		return m.store.Commit(ctx, ops...)
	}
	r := writeReq{ops: ops, done: make(chan error, 1)}
	select {
	case m.writes <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
