package storeutil

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"meshca/pkg/store"
)

// GroupQueue hands Commit calls to one writer goroutine that applies them
// in groups: one transaction, each call in its own savepoint (the sqlite
// and postgres stores). It owns the queue, the hand-over between a caller
// whose context ends and the writer that takes its call, and closing.
type GroupQueue struct {
	max       int
	closedErr error
	commit    func(group []*Request)

	mu       sync.Mutex
	queue    []*Request
	closed   bool // no call is queued once set
	enqueued int
	wake     chan struct{} // capacity 1: "queue is non-empty or closed"
	done     chan struct{} // closed when the writer has exited
}

// Request is one Commit call waiting for the writer.
type Request struct {
	Ctx context.Context
	Ops []store.Op
	// Err and Events are the writer's: the call's own outcome, and its
	// events if it succeeded.
	Err    error
	Events []store.Event

	// state moves once from queued to claimed (the writer will apply the
	// ops, or fail the call, and Finish it) or to abandoned (the caller's
	// ctx ended first: the ops are never applied and nothing is sent).
	state atomic.Int32
	done  chan error // capacity 1
}

const (
	reqQueued int32 = iota
	reqClaimed
	reqAbandoned
)

// Claim takes the call for the writer, unless its caller abandoned it.
func (r *Request) Claim() bool { return r.state.CompareAndSwap(reqQueued, reqClaimed) }

// Finish gives a claimed call its outcome.
func (r *Request) Finish(err error) { r.done <- err }

// NewGroupQueue starts the writer: commit applies a group of at most max
// calls (and Finishes each of those it Claims); after Close, calls fail
// with closedErr.
func NewGroupQueue(max int, closedErr error, commit func(group []*Request)) *GroupQueue {
	q := &GroupQueue{max: max, closedErr: closedErr, commit: commit, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return q
}

// Submit queues ops and waits for their outcome. If ctx ends while the call
// is still queued, it returns ctx.Err() and the ops are never applied; once
// the writer has taken them, it reports what happened.
func (q *GroupQueue) Submit(ctx context.Context, ops []store.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &Request{Ctx: ctx, Ops: ops, done: make(chan error, 1)}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return fmt.Errorf("commit: %w", q.closedErr)
	}
	q.queue = append(q.queue, r)
	q.enqueued++
	q.mu.Unlock()
	q.signal()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return ctx.Err()
		}
		return <-r.done // taken already: its outcome is coming
	}
}

// State tells how many calls were ever queued, how many wait now and
// whether Close has begun (tests use it to order calls without sleeping).
func (q *GroupQueue) State() (enqueued, waiting int, closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.enqueued, len(q.queue), q.closed
}

// Close fails the calls still queued and waits for the writer to exit.
func (q *GroupQueue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
	<-q.done
}

func (q *GroupQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run takes up to max queued calls at a time, without waiting for more to
// arrive (groups form from the calls that queue up while the previous one
// commits), until Close.
func (q *GroupQueue) run() {
	defer close(q.done)
	var group []*Request
	for {
		q.mu.Lock()
		if q.closed {
			pending := q.queue
			q.queue = nil
			q.mu.Unlock()
			for _, r := range pending {
				if r.Claim() {
					r.Finish(fmt.Errorf("commit: %w", q.closedErr))
				}
			}
			return
		}
		n := min(len(q.queue), q.max)
		group = append(group[:0], q.queue[:n]...)
		rest := copy(q.queue, q.queue[n:])
		clear(q.queue[rest:])
		q.queue = q.queue[:rest]
		q.mu.Unlock()
		if n == 0 {
			<-q.wake
			continue
		}
		q.commit(group)
		clear(group)
	}
}
