package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"

	"meshca/pkg/api"
	"meshca/pkg/kube/crd"
	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

// unchangedRetries bounds how often an op without a version is retried
// when another writer changed its object between the check and the write.
const unchangedRetries = 5

type action int

const (
	actNone action = iota // OpRequire, OpRequireNone
	actCreate
	actUpdate
	actDelete
)

// step is one op of a commit, checked.
type step struct {
	op     store.Op
	loc    location
	action action
	rec    store.Record  // what to write (create, update)
	prev   *store.Record // the record before the step (update, delete)
	// first is set on the first write of the key in the commit: its base
	// is the object as check read it, which another writer may have changed
	// since; later steps build on this commit's own writes.
	first bool
	// winner is, when the API server refused the write because another
	// writer's object is there (the informers' view was behind), that
	// object: the commit returns once the informers show it, so the
	// caller's next read sees what refused it, as on every store.
	winner *expectation
}

// catchUp waits until what Get and List read (the view the informers'
// handlers keep) shows the objects the informers' stores hold for the ops'
// keys. check reads the informers' stores, which their handlers follow a
// moment later: a commit refused on what check read must not be followed by
// a read that does not see what refused it.
func (s *Store) catchUp(ctx context.Context, ops []store.Op) {
	var wait []expectation
	for _, op := range ops {
		if op.Kind == store.OpRequireNone {
			continue
		}
		loc, err := s.where(op.Record)
		if err != nil {
			continue
		}
		obj, _, err := s.cached(ctx, op.Record.Key, loc)
		if err != nil || obj == nil {
			continue
		}
		if rv, err := parseVersion(obj.GetResourceVersion()); err == nil {
			wait = append(wait, expectation{uid: obj.GetUID(), rv: rv})
		}
	}
	if len(wait) == 0 {
		return
	}
	s.mu.Lock()
	s.inflight = &inflight{deleted: map[types.UID]bool{}, notify: make(chan struct{}, 1)}
	s.mu.Unlock()
	if err := s.waitSeen(ctx, wait); err != nil {
		s.logger.Debug("kubernetes store: a refused commit's objects not yet seen", "error", err)
	}
	s.mu.Lock()
	s.flushLocked(nil, nil) // publishes what arrived meanwhile, as others'
	s.mu.Unlock()
}

// noteWinner records in st the object of another writer that made the API
// server refuse st's write as existing or changed.
func (s *Store) noteWinner(ctx context.Context, st *step, err error) {
	if !errors.Is(err, store.ErrAlreadyExists) && !errors.Is(err, store.ErrConflict) {
		return
	}
	obj, _, lerr := s.live(ctx, st.op.Record.Key, st.loc)
	if lerr != nil || obj == nil {
		return
	}
	rv, perr := parseVersion(obj.GetResourceVersion())
	if perr != nil {
		return
	}
	st.winner = &expectation{uid: obj.GetUID(), rv: rv}
}

// written is one write applied, with the objects before and after it.
type written struct {
	step          *step
	before, after *unstructured.Unstructured
}

// Commit implements store.Store. Kubernetes has no transaction over
// several objects: see the package documentation for what is atomic.
func (s *Store) Commit(ctx context.Context, ops ...store.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := storeutil.ValidateOps(ops); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if err := s.errIfClosed(); err != nil {
		return err
	}
	steps, bases, err := s.check(ctx, ops)
	if err != nil {
		if errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrConflict) {
			s.catchUp(ctx, ops)
		}
		return fmt.Errorf("commit: %w", err)
	}
	writes := 0
	for _, st := range steps {
		if st.action != actNone {
			writes++
		}
	}
	if writes == 0 {
		return nil
	}

	s.mu.Lock()
	s.inflight = &inflight{deleted: map[types.UID]bool{}, notify: make(chan struct{}, 1)}
	s.mu.Unlock()

	var expect []expectation
	applied, err := s.apply(ctx, steps, bases, &expect)
	if err == nil {
		err = s.recheck(ctx, steps)
	}
	var events []store.Event
	if err != nil {
		if uerr := s.undo(ctx, applied, &expect); uerr != nil {
			s.logger.Error("kubernetes store: a failed commit could not be undone: some of its writes remain", "error", uerr)
			err = errors.Join(err, uerr)
		}
	} else {
		for _, w := range applied {
			events = append(events, s.event(w))
		}
	}
	// Wait even when ctx ended: what the informers deliver for this
	// commit's writes after it returned would be published as others'.
	// Another writer's object that refused a write is waited for too, but
	// published as theirs.
	wait := slices.Clone(expect)
	for _, st := range steps {
		if st.winner != nil {
			wait = append(wait, *st.winner)
		}
	}
	werr := s.waitSeen(context.WithoutCancel(ctx), wait)

	s.mu.Lock()
	s.flushLocked(events, expect)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("commit: applied, but %w", werr)
	}
	return nil
}

// staged is a key's state as the ops checked so far leave it.
type staged struct {
	rec     *store.Record
	written bool
}

// check reads the state of every key the ops name and checks each op
// against it as the earlier ops leave it: versions, existence,
// requirements. Nothing is written. It returns the objects read.
//
// What the API server cannot enforce at the write is read from the API
// server: a requirement with a version (the leader's fence) and a
// require-none. The rest is read from the informers' view: the API server
// refuses a write whose precondition that view got wrong, and the commit
// is then undone; a version a caller holds comes from that view, so it is
// never newer. (Reading each of a batch's keys from the API server would
// cost several requests per record, which the client's rate limit makes
// the bottleneck of a large mesh.)
func (s *Store) check(ctx context.Context, ops []store.Op) ([]*step, map[store.Key]*unstructured.Unstructured, error) {
	now := storeutil.Now()
	state := map[store.Key]*staged{}
	bases := map[store.Key]*unstructured.Unstructured{}
	var steps []*step
	for i, op := range ops {
		if op.Kind == store.OpRequireNone {
			if name, found, err := s.anyLive(ctx, op.Record.Type, op.Record.Mesh, state); err != nil {
				return nil, nil, fmt.Errorf("op %d: %w", i, err)
			} else if found {
				return nil, nil, storeutil.NotNone(op, name)
			}
			steps = append(steps, &step{op: op})
			continue
		}
		key := op.Record.Key
		loc, err := s.where(op.Record)
		if err != nil {
			return nil, nil, fmt.Errorf("op %d: %w", i, err)
		}
		st, ok := state[key]
		if !ok {
			read := s.cached
			if op.Kind == store.OpRequire && op.Record.Version != 0 {
				read = s.live
			}
			obj, rec, err := read(ctx, key, loc)
			if err != nil {
				return nil, nil, err
			}
			if rec == nil && obj != nil && (op.Kind == store.OpCreate || op.Kind == store.OpUpsert) {
				return nil, nil, fmt.Errorf("create %s: %s is taken by %s: %w", key, loc, describe(s.m, loc, obj), store.ErrAlreadyExists)
			}
			st = &staged{rec: rec}
			state[key] = st
			if rec != nil {
				bases[key] = obj
			}
		}
		if st.written && op.Record.Version != 0 && op.Kind != store.OpUpsert && op.Kind != store.OpCreate {
			return nil, nil, fmt.Errorf("op %d: %s was written by an earlier op of this commit, so its version is not known until the commit applies: give version 0", i, key)
		}
		next, _, err := storeutil.Apply(st.rec, op, now)
		if err != nil {
			return nil, nil, err
		}
		stp := &step{op: op, loc: loc, first: !st.written}
		switch {
		case op.Kind == store.OpRequire:
		case op.Kind == store.OpDelete:
			stp.action, stp.prev = actDelete, st.rec
		case st.rec == nil:
			stp.action, stp.rec = actCreate, *next
		default:
			stp.action, stp.rec, stp.prev = actUpdate, *next, st.rec
		}
		if stp.action != actNone {
			st.written = true
			st.rec = next
		}
		steps = append(steps, stp)
	}
	return steps, bases, nil
}

// where is where rec lives: where its object is, if the informers hold
// it; else where a create puts it.
func (s *Store) where(rec store.Record) (location, error) {
	s.mu.Lock()
	e, ok := s.index[rec.Key]
	s.mu.Unlock()
	if !ok {
		return s.m.locate(rec.Key, rec.Labels)
	}
	src := s.m.sources[e.ref.src]
	derived := src.secretType == SecretTypeState || (src.res != nil && src.res.Namespaced && e.rec.Name != e.ref.name+"."+e.ref.namespace)
	return location{src: src, namespace: e.ref.namespace, name: e.ref.name, derived: derived}, nil
}

// describe names what holds loc instead of the record asked for.
func describe(m *mapping, loc location, obj *unstructured.Unstructured) string {
	if t, ok := obj.Object["type"].(string); ok && loc.src.secretType != "" && t != loc.src.secretType {
		return "a Secret of type " + t
	}
	if rec, err := m.recordOf(loc.src, obj); err == nil {
		return rec.Key.String() + " (on Kubernetes, its name is unique in its namespace whatever its mesh)"
	}
	return "an object that is not a meshca record"
}

func (s *Store) resource(loc location) dynamic.ResourceInterface {
	r := s.dyn.Resource(loc.src.gvr)
	if loc.namespace != "" {
		return r.Namespace(loc.namespace)
	}
	return r
}

// live reads the object at loc: nil if there is none; rec nil if the
// object there is not key's record.
func (s *Store) live(ctx context.Context, key store.Key, loc location) (*unstructured.Unstructured, *store.Record, error) {
	obj, err := s.resource(loc).Get(ctx, loc.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, apiError("get", loc, err)
	}
	return s.asRecord(key, loc, obj)
}

// cached is live from the informers' view.
func (s *Store) cached(_ context.Context, key store.Key, loc location) (*unstructured.Unstructured, *store.Record, error) {
	k := loc.name
	if loc.namespace != "" {
		k = loc.namespace + "/" + loc.name
	}
	item, ok, err := s.informers[loc.src.idx].GetStore().GetByKey(k)
	if err != nil || !ok {
		return nil, nil, err
	}
	obj, ok := item.(*unstructured.Unstructured)
	if !ok {
		return nil, nil, nil
	}
	return s.asRecord(key, loc, obj)
}

func (s *Store) asRecord(key store.Key, loc location, obj *unstructured.Unstructured) (*unstructured.Unstructured, *store.Record, error) {
	if loc.src.secretType != "" {
		if t, _ := obj.Object["type"].(string); t != loc.src.secretType {
			return obj, nil, nil
		}
	}
	rec, err := s.m.recordOf(loc.src, obj)
	if err != nil || rec.Key != key {
		return obj, nil, nil
	}
	return obj, &rec, nil
}

// anyLive returns the name of a record of typ in mesh, as the API server
// holds them with the staged changes of the commit over them.
func (s *Store) anyLive(ctx context.Context, typ, mesh string, state map[store.Key]*staged) (string, bool, error) {
	for k, st := range state {
		if k.Type == typ && k.Mesh == mesh && st.rec != nil {
			return k.Name, true, nil
		}
	}
	var src *source
	opts := metav1.ListOptions{}
	switch s.m.classOf(typ) {
	case classCustom:
		src = s.m.custom[typ]
	case classKumaSecret:
		src = s.m.secrets[SecretTypeGlobal]
		if typ != api.TypeGlobalSecret {
			src = s.m.secrets[SecretTypeMesh]
			if len(validation.IsValidLabelValue(mesh)) == 0 {
				opts.LabelSelector = LabelMesh + "=" + mesh
			}
		}
	default:
		src = s.m.secrets[SecretTypeState]
		if len(validation.IsValidLabelValue(typ)) == 0 {
			opts.LabelSelector = LabelType + "=" + typ
		}
	}
	if src.secretType != "" {
		opts.FieldSelector = "type=" + src.secretType
	}
	loc := location{src: src, namespace: src.namespace}
	list, err := s.resource(loc).List(ctx, opts)
	if err != nil {
		return "", false, apiError("list", loc, err)
	}
	for i := range list.Items {
		rec, err := s.m.record(src, &list.Items[i])
		if err != nil || rec.Type != typ || rec.Mesh != mesh {
			continue
		}
		if st, ok := state[rec.Key]; ok && st.rec == nil {
			continue // deleted earlier in the commit
		}
		return rec.Name, true, nil
	}
	return "", false, nil
}

// parallelWrites bounds the writes of one commit sent at once.
const parallelWrites = 16

// apply writes the steps, each conditional on the resourceVersion its check
// read (or this commit's previous write of the key). When every write is
// to a different object (a batch of issued identities), they are sent
// concurrently, parallelWrites at a time: Kubernetes orders nothing across
// objects, and the commit's events are still published in op order. Writes
// to one object are sent in op order, one after the other. After a failure
// no further write is started. It returns the writes done, in op order,
// also when one failed, and the first error in op order.
func (s *Store) apply(ctx context.Context, steps []*step, bases map[store.Key]*unstructured.Unstructured, expect *[]expectation) ([]written, error) {
	var writes []*step
	seen := map[store.Key]bool{}
	distinct := true
	for _, st := range steps {
		if st.action == actNone {
			continue
		}
		k := st.op.Record.Key
		distinct = distinct && !seen[k]
		seen[k] = true
		writes = append(writes, st)
	}
	results := make([]*written, len(writes))
	errs := make([]error, len(writes))
	if !distinct || len(writes) == 1 {
		for i, st := range writes {
			w, err := s.applyOne(ctx, st, bases[st.op.Record.Key])
			if err != nil {
				errs[i] = err
				break
			}
			results[i] = &w
			bases[st.op.Record.Key] = w.after
		}
	} else {
		var failed atomic.Bool
		var wg sync.WaitGroup
		sem := make(chan struct{}, parallelWrites)
		for i, st := range writes {
			sem <- struct{}{}
			if failed.Load() {
				<-sem
				break
			}
			base := bases[st.op.Record.Key]
			wg.Go(func() {
				defer func() { <-sem }()
				w, err := s.applyOne(ctx, st, base)
				if err != nil {
					errs[i] = err
					failed.Store(true)
					return
				}
				results[i] = &w
			})
		}
		wg.Wait()
	}
	var done []written
	for _, w := range results {
		if w == nil {
			continue
		}
		done = append(done, *w)
		if w.after != nil {
			rv, _ := parseVersion(w.after.GetResourceVersion())
			*expect = append(*expect, expectation{uid: w.after.GetUID(), rv: rv})
		} else {
			*expect = append(*expect, expectation{uid: w.before.GetUID(), deleted: true})
		}
	}
	for _, err := range errs {
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// applyOne writes one step on top of base. An op without a version that
// meets another writer's change since the check reads the object again and
// is retried.
func (s *Store) applyOne(ctx context.Context, st *step, base *unstructured.Unstructured) (written, error) {
	key := st.op.Record.Key
	checked := st.op.Record.Version != 0 && st.op.Kind != store.OpUpsert
	for attempt := 0; ; attempt++ {
		after, err := s.write(ctx, st, base)
		if err == nil {
			return written{step: st, before: base, after: after}, nil
		}
		retry := st.first && !checked && attempt < unchangedRetries &&
			(errors.Is(err, store.ErrConflict) || (errors.Is(err, store.ErrNotFound) && st.op.Kind == store.OpUpsert) ||
				(errors.Is(err, store.ErrAlreadyExists) && st.op.Kind == store.OpUpsert))
		if !retry {
			s.noteWinner(ctx, st, err)
			return written{}, err
		}
		obj, rec, lerr := s.live(ctx, key, st.loc)
		if lerr != nil {
			return written{}, lerr
		}
		base, st.prev = obj, rec
		switch {
		case rec == nil && st.action == actDelete:
			return written{}, fmt.Errorf("delete %s: %w", key, store.ErrNotFound)
		case rec == nil && st.op.Kind == store.OpUpsert:
			st.action, base = actCreate, nil
		case rec == nil:
			return written{}, fmt.Errorf("update %s: %w", key, store.ErrNotFound)
		case st.action == actCreate:
			st.action = actUpdate
		}
	}
}

// write applies one step on top of base (the object as the check read
// it); it returns the object written (nil after a delete).
func (s *Store) write(ctx context.Context, st *step, base *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	r := s.resource(st.loc)
	now := s.opts.Now().UTC().Round(0)
	switch st.action {
	case actCreate:
		obj, err := s.m.object(st.loc, st.rec, nil, now)
		if err != nil {
			return nil, err
		}
		s.setOwner(obj, st.loc, st.rec.Mesh)
		res, err := r.Create(ctx, obj, metav1.CreateOptions{FieldManager: s.opts.FieldManager})
		return res, apiError("create", st.loc, err)
	case actUpdate:
		obj, err := s.m.object(st.loc, st.rec, base, now)
		if err != nil {
			return nil, err
		}
		obj.SetResourceVersion(base.GetResourceVersion())
		res, err := r.Update(ctx, obj, metav1.UpdateOptions{FieldManager: s.opts.FieldManager})
		return res, apiError("update", st.loc, err)
	default:
		uid, rv := base.GetUID(), base.GetResourceVersion()
		err := r.Delete(ctx, st.loc.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		return nil, apiError("delete", st.loc, err)
	}
}

// setOwner makes the Mesh the owner of a Secret created for it, as Kuma
// does, so that Kubernetes' garbage collector deletes the mesh's CA roots,
// signing keys and issued identities with it (kubectl delete mesh). A
// Mesh created in the same commit is not known yet: nothing is set then.
func (s *Store) setOwner(obj *unstructured.Unstructured, loc location, mesh string) {
	if loc.src.secretType == "" || mesh == "" {
		return
	}
	s.mu.Lock()
	e, ok := s.index[store.Key{Type: api.TypeMesh, Name: mesh}]
	s.mu.Unlock()
	if !ok {
		return
	}
	obj.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: crd.Group + "/" + crd.Version, Kind: api.TypeMesh, Name: mesh, UID: e.uid}})
}

// recheck reads again, after the writes, what the commit required, so that
// a requirement another writer broke while the commit was applied fails
// it (and its writes are undone): from the API server for a requirement
// with a version and a require-none, from the informers' view for one of
// existence. Requirements on keys the commit itself wrote, and
// require-nones that a later op answers, are not read again.
func (s *Store) recheck(ctx context.Context, steps []*step) error {
	for i, st := range steps {
		switch st.op.Kind {
		case store.OpRequire:
			key := st.op.Record.Key
			if writtenIn(steps, func(k store.Key) bool { return k == key }) {
				continue
			}
			read := s.cached
			if st.op.Record.Version != 0 {
				read = s.live
			}
			_, rec, err := read(ctx, key, st.loc)
			if err != nil {
				return err
			}
			if _, _, err := storeutil.Apply(rec, st.op, time.Time{}); err != nil {
				return fmt.Errorf("%w (changed while the commit was applied)", err)
			}
		case store.OpRequireNone:
			typ, mesh := st.op.Record.Type, st.op.Record.Mesh
			if writtenIn(steps[i+1:], func(k store.Key) bool { return k.Type == typ && k.Mesh == mesh }) {
				continue
			}
			state := map[store.Key]*staged{}
			for _, o := range steps {
				if o.action == actDelete && o.op.Record.Type == typ && o.op.Record.Mesh == mesh {
					state[o.op.Record.Key] = &staged{}
				}
			}
			name, found, err := s.anyLive(ctx, typ, mesh, state)
			if err != nil {
				return err
			}
			if found {
				return fmt.Errorf("%w (created while the commit was applied)", storeutil.NotNone(st.op, name))
			}
		}
	}
	return nil
}

func writtenIn(steps []*step, match func(store.Key) bool) bool {
	for _, st := range steps {
		if st.action != actNone && match(st.op.Record.Key) {
			return true
		}
	}
	return false
}

// undo reverts applied writes, last first, each conditional on the object
// being as this commit left it. A restored record has its content back but
// a newer version; a re-created one, a new uid and creation time.
func (s *Store) undo(ctx context.Context, applied []written, expect *[]expectation) error {
	// Undo even when ctx ended: the commit must not stay half applied.
	ctx = context.WithoutCancel(ctx)
	cur := map[objRef]*unstructured.Unstructured{}
	refOf := func(w written) objRef {
		return objRef{src: w.step.loc.src.idx, namespace: w.step.loc.namespace, name: w.step.loc.name}
	}
	for _, w := range applied {
		cur[refOf(w)] = w.after
	}
	var errs []error
	for i := len(applied) - 1; i >= 0; i-- {
		w := applied[i]
		ref := refOf(w)
		now := cur[ref]
		r := s.resource(w.step.loc)
		var res *unstructured.Unstructured
		var err error
		switch {
		case w.before == nil && now != nil: // created: delete it
			uid, rv := now.GetUID(), now.GetResourceVersion()
			err = r.Delete(ctx, w.step.loc.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
			if err == nil {
				*expect = append(*expect, expectation{uid: uid, deleted: true})
			}
		case w.before != nil && now != nil: // updated: put the content back
			var obj *unstructured.Unstructured
			if obj, err = s.m.object(w.step.loc, *w.step.prev, w.before, s.opts.Now().UTC()); err == nil {
				obj.SetResourceVersion(now.GetResourceVersion())
				obj.SetUID(now.GetUID())
				res, err = r.Update(ctx, obj, metav1.UpdateOptions{FieldManager: s.opts.FieldManager})
			}
		case w.before != nil: // deleted: create it again
			var obj *unstructured.Unstructured
			if obj, err = s.m.object(w.step.loc, *w.step.prev, w.before, s.opts.Now().UTC()); err == nil {
				for _, f := range []string{"resourceVersion", "uid", "creationTimestamp", "generation"} {
					unstructured.RemoveNestedField(obj.Object, "metadata", f)
				}
				res, err = r.Create(ctx, obj, metav1.CreateOptions{FieldManager: s.opts.FieldManager})
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("undo %s of %s: %w", verbOf(w.step.action), w.step.op.Record.Key, apiError("write", w.step.loc, err)))
			continue
		}
		cur[ref] = res
		if res != nil {
			rv, _ := parseVersion(res.GetResourceVersion())
			*expect = append(*expect, expectation{uid: res.GetUID(), rv: rv})
		}
	}
	return errors.Join(errs...)
}

func verbOf(a action) string {
	switch a {
	case actCreate:
		return "the creation"
	case actUpdate:
		return "the update"
	default:
		return "the deletion"
	}
}

// event is the event of one write of a successful commit.
func (s *Store) event(w written) store.Event {
	if w.after == nil {
		return store.Event{Kind: store.EventDeleted, Record: storeutil.Clone(*w.step.prev)}
	}
	rec, err := s.m.record(w.step.loc.src, w.after)
	if err != nil {
		rec = w.step.rec // cannot happen: the store wrote the object
	}
	kind := store.EventCreated
	if w.before != nil {
		kind = store.EventUpdated
	}
	return store.Event{Kind: kind, Record: rec}
}

// waitSeen waits until the informers have shown every expected write, so
// that reads after Commit see them.
func (s *Store) waitSeen(ctx context.Context, expect []expectation) error {
	timeout := time.NewTimer(s.opts.SyncTimeout)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		f := s.inflight
		pending := 0
		for _, e := range expect {
			if !s.seenLocked(f, e) {
				pending++
			}
		}
		s.mu.Unlock()
		if pending == 0 {
			return nil
		}
		select {
		case <-f.notify:
		case <-ctx.Done():
			return fmt.Errorf("%d writes not yet seen by the watch: %w", pending, ctx.Err())
		case <-s.closing:
			return fmt.Errorf("%d writes not yet seen by the watch: %w", pending, ErrClosed)
		case <-timeout.C:
			return fmt.Errorf("%d writes not seen by the watch within %s (is the informer failing? see the log)", pending, s.opts.SyncTimeout)
		}
	}
}
