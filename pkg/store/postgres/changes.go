package postgres

// The change log: every commit's events under a sequence number, so a
// listener can deliver what it missed.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"meshca/pkg/store"
)

// changeRetention is how long the changes table keeps an event. A listener
// reconnects within seconds (its backoff is capped at 1 s); the table must
// not grow with every certificate ever issued.
const changeRetention = 5 * time.Minute

// pruneInterval is how often each instance deletes expired changes.
const pruneInterval = time.Minute

// position orders events: the commit's sequence number, then the event's
// index in the commit. idx math.MaxInt32 stands for "the whole commit".
type position struct {
	seq int64
	idx int32
}

func (p position) after(q position) bool {
	return p.seq > q.seq || (p.seq == q.seq && p.idx > q.idx)
}

// follows reports whether p is the event right after q: the next index of
// the same commit, or the first of the next commit.
func (p position) follows(q position) bool {
	return (p.seq == q.seq && q.idx != maxIdx && p.idx == q.idx+1) || (p.seq == q.seq+1 && p.idx == 0)
}

const maxIdx = 1<<31 - 1

// notification is the NOTIFY payload, and (never shortened) the changes
// table's.
type notification struct {
	Commit   int64             `json:"commit,omitempty"` // the commit's sequence number
	Seq      int32             `json:"seq"`              // the event's index in its commit
	Kind     store.EventKind   `json:"kind"`
	Type     string            `json:"type"`
	Mesh     string            `json:"mesh"`
	Name     string            `json:"name"`
	Version  int64             `json:"version"`
	Created  int64             `json:"created"`
	Modified int64             `json:"modified"`
	Labels   map[string]string `json:"labels,omitempty"`
	Spec     []byte            `json:"spec,omitempty"`
	// Omitted is set when Spec and Labels did not fit in the payload: the
	// listener reads the event from the changes table.
	Omitted bool `json:"omitted,omitempty"`
	// Barrier, when set, marks a Watch start point; no other field is set.
	Barrier string `json:"barrier,omitempty"`
}

func (n notification) position() position { return position{seq: n.Commit, idx: n.Seq} }

// encode returns the full payload (for the changes table) and the one to
// notify (shortened when the full one is too large for NOTIFY).
func encode(commit int64, idx int32, ev store.Event) (full, notify string, err error) {
	r := ev.Record
	n := notification{
		Commit: commit, Seq: idx, Kind: ev.Kind, Type: r.Type, Mesh: r.Mesh, Name: r.Name, Version: r.Version,
		Created: r.CreationTime.UnixNano(), Modified: r.ModificationTime.UnixNano(),
		Labels: r.Labels, Spec: r.Spec,
	}
	b, err := json.Marshal(n)
	if err != nil {
		return "", "", fmt.Errorf("encode event: %w", err)
	}
	full = string(b)
	if len(b) <= maxPayload {
		return full, full, nil
	}
	n.Labels, n.Spec, n.Omitted = nil, nil, true
	if b, err = json.Marshal(n); err != nil {
		return "", "", fmt.Errorf("encode event: %w", err)
	}
	if len(b) > maxPayload {
		return "", "", fmt.Errorf("encode event: key of %s too long for NOTIFY", r.Key)
	}
	return full, string(b), nil
}

// publish numbers a commit's events, logs them and notifies them, inside the
// commit's transaction. The sequence row is updated last: its lock is held
// only from here to COMMIT, and a concurrent commit waits for it, so numbers
// follow commit order and so do notifications.
func publish(ctx context.Context, tx pgx.Tx, now time.Time, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	var commit int64
	if err := tx.QueryRow(ctx, `UPDATE commit_seq SET seq = seq + 1 RETURNING seq`).Scan(&commit); err != nil {
		return fmt.Errorf("number commit: %w", err)
	}
	full := make([]string, len(events))
	notes := make([]string, len(events))
	for i, ev := range events {
		var err error
		if full[i], notes[i], err = encode(commit, int32(i), ev); err != nil {
			return err
		}
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO changes (seq, idx, committed_at, payload)
		SELECT $1, (t.i - 1)::int, $2, t.p FROM unnest($3::text[]) WITH ORDINALITY AS t(p, i)`,
		commit, now.UnixNano(), full)
	// unnest yields the array in order, and notifications of a transaction
	// are delivered in the order they were sent.
	b.Queue(`SELECT pg_notify($1, t.p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) ORDER BY t.i`, Channel, notes)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("log and notify events: %w", err)
	}
	return nil
}

// prune deletes expired changes every pruneInterval until ctx ends.
func (s *Store) prune(ctx context.Context) {
	defer close(s.pruneDone)
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-changeRetention).UnixNano()
		if _, err := s.pool.Exec(ctx, `DELETE FROM changes WHERE committed_at < $1`, cutoff); err != nil && ctx.Err() == nil {
			s.logger.Warn("pruning the changes table failed", "err", err)
		}
	}
}
