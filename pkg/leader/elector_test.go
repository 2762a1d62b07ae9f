package leader

import (
	"context"
	"errors"
	"testing"
	"time"

	"meshca/internal/pgtest"
	"meshca/pkg/store"
	"meshca/pkg/store/postgres"
)

func dsn(t *testing.T) string {
	t.Helper()
	return pgtest.DSN(t, "meshca_test_leader")
}

// cluster is n electors on one database, each with its own store, as n
// meshca-cp processes would be. Short leases keep the test quick; nothing
// asserts how long anything took.
type cluster struct {
	st      []*postgres.Store
	shared  store.Store // the store of every elector, when they share one
	el      []*Elector
	cancels []context.CancelFunc
	done    []chan struct{}
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{}
	for i := range n {
		st, err := postgres.Open(t.Context(), dsn(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		if i == 0 {
			// Forget leases of earlier tests.
			if err := store.Delete(t.Context(), st, TermKey); err != nil && !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
		}
		el, err := New(t.Context(), dsn(t), st, Options{ID: string(rune('a' + i)), Address: "cp-" + string(rune('a'+i)),
			LeaseDuration: 600 * time.Millisecond, RenewInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(el.Close)
		if i == 0 {
			if _, err := el.b.(*pgLease).db.Exec(t.Context(), `DELETE FROM leader_lease; DELETE FROM control_planes`); err != nil {
				t.Fatal(err)
			}
		}
		c.st = append(c.st, st)
		c.el = append(c.el, el)
	}
	c.run(t)
	return c
}

// leader waits until exactly one of the electors not in skip leads and
// returns its index and term.
func (c *cluster) leader(t *testing.T, skip ...int) (int, *Term) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		idx, n := -1, 0
		var term *Term
		for i, el := range c.el {
			if contains(skip, i) {
				continue
			}
			if tm := el.Current(); tm != nil {
				idx, term = i, tm
				n++
			}
		}
		if n == 1 {
			return idx, term
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no single leader elected")
	return -1, nil
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// fencedWrite commits a record for a term, as the identity loop does.
func fencedWrite(ctx context.Context, st store.Store, term *Term, name string) error {
	return st.Commit(ctx, append(term.Fence(), store.Op{Kind: store.OpUpsert, Record: store.Record{Key: store.Key{Type: "T", Name: name}}})...)
}

// One leader at a time; when it stops, another takes over with a new
// term, and a write fenced by the old term is refused.
func TestFailover(t *testing.T) {
	c := newCluster(t, 3)
	first, term := c.leader(t)
	if err := fencedWrite(t.Context(), c.st[first], term, "by-first"); err != nil {
		t.Fatalf("leader's fenced write: %v", err)
	}
	c.cancels[first]()
	<-c.done[first]
	if term.Done() == nil {
		t.Fatal("no Done channel")
	}
	select {
	case <-term.Done():
	default:
		t.Fatal("stopped leader's term did not end")
	}
	second, term2 := c.leader(t, first)
	if term2.Number <= term.Number {
		t.Fatalf("new term %d, want more than %d", term2.Number, term.Number)
	}
	if err := fencedWrite(t.Context(), c.st[first], term, "late"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("old term's write = %v, want ErrConflict", err)
	}
	if err := fencedWrite(t.Context(), c.st[second], term2, "by-second"); err != nil {
		t.Fatalf("new leader's fenced write: %v", err)
	}
	ins, err := c.el[second].Instances(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	leaders := 0
	for _, in := range ins {
		if in.ID == c.el[first].ID() {
			t.Errorf("stopped instance %s still listed", in.ID)
		}
		if in.Leader {
			leaders++
			if in.ID != c.el[second].ID() || in.LeaderSince == nil || !in.Online {
				t.Errorf("leader listed as %+v, want %s online with leaderSince", in, c.el[second].ID())
			}
		}
	}
	if len(ins) != 2 || leaders != 1 {
		t.Errorf("instances = %+v, want 2 with one leader", ins)
	}
}

// A leader whose campaign is stuck (paused, or its database unreachable)
// ends its term on its own; another takes over; once back it finds the lease
// taken and stays a follower; its old term can commit nothing.
func TestStuckLeaderStepsDown(t *testing.T) {
	c := newCluster(t, 2)
	first, term := c.leader(t)
	paused := make(chan struct{})
	resume := make(chan struct{})
	pause := func() {
		select {
		case <-paused:
		default:
			close(paused)
			<-resume
		}
	}
	c.el[first].beforeStep.Store(&pause)
	<-paused
	select {
	case <-term.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("stuck leader did not end its term")
	}
	second, term2 := c.leader(t, first)
	if second == first || term2.Number <= term.Number {
		t.Fatalf("leader %d term %d after %d term %d", second, term2.Number, first, term.Number)
	}
	if err := fencedWrite(t.Context(), c.st[first], term, "stale"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stuck leader's write = %v, want ErrConflict", err)
	}
	close(resume)
	// Let it step a few times: it must not lead again while the other does.
	for range 5 {
		time.Sleep(100 * time.Millisecond)
		if c.el[first].Current() != nil && c.el[second].Current() != nil {
			t.Fatal("two leaders at once")
		}
	}
}

func TestOptionsRefused(t *testing.T) {
	_, err := New(t.Context(), "postgres://x@127.0.0.1:1/x", nil, Options{LeaseDuration: time.Second, RenewInterval: time.Second})
	if err == nil {
		t.Fatal("renew interval equal to the lease accepted")
	}
}

func TestStatic(t *testing.T) {
	e := Static(Options{ID: "solo"})
	tm := e.Current()
	if tm == nil || tm.Fence() != nil {
		t.Fatalf("static term = %+v, want leading, unfenced", tm)
	}
	got, err := e.Await(t.Context())
	if err != nil || got != tm {
		t.Fatalf("Await = %v, %v", got, err)
	}
	ins, _ := e.Instances(t.Context())
	if len(ins) != 1 || !ins[0].Leader || ins[0].ID != "solo" {
		t.Fatalf("instances = %+v", ins)
	}
}

// run starts every elector of the cluster until the test ends.
func (c *cluster) run(t *testing.T) {
	for _, el := range c.el {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = el.Run(ctx) }()
		c.cancels = append(c.cancels, cancel)
		c.done = append(c.done, done)
		t.Cleanup(func() { cancel(); <-done })
	}
}
