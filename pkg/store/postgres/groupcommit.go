package postgres

// Group commit: concurrent Commit calls of one process share a transaction,
// each in its own savepoint, so they share one WAL flush. PostgreSQL orders
// every transaction that NOTIFYs through the end of its commit (so that
// notifications follow commit order): one call per transaction would make
// each wait for the flush of the one before.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

const (
	// maxGroup bounds the calls one transaction carries: each is a
	// subtransaction, and past 64 of them PostgreSQL's snapshots of the
	// transaction overflow into pg_subtrans, which slows every reader.
	maxGroup = 60
	// groupTimeout bounds one group's transaction. Callers' contexts do not
	// reach the database once their call is taken: cancelling one must not
	// abort the others'.
	groupTimeout = 30 * time.Second
	// lockTimeout bounds one call's wait for a row lock.
	lockTimeout = "5s"
)

// ErrClosed is returned by Commit after Close.
var ErrClosed = errors.New("store closed")

// request states: queued, taken by the writer, or given up by its caller.
const (
	reqQueued int32 = iota
	reqClaimed
	reqAbandoned
)

type request struct {
	ctx    context.Context
	ops    []store.Op
	done   chan error
	state  atomic.Int32
	err    error
	events []store.Event
}

func (r *request) claim() bool { return r.state.CompareAndSwap(reqQueued, reqClaimed) }

func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Store) commit(ctx context.Context, ops ...store.Op) error {
	if err := storeutil.ValidateOps(ops); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if len(ops) == 0 {
		return nil
	}
	r := &request{ctx: ctx, ops: ops, done: make(chan error, 1)}
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return fmt.Errorf("commit: %w", ErrClosed)
	}
	s.queue = append(s.queue, r)
	s.qmu.Unlock()
	s.signal()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return fmt.Errorf("commit: %w", ctx.Err())
		}
		return <-r.done // taken already: its outcome is coming
	}
}

// writer commits the queued calls, up to maxGroup per transaction, without
// waiting for more to arrive (groups form from the calls that queue up
// while the previous group commits), until Close.
func (s *Store) writer() {
	defer close(s.writerDone)
	var group []*request
	for {
		s.qmu.Lock()
		if s.closed {
			pending := s.queue
			s.queue = nil
			s.qmu.Unlock()
			for _, r := range pending {
				if r.claim() {
					r.done <- fmt.Errorf("commit: %w", ErrClosed)
				}
			}
			return
		}
		n := min(len(s.queue), maxGroup)
		group = append(group[:0], s.queue[:n]...)
		rest := copy(s.queue, s.queue[n:])
		clear(s.queue[rest:])
		s.queue = s.queue[:rest]
		s.qmu.Unlock()
		if n == 0 {
			<-s.wake
			continue
		}
		s.commitGroup(group)
		clear(group)
	}
}

// commitGroup applies each call in its own savepoint of one transaction,
// numbers and notifies the events of those that succeeded, commits, and
// hands every call its outcome.
func (s *Store) commitGroup(group []*request) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	var claimed []*request
	for _, r := range group {
		if !r.claim() {
			continue // its caller gave up while it was queued
		}
		if err := r.ctx.Err(); err != nil {
			r.done <- fmt.Errorf("commit: %w", err)
			continue
		}
		claimed = append(claimed, r)
	}
	if len(claimed) == 0 {
		return
	}
	fail := func(err error) {
		for _, r := range claimed {
			if r.err == nil {
				r.err = err
			}
			r.done <- classify(r.err)
		}
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		fail(fmt.Errorf("commit: %w", err))
		return
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		fail(fmt.Errorf("commit: begin: %w", err))
		return
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	// One call waiting for a row another process holds (a paused instance
	// inside a transaction) must not hold up the whole group for long: it
	// fails alone after lockTimeout.
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+lockTimeout+`'`); err != nil {
		fail(fmt.Errorf("commit: %w", err))
		return
	}

	now := storeutil.Now()
	var events []store.Event
	if len(claimed) == 1 {
		// Alone: no savepoint; a failure rolls the transaction back.
		r := claimed[0]
		if events, err = applyOps(ctx, tx, now, r.ops); err != nil {
			r.done <- classify(err)
			return
		}
	} else {
		for _, r := range claimed {
			if _, err := tx.Exec(ctx, `SAVEPOINT call`); err != nil {
				fail(fmt.Errorf("commit: savepoint: %w", err))
				return
			}
			r.events, r.err = applyOps(ctx, tx, now, r.ops)
			end := `RELEASE SAVEPOINT call`
			if r.err != nil {
				// Undo this call's writes; the group goes on without it.
				end = `ROLLBACK TO SAVEPOINT call; RELEASE SAVEPOINT call`
			}
			if _, err := tx.Exec(ctx, end); err != nil {
				fail(fmt.Errorf("commit: group aborted: %w", err))
				return
			}
			if r.err == nil {
				events = append(events, r.events...)
			}
		}
	}
	if err := publish(ctx, tx, now, events); err != nil {
		fail(fmt.Errorf("commit: %w", err))
		return
	}
	if err := tx.Commit(ctx); err != nil {
		fail(fmt.Errorf("commit: %w", err))
		return
	}
	for _, r := range claimed {
		r.done <- classify(r.err)
	}
}
