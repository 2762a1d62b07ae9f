package leader

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"meshca/internal/kubetest"
	"meshca/pkg/store"
	"meshca/pkg/store/kube"
	"meshca/pkg/store/memory"
)

// kubeCluster is n electors campaigning through one API server's Lease in
// namespace ns, sharing one store for the term record (as replicas share
// the Kubernetes store).
type kubeCluster struct {
	cluster
	client kubernetes.Interface
	ns     string
	stores []store.Store // each elector's
}

// newKubeCluster starts n electors; stores, if given, opens each one's
// store (else they share one memory store).
func newKubeCluster(t *testing.T, client kubernetes.Interface, ns string, n int, lease, renew time.Duration, stores func(t *testing.T) store.Store) *kubeCluster {
	t.Helper()
	if _, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &kubeCluster{client: client, ns: ns}
	var shared store.Store = memory.New()
	c.shared = shared
	for i := range n {
		st := shared
		if stores != nil {
			st = stores(t)
		}
		c.stores = append(c.stores, st)
		el, err := NewKubernetes(client, ns, st, Options{ID: fmt.Sprintf("cp-%c", 'a'+i), Address: fmt.Sprintf("10.0.0.%d:5681", i+1),
			Version: "test", LeaseDuration: lease, RenewInterval: renew})
		if err != nil {
			t.Fatal(err)
		}
		c.st = append(c.st, nil)
		c.el = append(c.el, el)
	}
	c.run(t)
	return c
}

func TestKubernetesLease(t *testing.T) {
	srv := kubetest.Start(t)
	client, err := kubernetes.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}

	// One leader among three; when it stops it releases the Lease, another
	// takes over with a new term at once, and the old term can commit
	// nothing.
	t.Run("failover", func(t *testing.T) {
		c := newKubeCluster(t, client, "meshca-failover", 3, time.Second, 200*time.Millisecond, nil)
		first, term := c.leader(t)
		// Stays the only leader over several renewals.
		for range 10 {
			time.Sleep(100 * time.Millisecond)
			n := 0
			for _, el := range c.el {
				if el.Current() != nil {
					n++
				}
			}
			if n != 1 || c.el[first].Current() != term {
				t.Fatalf("%d leaders (first %d still at its term: %v)", n, first, c.el[first].Current() == term)
			}
		}
		if err := fencedWrite(t.Context(), c.shared, term, "by-first"); err != nil {
			t.Fatalf("leader's fenced write: %v", err)
		}
		l, err := client.CoordinationV1().Leases(c.ns).Get(t.Context(), leaseName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if holder(l) != c.el[first].ID() || l.Spec.LeaseDurationSeconds == nil || *l.Spec.LeaseDurationSeconds != 1 ||
			l.Annotations[AnnotationLeaseDuration] != "1s" {
			t.Fatalf("Lease = %+v %v, want held by %s for 1s", l.Spec, l.Annotations, c.el[first].ID())
		}

		c.cancels[first]()
		<-c.done[first]
		select {
		case <-term.Done():
		default:
			t.Fatal("stopped leader's term did not end")
		}
		second, term2 := c.leader(t, first)
		if term2.Number <= term.Number {
			t.Fatalf("new term %d, want more than %d", term2.Number, term.Number)
		}
		if err := fencedWrite(t.Context(), c.shared, term, "late"); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("old term's write = %v, want ErrConflict", err)
		}
		if err := fencedWrite(t.Context(), c.shared, term2, "by-second"); err != nil {
			t.Fatalf("new leader's fenced write: %v", err)
		}
		ins := waitInstances(t, c.el[second], func(ins []Instance) bool { return len(ins) == 2 })
		leaders := 0
		for _, in := range ins {
			if in.ID == c.el[first].ID() {
				t.Errorf("stopped instance %s still listed", in.ID)
			}
			if !in.Online || in.Version != "test" || !strings.HasSuffix(in.Address, ":5681") || in.StartedAt.IsZero() {
				t.Errorf("instance listed as %+v", in)
			}
			if in.Leader {
				leaders++
				if in.ID != c.el[second].ID() || in.LeaderSince == nil {
					t.Errorf("leader listed as %+v, want %s with leaderSince", in, c.el[second].ID())
				}
			}
		}
		if leaders != 1 {
			t.Errorf("instances = %+v, want one leader", ins)
		}
	})

	// A leader whose renewals stop (paused process, partition) ends its
	// term on its own before its lease can expire; the other takes over
	// within two lease periods; the old term's commits fail; once resumed
	// the old leader stays a follower.
	t.Run("stuck leader", func(t *testing.T) {
		const lease, renew = 2 * time.Second, 250 * time.Millisecond
		c := newKubeCluster(t, client, "meshca-stuck", 2, lease, renew, nil)
		first, term := c.leader(t)
		var doneAt atomic.Pointer[time.Time]
		go func() {
			<-term.Done()
			now := time.Now()
			doneAt.Store(&now)
		}()
		paused := make(chan time.Time, 1)
		resume := make(chan struct{})
		var once atomic.Bool
		pause := func() {
			if once.CompareAndSwap(false, true) {
				paused <- time.Now()
				<-resume
			}
		}
		c.el[first].beforeStep.Store(&pause)
		defer func() {
			if once.Load() {
				select {
				case <-resume:
				default:
					close(resume)
				}
			}
		}()
		pausedAt := <-paused
		second, term2 := c.leader(t, first)
		took := time.Since(pausedAt)
		if second == first || term2.Number <= term.Number {
			t.Fatalf("leader %d term %d after %d term %d", second, term2.Number, first, term.Number)
		}
		d := doneAt.Load()
		if d == nil || !d.Before(term2.Since) {
			t.Fatalf("old term ended at %v, new term started at %v: the old one must end first", d, term2.Since)
		}
		if took > 2*lease {
			t.Errorf("takeover %s after the leader stopped renewing, want within two lease periods (%s)", took, 2*lease)
		}
		t.Logf("old term ended %s after its renewals stopped; new leader %s after", d.Sub(pausedAt), took)
		if err := fencedWrite(t.Context(), c.shared, term, "stale"); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("stuck leader's write = %v, want ErrConflict", err)
		}
		close(resume)
		for range 8 {
			time.Sleep(renew)
			if c.el[first].Current() != nil {
				t.Fatal("resumed old leader leads again while the other holds the lease")
			}
		}
		if c.el[second].Current() != term2 {
			t.Fatal("new leader lost its term")
		}
	})
}

// The fence on the Kubernetes store itself (pkg/store/kube), each
// replica with its own store as in meshca-cp: the term record is a Secret
// in the system namespace; once a new term started, a commit fenced by the
// old one fails, through the old leader's own store.
func TestKubernetesLeaseFencesKubernetesStore(t *testing.T) {
	srv := kubetest.Start(t)
	client, err := kubernetes.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	srv.Prepare(t)
	const ns = "meshca-system"
	// newKubeCluster creates the namespace before it opens the stores.
	c := newKubeCluster(t, client, ns, 2, time.Second, 200*time.Millisecond, func(t *testing.T) store.Store {
		s, err := kube.Open(t.Context(), srv.Config, kube.Options{Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
	first, term := c.leader(t)
	if err := fencedWrite(t.Context(), c.stores[first], term, "by-first"); err != nil {
		t.Fatalf("leader's fenced write: %v", err)
	}
	paused := make(chan struct{})
	resume := make(chan struct{})
	var once atomic.Bool
	pause := func() {
		if once.CompareAndSwap(false, true) {
			close(paused)
			<-resume
		}
	}
	c.el[first].beforeStep.Store(&pause)
	defer close(resume)
	<-paused
	second, term2 := c.leader(t, first)
	if term2.Number <= term.Number {
		t.Fatalf("new term %d, want more than %d", term2.Number, term.Number)
	}
	if err := fencedWrite(t.Context(), c.stores[first], term, "stale"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("old term's write through its own store = %v, want ErrConflict", err)
	}
	if _, err := c.stores[second].Get(t.Context(), store.Key{Type: "T", Name: "stale"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused write is stored: %v", err)
	}
	if err := fencedWrite(t.Context(), c.stores[second], term2, "by-second"); err != nil {
		t.Fatalf("new leader's fenced write: %v", err)
	}
	// The term record is where kubectl users find meshca's state.
	secrets, err := client.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "meshca.io/type=" + TermType})
	if err != nil || len(secrets.Items) != 1 {
		t.Fatalf("term record Secrets: %v (%v)", secrets, err)
	}
}

func waitInstances(t *testing.T, el *Elector, ok func([]Instance) bool) []Instance {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ins, err := el.Instances(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ok(ins) || time.Now().After(deadline) {
			return ins
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestInstanceLeaseName(t *testing.T) {
	for id, want := range map[string]string{
		"meshca-cp-7d9f-abc123": "meshca-cp-meshca-cp-7d9f-abc123",
		"Host_1":                "meshca-cp-host-1-",
	} {
		got := instanceLeaseName(id)
		if !strings.HasPrefix(got, want) {
			t.Errorf("instanceLeaseName(%q) = %q, want prefix %q", id, got, want)
		}
	}
	if instanceLeaseName("Host_1") == instanceLeaseName("host-1") {
		t.Error("two ids share a Lease name")
	}
}
