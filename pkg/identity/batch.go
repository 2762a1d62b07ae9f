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
	op   store.Op
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
		ops := make([]store.Op, len(batch))
		for i, r := range batch {
			ops[i] = r.op
		}
		err := m.store.Commit(ctx, ops...)
		for _, r := range batch {
			r.done <- err
		}
	}
}

// commit writes one op, through the group-commit writer when it runs.
func (m *Manager) commit(ctx context.Context, op store.Op) error {
	if m.writes == nil {
		return m.store.Commit(ctx, op)
	}
	r := writeReq{op: op, done: make(chan error, 1)}
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
