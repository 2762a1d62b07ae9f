package postgres

// The listener: notifications of commits turned into their events, read
// from the changes table, for this process's watchers, in commit order.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"meshca/pkg/store"
)

// maxListenerBackoff bounds the wait between reconnect attempts. Until the
// listener is back this instance's watchers (its SDS pushes, a follower's
// copy of the identities) see nothing the others commit: once the database
// is back after a restart, a rotation must reach them well within a short
// certificate's remaining life, not one long backoff later. An attempt
// against a database that is down costs a refused connection.
const maxListenerBackoff = time.Second

// barrierPrefix starts a Watch barrier's notification; a commit's is its
// number alone.
const barrierPrefix = "barrier "

func (s *Store) connectListener(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("listener: connect: %w", err)
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{Channel}.Sanitize()); err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("listener: listen: %w", err)
	}
	s.listenerPID.Store(conn.PgConn().PID())
	return conn, nil
}

// listen delivers the events of every commit numbered after pos until ctx
// is cancelled. A notification says a commit is in the changes table; the
// listener reads the events of every commit up to it, in one query for all
// the notifications that arrived meanwhile. When the connection breaks it
// reconnects with backoff and first delivers every commit after the last
// one it delivered.
func (s *Store) listen(ctx context.Context, conn *pgx.Conn, pos int64) {
	defer close(s.listenDone)
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	backoff := 100 * time.Millisecond
	drop := func(err error) {
		s.logger.Warn("listener connection lost", "err", err)
		_ = conn.Close(context.Background())
		conn = nil
	}
	warnedForeign := false
	for {
		if conn == nil {
			if s.beforeReconnect != nil {
				s.beforeReconnect()
			}
			var err error
			if conn, err = s.connectListener(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.logger.Warn("listener reconnect failed", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return
				}
				backoff = min(2*backoff, maxListenerBackoff)
				continue
			}
			backoff = 100 * time.Millisecond
			s.m.reconnects.Inc()
			// Barriers sent while away were not heard: start their
			// watchers now, before the events they may have missed.
			s.activatePending()
			if pos, err = s.catchUp(ctx, conn, pos); err != nil {
				if ctx.Err() != nil {
					return
				}
				drop(err)
				continue
			}
		}
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			drop(err)
			continue
		}
		// The commits to read: up to the highest number heard, but only
		// up to a barrier before starting its watcher, so that it sees
		// exactly the commits notified after it.
		through := pos
		for _, n := range append([]*pgconn.Notification{n}, more(ctx, conn)...) {
			if token, ok := strings.CutPrefix(n.Payload, barrierPrefix); ok {
				if through > pos {
					if pos, _, err = s.deliver(ctx, conn, pos, through); err != nil {
						break
					}
				}
				s.activateBarrier(token)
				continue
			}
			seq, perr := strconv.ParseInt(n.Payload, 10, 64)
			if perr != nil {
				if !warnedForeign {
					warnedForeign = true
					s.logger.Warn("ignoring a notification on the store's channel that is not a commit number (is a meshca-cp of another version using this database?)", "channel", Channel)
				}
				continue
			}
			through = max(through, seq)
		}
		if err == nil && through > pos {
			pos, _, err = s.deliver(ctx, conn, pos, through)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			drop(err)
		}
	}
}

// coalesceWindow is how long the listener waits, after a notification,
// for more before it reads the changes table: every instance reads every
// commit, so with many instances committing the reads would otherwise grow
// as instances × commits; this bounds them to one per window per instance,
// for a delay far below anything a watcher (an SDS push) notices.
const coalesceWindow = 2 * time.Millisecond

// more returns the notifications that arrive within coalesceWindow.
func more(ctx context.Context, conn *pgx.Conn) []*pgconn.Notification {
	wctx, cancel := context.WithTimeout(ctx, coalesceWindow)
	defer cancel()
	var out []*pgconn.Notification
	for {
		// A timeout leaves the connection as it was; a broken one shows in
		// the read that follows.
		n, err := conn.WaitForNotification(wctx)
		if err != nil || n == nil {
			return out
		}
		out = append(out, n)
	}
}

// activateBarrier starts the watcher waiting for the barrier token, if it
// is this process's.
func (s *Store) activateBarrier(token string) {
	s.barrierMu.Lock()
	activate := s.barriers[token]
	delete(s.barriers, token)
	s.barrierMu.Unlock()
	if activate != nil {
		activate()
	}
}

// activatePending starts every watcher still waiting for its barrier.
func (s *Store) activatePending() {
	s.barrierMu.Lock()
	pending := s.barriers
	s.barriers = make(map[string]func())
	s.barrierMu.Unlock()
	for _, activate := range pending {
		activate()
	}
}

// catchUp delivers every commit after pos and returns the number of the
// last one delivered.
func (s *Store) catchUp(ctx context.Context, conn *pgx.Conn, pos int64) (int64, error) {
	s.barrierMu.Lock()
	s.catchingUp = true
	s.barrierMu.Unlock()
	defer func() {
		s.barrierMu.Lock()
		s.catchingUp = false
		s.barrierMu.Unlock()
	}()
	var head int64
	if err := conn.QueryRow(ctx, `SELECT seq FROM commit_seq`).Scan(&head); err != nil {
		return pos, fmt.Errorf("listener: read commit sequence: %w", err)
	}
	pos, n, err := s.deliver(ctx, conn, pos, head)
	if err != nil {
		return pos, err
	}
	s.m.caughtUp.Add(float64(n))
	s.m.lastCatchUp.Set(float64(n))
	s.logger.Info("listener caught up on the commits it missed", "events", n, "through", pos)
	return pos, nil
}

// deliver publishes the events of the commits numbered after pos up to
// through, commit by commit, and returns the number of the last commit
// delivered and how many events it published. A commit is published only
// once all its events were read: should the connection break in the middle
// of one, it is read again after the reconnect.
func (s *Store) deliver(ctx context.Context, conn *pgx.Conn, pos, through int64) (int64, int, error) {
	rows, err := conn.Query(ctx, changesQuery, pos, through)
	if err != nil {
		return pos, 0, fmt.Errorf("listener: read changes: %w", err)
	}
	defer rows.Close()
	var (
		events []store.Event
		cur    int64 // the commit events belong to; 0 before the first
		n      int
	)
	flush := func() {
		if cur == 0 {
			return
		}
		if len(events) > 0 {
			s.hub.Publish(events)
			n += len(events)
		}
		events, pos = nil, cur
	}
	for rows.Next() {
		seq, ev, err := scanChange(rows)
		if seq == 0 {
			return pos, n, fmt.Errorf("listener: read changes: %w", err)
		}
		if seq != cur {
			flush()
			s.lost(pos, seq)
			cur = seq
		}
		if err != nil {
			s.logger.Error("dropping undecodable change event", "commit", seq, "err", err)
			continue
		}
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		return pos, n, fmt.Errorf("listener: read changes: %w", err)
	}
	flush()
	if pos < through {
		s.lost(pos, through+1)
		pos = through
	}
	return pos, n, nil
}

// lost reports the commits after pos and before next that the changes
// table no longer holds (the listener was away longer than changeRetention).
func (s *Store) lost(pos, next int64) {
	missing := next - pos - 1
	if missing <= 0 {
		return
	}
	s.m.lost.Add(float64(missing))
	s.logger.Error("change events lost: the listener was away longer than the changes table keeps them",
		"commits", missing, "after", pos, "retention", changeRetention)
}
