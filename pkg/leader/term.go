package leader

import (
	"context"
	"time"

	"meshca/pkg/store"
)

// TermType and TermName name the store record whose version is the leader's
// term (TermKey).
const (
	TermType = "LeaderTerm"
	TermName = "meshca-cp"
)

// TermKey is the record every write of the leader requires at its term.
var TermKey = store.Key{Type: TermType, Name: TermName}

// Term is one period of leadership of this instance.
type Term struct {
	// Number is the term (the version of TermKey); 0 for Static's, which
	// is never fenced.
	Number int64
	// Since is when the term started (this instance's clock).
	Since  time.Time
	ctx    context.Context
	cancel context.CancelFunc
	timer  *time.Timer // ends the term unless renewed; guarded by Elector.mu
}

func newTerm(number int64, since time.Time) *Term {
	ctx, cancel := context.WithCancel(context.Background())
	return &Term{Number: number, Since: since, ctx: ctx, cancel: cancel}
}

// Done is closed when the term ends: lost, not renewed in time, or the
// elector stopped.
func (t *Term) Done() <-chan struct{} { return t.ctx.Done() }

// Context returns a context of parent that also ends with the term.
func (t *Term) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(t.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// Fence returns the ops to add to every commit made for this term: the
// commit then fails with store.ErrConflict once another term has started.
func (t *Term) Fence() []store.Op {
	if t == nil || t.Number == 0 {
		return nil
	}
	return []store.Op{{Kind: store.OpRequire, Record: store.Record{Key: TermKey, Version: t.Number}}}
}
