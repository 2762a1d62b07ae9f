package kube

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

// DefaultNamespace is the system namespace when Options names none.
const DefaultNamespace = "meshca-system"

// DefaultFieldManager names this store's writes in managedFields.
const DefaultFieldManager = "meshca-cp"

// Options configure a Store.
type Options struct {
	// Namespace is the system namespace: Kuma's Secrets and meshca's own
	// state live there (DefaultNamespace if empty).
	Namespace string
	// FieldManager names this store's writes (DefaultFieldManager if empty).
	FieldManager string
	// SyncTimeout bounds the informers' first listing at Open, and the wait
	// of a Commit for the informers to show its writes (30 s if zero).
	SyncTimeout time.Duration
	Logger      *slog.Logger
	// Now is the clock of state records' times (time.Now if nil).
	Now func() time.Time
}

// Store is a store.Store on the Kubernetes API.
type Store struct {
	dyn    dynamic.Interface
	m      *mapping
	opts   Options
	logger *slog.Logger
	hub    *storeutil.Hub
	// informers, by source index; their stores hold the objects.
	informers []cache.SharedIndexInformer
	stop      context.CancelFunc
	closing   chan struct{} // closed by Close
	done      sync.WaitGroup

	// commitMu serialises this process's commits.
	commitMu sync.Mutex

	mu       sync.Mutex
	index    map[store.Key]*entry
	byRef    map[objRef]*entry
	objects  map[types.UID]int64 // resourceVersion of every object observed
	inflight *inflight
	closed   bool
}

var _ store.Store = (*Store)(nil)

// Open checks that the API server serves every resource the store uses and
// that it may read them, starts the informers and returns once they have
// listed everything.
func Open(ctx context.Context, cfg *rest.Config, opts Options) (*Store, error) {
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.FieldManager == "" {
		opts.FieldManager = DefaultFieldManager
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	s := &Store{
		dyn: dyn, m: newMapping(opts.Namespace), opts: opts, logger: opts.Logger, hub: storeutil.NewHub(), closing: make(chan struct{}),
		index: map[store.Key]*entry{}, byRef: map[objRef]*entry{}, objects: map[types.UID]int64{},
	}
	// Listing Secrets in a namespace that does not exist succeeds (empty):
	// say so now rather than at the first write. Without the right to read
	// namespaces (the installed Role has none), the writes will tell.
	nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	if _, err := dyn.Resource(nsGVR).Get(ctx, opts.Namespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("the system namespace %q does not exist: create it (kubectl create namespace %s) or name another", opts.Namespace, opts.Namespace)
	}
	for _, src := range s.m.sources {
		if err := s.preflight(ctx, src); err != nil {
			return nil, err
		}
	}
	runCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	var synced []cache.InformerSynced
	for _, src := range s.m.sources {
		var tweak dynamicinformer.TweakListOptionsFunc
		if src.secretType != "" {
			sel := "type=" + src.secretType
			tweak = func(o *metav1.ListOptions) { o.FieldSelector = sel }
		}
		inf := dynamicinformer.NewFilteredDynamicInformer(dyn, src.gvr, src.namespace, 0, cache.Indexers{}, tweak).Informer()
		if err := inf.SetTransform(s.m.slim(src)); err != nil {
			stop()
			return nil, err
		}
		reg, err := inf.AddEventHandler(s.handler(src))
		if err != nil {
			stop()
			return nil, err
		}
		synced = append(synced, reg.HasSynced)
		s.informers = append(s.informers, inf)
		s.done.Go(func() { inf.RunWithContext(runCtx) })
	}
	syncCtx, cancel := context.WithTimeout(ctx, opts.SyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), synced...) {
		s.Close()
		return nil, fmt.Errorf("kubernetes store: the informers did not list every resource within %s: %w", opts.SyncTimeout, cmp.Or(ctx.Err(), syncCtx.Err()))
	}
	return s, nil
}

// preflight lists one object of src, so that a resource the API server
// does not serve (CRDs not installed) or may not be read is reported at
// once, clearly, rather than retried by an informer for ever.
func (s *Store) preflight(ctx context.Context, src *source) error {
	opts := metav1.ListOptions{Limit: 1}
	if src.secretType != "" {
		opts.FieldSelector = "type=" + src.secretType
	}
	var err error
	if src.namespace != "" {
		_, err = s.dyn.Resource(src.gvr).Namespace(src.namespace).List(ctx, opts)
	} else {
		_, err = s.dyn.Resource(src.gvr).List(ctx, opts)
	}
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err) && src.res != nil:
		return fmt.Errorf("the API server has no resource %s: install meshca's CustomResourceDefinitions (meshctl install crds | kubectl apply -f -): %w", src.res.Name(), err)
	case apierrors.IsForbidden(err):
		return forbidden("list", location{src: src, namespace: src.namespace}, err)
	}
	return fmt.Errorf("list %s: %w", src, err)
}

// Namespace returns the system namespace.
func (s *Store) Namespace() string { return s.opts.Namespace }

// Get implements store.Store: from the informers' view, which holds every
// write this process committed.
func (s *Store) Get(ctx context.Context, key store.Key) (store.Record, error) {
	if err := ctx.Err(); err != nil {
		return store.Record{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.Record{}, ErrClosed
	}
	e, ok := s.index[key]
	if !ok {
		return store.Record{}, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return storeutil.Clone(e.rec), nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, typ, mesh string) ([]store.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	var out []store.Record
	for k, e := range s.index {
		if k.Type == typ && (mesh == "" || k.Mesh == mesh) {
			out = append(out, storeutil.Clone(e.rec))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b store.Record) int {
		return cmp.Or(cmp.Compare(a.Mesh, b.Mesh), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context, types ...string) <-chan store.Event {
	return s.hub.Watch(ctx, types...)
}

// Close implements store.Store: it stops the informers and closes every
// watch channel.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.hub.Close()
	s.mu.Unlock()
	if s.stop != nil {
		s.stop()
	}
	s.done.Wait()
	return nil
}

// errIfClosed is for Commit, which holds commitMu, not mu.
func (s *Store) errIfClosed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}
