package postgres

// The listener: notifications (and, after a reconnect, the changes table)
// turned into events for this process's watchers, in commit order.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"meshca/pkg/store"
)

// maxListenerBackoff bounds the wait between reconnect attempts. Until the
// listener is back this instance's watchers (its SDS pushes, a follower's
// copy of the identities) see nothing the others commit: once the database
// is back after a restart, a rotation must reach them well within a short
// certificate's remaining life, not one long backoff later. An attempt
// against a database that is down costs a refused connection.
const maxListenerBackoff = time.Second

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

// listen turns notifications into events until ctx is cancelled, from the
// event after pos on. When the connection breaks it reconnects with backoff
// and first delivers, from the changes table, every event committed after
// the last one it delivered.
func (s *Store) listen(ctx context.Context, conn *pgx.Conn, pos position) {
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
		note, err := decodeNotification(n.Payload)
		if err != nil {
			s.logger.Error("dropping undecodable change event", "err", err)
			continue
		}
		if note.Barrier != "" {
			s.barrierMu.Lock()
			activate := s.barriers[note.Barrier]
			delete(s.barriers, note.Barrier)
			s.barrierMu.Unlock()
			if activate != nil { // else another process's barrier
				activate()
			}
			continue
		}
		p := note.position()
		if !p.after(pos) {
			continue // delivered from the changes table already
		}
		if !p.follows(pos) {
			// Notifications on one connection arrive in full and in order;
			// should one ever be missing, the table has it.
			s.logger.Warn("change notifications skipped a position; reading the changes table", "from", pos.seq, "to", p.seq)
			if pos, err = s.catchUp(ctx, conn, pos); err != nil {
				if ctx.Err() != nil {
					return
				}
				drop(err)
			}
			continue
		}
		ev, err := s.event(ctx, conn, note)
		if err != nil {
			s.logger.Error("dropping undecodable change event", "err", err)
		} else {
			s.hub.Publish([]store.Event{ev})
		}
		pos = p
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

// catchUp delivers every event after pos from the changes table and returns
// the position of the last one delivered.
func (s *Store) catchUp(ctx context.Context, conn *pgx.Conn, pos position) (position, error) {
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
	rows, err := conn.Query(ctx, `SELECT seq, idx, payload FROM changes
		WHERE (seq, idx) > ($1, $2) AND seq <= $3 ORDER BY seq, idx`, pos.seq, pos.idx, head)
	if err != nil {
		return pos, fmt.Errorf("listener: read changes: %w", err)
	}
	defer rows.Close()
	var n int
	first := true
	for rows.Next() {
		var p position
		var payload string
		if err := rows.Scan(&p.seq, &p.idx, &payload); err != nil {
			return pos, fmt.Errorf("listener: read changes: %w", err)
		}
		if first && !p.follows(pos) {
			s.lost(pos, p.seq)
		}
		first = false
		if note, err := decodeNotification(payload); err != nil {
			s.logger.Error("dropping undecodable change event", "err", err)
		} else if ev, err := s.event(ctx, conn, note); err != nil {
			s.logger.Error("dropping undecodable change event", "err", err)
		} else {
			s.hub.Publish([]store.Event{ev})
		}
		pos = p
		n++
	}
	if err := rows.Err(); err != nil {
		return pos, fmt.Errorf("listener: read changes: %w", err)
	}
	if first && head > pos.seq {
		s.lost(pos, head+1)
		pos = position{seq: head, idx: maxIdx}
	}
	s.m.caughtUp.Add(float64(n))
	s.m.lastCatchUp.Set(float64(n))
	s.logger.Info("listener caught up on the commits it missed", "events", n, "through", pos.seq)
	return pos, nil
}

// lost reports commits after pos and before next that the changes table no
// longer holds (the listener was away longer than changeRetention).
func (s *Store) lost(pos position, next int64) {
	missing := next - pos.seq - 1
	if pos.idx != maxIdx {
		missing++ // the rest of pos's own commit, at least
	}
	if missing <= 0 {
		return
	}
	s.m.lost.Add(float64(missing))
	s.logger.Error("change events lost: the listener was away longer than the changes table keeps them",
		"commits", missing, "after", pos.seq, "retention", changeRetention)
}

// event turns a notification into an event; a shortened one is read in full
// from the changes table.
func (s *Store) event(ctx context.Context, conn *pgx.Conn, n notification) (store.Event, error) {
	if n.Kind < store.EventCreated || n.Kind > store.EventDeleted {
		return store.Event{}, fmt.Errorf("unknown event kind %d", n.Kind)
	}
	if n.Omitted {
		var payload string
		err := conn.QueryRow(ctx, `SELECT payload FROM changes WHERE seq = $1 AND idx = $2`, n.Commit, n.Seq).Scan(&payload)
		var full notification
		if err == nil {
			full, err = decodeNotification(payload)
		}
		switch {
		case err == nil:
			n = full
		case errors.Is(err, pgx.ErrNoRows):
			s.logger.Warn("large change event no longer in the changes table; delivering without spec",
				"type", n.Type, "mesh", n.Mesh, "name", n.Name, "version", n.Version)
		default:
			s.logger.Warn("reading a large change event failed; delivering without spec",
				"type", n.Type, "mesh", n.Mesh, "name", n.Name, "err", err)
		}
	}
	r := store.Record{
		Key:     store.Key{Type: n.Type, Mesh: n.Mesh, Name: n.Name},
		Version: n.Version, Spec: n.Spec, Labels: n.Labels,
		CreationTime:     time.Unix(0, n.Created).UTC(),
		ModificationTime: time.Unix(0, n.Modified).UTC(),
	}
	// The spec and labels were decoded for this event alone: no copy (the
	// hub gives each watcher its own). Empty ones are nil, as every store
	// delivers them.
	if len(r.Spec) == 0 {
		r.Spec = nil
	}
	if len(r.Labels) == 0 {
		r.Labels = nil
	}
	return store.Event{Kind: n.Kind, Record: r}, nil
}
