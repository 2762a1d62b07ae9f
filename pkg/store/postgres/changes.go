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
// notify (shortened when the full one is too large for NOTIFY), both
// without the commit's number: the database adds it (publishQuery).
func encode(idx int32, ev store.Event) (full, notify string, err error) {
	r := ev.Record
	n := notification{
		Seq: idx, Kind: ev.Kind, Type: r.Type, Mesh: r.Mesh, Name: r.Name, Version: r.Version,
		Created: r.CreationTime.UnixNano(), Modified: r.ModificationTime.UnixNano(),
		Labels: r.Labels, Spec: r.Spec,
	}
	b, err := json.Marshal(n)
	if err != nil {
		return "", "", fmt.Errorf("encode event: %w", err)
	}
	full = string(b)
	if len(b) <= maxPayload-commitRoom {
		return full, full, nil
	}
	n.Labels, n.Spec, n.Omitted = nil, nil, true
	if b, err = json.Marshal(n); err != nil {
		return "", "", fmt.Errorf("encode event: %w", err)
	}
	if len(b) > maxPayload-commitRoom {
		return "", "", fmt.Errorf("encode event: key of %s too long for NOTIFY", r.Key)
	}
	return full, string(b), nil
}

// commitRoom is what the commit's number adds to a payload: the longest
// `"commit":N,`.
const commitRoom = len(`"commit":9223372036854775807,`)

// publishQuery numbers a commit (the next value of the one-row commit
// sequence), writes its events to the changes table and notifies them, in
// one statement: the payloads ($2 full, $4 to notify, JSON objects without
// the number) get `"commit":N,` put first. Run last in the transaction, it
// holds the sequence row's lock only from here to COMMIT; a concurrent
// commit waits for it, so numbers follow commit order and so do
// notifications (unnest yields the arrays in order, and a transaction's
// notifications are delivered in the order they were sent).
const publishQuery = `WITH s AS (UPDATE commit_seq SET seq = seq + 1 RETURNING seq),
	logged AS (INSERT INTO changes (seq, idx, committed_at, payload)
		SELECT s.seq, (t.i - 1)::int, $1, '{"commit":' || s.seq || ',' || substr(t.p, 2)
		FROM s, unnest($2::text[]) WITH ORDINALITY AS t(p, i))
	SELECT pg_notify($3, '{"commit":' || s.seq || ',' || substr(t.p, 2))
	FROM s, unnest($4::text[]) WITH ORDINALITY AS t(p, i) ORDER BY t.i`

// publishArgs are publishQuery's arguments for a commit's events.
func publishArgs(now time.Time, events []store.Event) ([]any, error) {
	full := make([]string, len(events))
	notes := make([]string, len(events))
	for i, ev := range events {
		var err error
		if full[i], notes[i], err = encode(int32(i), ev); err != nil {
			return nil, err
		}
	}
	return []any{now.UnixNano(), full, Channel, notes}, nil
}

// publish numbers, logs and notifies a commit's events inside its
// transaction (publishQuery).
func publish(ctx context.Context, tx pgx.Tx, now time.Time, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	args, err := publishArgs(now, events)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, publishQuery, args...); err != nil {
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
