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
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

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

func (s *Store) commit(ctx context.Context, ops ...store.Op) error {
	if err := storeutil.ValidateOps(ops); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if len(ops) == 0 {
		return nil
	}
	return s.q.Submit(ctx, ops)
}

// commitGroup applies the calls in one transaction, numbers and notifies
// the events of those that succeeded, commits, and hands every call its
// outcome: by the bulk path (bulk.go) when it can, else each call in its
// own savepoint.
func (s *Store) commitGroup(group []*storeutil.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	var claimed []*storeutil.Request
	for _, r := range group {
		if !r.Claim() {
			continue // its caller gave up while it was queued
		}
		if err := r.Ctx.Err(); err != nil {
			r.Finish(fmt.Errorf("commit: %w", err))
			continue
		}
		claimed = append(claimed, r)
	}
	if len(claimed) == 0 {
		return
	}
	fail := func(err error) {
		for _, r := range claimed {
			if r.Err == nil {
				r.Err = err
			}
			r.Finish(classify(r.Err))
		}
	}
	if bulkable(claimed) {
		err := s.commitBulk(ctx, claimed)
		var retry errBulkRetry
		if !errors.As(err, &retry) {
			if err != nil {
				fail(fmt.Errorf("commit: %w", err))
				return
			}
			for _, r := range claimed {
				r.Finish(classify(r.Err))
			}
			return
		}
		// Rolled back: call by call.
		s.m.bulkRetries.Inc()
		s.logger.Debug("group commit: bulk path refused by the database; committing call by call", "calls", len(claimed), "err", err)
		for _, r := range claimed {
			r.Err, r.Events = nil, nil
		}
	}
	// Call by call. Two groups inserting the same new keys in different
	// orders (this process's and another's, each in its calls' order) can
	// deadlock on the unique index; PostgreSQL then aborts one call of one
	// of them. Its group is done again from the start (its transaction,
	// whose earlier inserts the other was waiting for, rolled back first),
	// rather than failing a call that only lost a race; the last attempt
	// lets that call fail alone, as any other refusal.
	for attempt := 1; ; attempt++ {
		err := s.commitCalls(ctx, claimed, attempt < maxDeadlockAttempts)
		var dl errDeadlock
		if errors.As(err, &dl) {
			s.logger.Debug("group commit: deadlock with another transaction; doing the group again", "calls", len(claimed), "attempt", attempt)
			for _, r := range claimed {
				r.Err, r.Events = nil, nil
			}
			continue
		}
		if err != nil {
			fail(err)
			return
		}
		for _, r := range claimed {
			r.Finish(classify(r.Err))
		}
		return
	}
}

// maxDeadlockAttempts bounds how often a group the database chose as a
// deadlock's victim is done again.
const maxDeadlockAttempts = 3

// errDeadlock says a call of the group was chosen as a deadlock's victim
// and the group's transaction was rolled back: nothing was committed.
type errDeadlock struct{ err error }

func (e errDeadlock) Error() string { return "commit: " + e.err.Error() }
func (e errDeadlock) Unwrap() error { return e.err }

// commitCalls applies the calls in one transaction, each in its own
// savepoint (none when alone), numbers and notifies the events of those
// that succeeded and commits; it sets each call's Err. An error fails every
// call that has none. With abortOnDeadlock, a call that deadlocked rolls
// the whole transaction back and errDeadlock is returned.
func (s *Store) commitCalls(ctx context.Context, claimed []*storeutil.Request, abortOnDeadlock bool) error {
	conn, tx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	defer conn.Release()
	defer func() { _ = tx.Rollback(context.Background()) }()
	// One call waiting for a row another process holds (a paused instance
	// inside a transaction) must not hold up the whole group for long: it
	// fails alone after lockTimeout.
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+lockTimeout+`'`); err != nil {
		return fmt.Errorf("commit: %w", err)
	}

	now := storeutil.Now()
	alone := len(claimed) == 1 // no savepoint; a failure rolls the transaction back
	var events []store.Event
	for _, r := range claimed {
		if !alone {
			if _, err := tx.Exec(ctx, `SAVEPOINT call`); err != nil {
				return fmt.Errorf("commit: savepoint: %w", err)
			}
		}
		r.Events, r.Err = applyOps(ctx, tx, now, r.Ops)
		var pgErr *pgconn.PgError
		if abortOnDeadlock && errors.As(r.Err, &pgErr) && pgErr.Code == "40P01" {
			return errDeadlock{r.Err}
		}
		if alone {
			if r.Err != nil {
				return nil
			}
			events = r.Events
			break
		}
		end := `RELEASE SAVEPOINT call`
		if r.Err != nil {
			// Undo this call's writes; the group goes on without it.
			end = `ROLLBACK TO SAVEPOINT call; RELEASE SAVEPOINT call`
		}
		if _, err := tx.Exec(ctx, end); err != nil {
			return fmt.Errorf("commit: group aborted: %w", err)
		}
		if r.Err == nil {
			events = append(events, r.Events...)
		}
	}
	if err := publish(ctx, tx, now, events); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// begin starts a transaction on a pooled connection. A connection the
// server closed while it sat in the pool (a restart ends every session)
// fails its BEGIN, which changed nothing: another is tried, up to the
// pool's size, so a restart does not fail the first commits after it.
func (s *Store) begin(ctx context.Context) (*pgxpool.Conn, pgx.Tx, error) {
	for attempt := 0; ; attempt++ {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return nil, nil, err
		}
		tx, err := conn.Begin(ctx)
		if err == nil {
			return conn, tx, nil
		}
		dead := conn.Conn().IsClosed()
		conn.Release()
		if !dead || attempt >= poolSize {
			return nil, nil, fmt.Errorf("begin: %w", err)
		}
	}
}

// commitBulk commits the group by the bulk path; it sets each call's Err.
// An errBulkRetry means nothing was committed and the group may be done
// again; another error fails every call. A group refused because its
// connection was closed (a pooled one the server ended while it sat in the
// pool) is tried again on another, up to the pool's size.
func (s *Store) commitBulk(ctx context.Context, claimed []*storeutil.Request) error {
	for attempt := 0; ; attempt++ {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		_, err = applyBulk(ctx, conn, storeutil.Now(), claimed)
		dead := conn.Conn().IsClosed()
		if !dead && conn.Conn().PgConn().TxStatus() != 'I' {
			// Refused inside the transaction: end it before the connection
			// goes back to the pool (which would close one left in a
			// transaction).
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _ = conn.Exec(rctx, `ROLLBACK`)
			cancel()
		}
		conn.Release()
		var retry errBulkRetry
		if !dead || !errors.As(err, &retry) || attempt >= poolSize {
			return err
		}
	}
}
