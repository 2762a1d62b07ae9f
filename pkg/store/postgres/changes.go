package postgres

// The change log: every commit's events under a sequence number, so a
// listener can deliver what it missed.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
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

// specField is how encode's payloads end when they carry a spec: the
// spec, base64 (json.Marshal of []byte), is their last field.
const specField = `,"spec":"`

// decodeNotification decodes a payload (a notification or a changes-table
// row) as json.Unmarshal would. Every instance decodes every event any
// instance commits (a follower, each certificate the leader issues), and
// most of a payload is its spec: scanning that as JSON three times
// (validation, the literal, its unquoting) was most of the listener's work.
// So when the payload ends with a spec of plain base64 characters, as
// encode writes it, the spec is base64-decoded directly and only the rest
// goes through encoding/json; anything else is decoded whole.
func decodeNotification(payload string) (notification, error) {
	var n notification
	if strings.HasSuffix(payload, `"}`) {
		// The spec runs back from the closing `"}` over base64 characters.
		end := len(payload) - 2
		i := end
		for i > 0 && base64Char[payload[i-1]] {
			i--
		}
		if head, ok := strings.CutSuffix(payload[:i], specField); ok && len(head) > 0 {
			// That `"` opens a string (inside one it would be escaped) that
			// runs up to the payload's last `}`: the field is the outer
			// object's. Should the rest not be valid JSON without it, the
			// whole is decoded below and says what is wrong.
			if err := json.Unmarshal([]byte(head+"}"), &n); err == nil {
				spec, err := base64.StdEncoding.DecodeString(payload[i:end])
				if err != nil {
					return notification{}, fmt.Errorf("decode event spec: %w", err)
				}
				n.Spec = spec
				return n, nil
			}
			n = notification{}
		}
	}
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return notification{}, err
	}
	return n, nil
}

// base64Char holds the characters of standard base64.
var base64Char = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") {
		t[c] = true
	}
	return t
}()
