package kube

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"meshca/pkg/store"
	"meshca/pkg/store/internal/storeutil"
)

// The informers' handlers keep the index (what Get and List read) and
// produce the events. While a Commit of this process is under way, the
// events they produce are held back: when the commit ends, its own events
// are published in the order of its ops, in place of those the informers
// delivered for its writes (which may come in another order, from
// several informers), and the others before or after them.

// objRef names one observed object.
type objRef struct {
	src       int
	namespace string
	name      string
}

// entry is one record in the index, with the object it came from.
type entry struct {
	rec store.Record
	ref objRef
	uid types.UID
}

// held is one informer delivery held back during a commit.
type held struct {
	uid     types.UID
	rv      int64
	deleted bool
	events  []store.Event
}

// inflight is the state of the commit under way.
type inflight struct {
	held    []held
	deleted map[types.UID]bool // objects seen deleted during the commit
	notify  chan struct{}      // capacity 1: "something was observed"
}

func (s *Store) handler(src *source) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.observe(src, obj, false) },
		UpdateFunc: func(_, obj any) { s.observe(src, obj, false) },
		DeleteFunc: func(obj any) { s.observe(src, obj, true) },
	}
}

// observe applies one informer delivery to the index.
func (s *Store) observe(src *source, raw any, deleted bool) {
	if t, ok := raw.(cache.DeletedFinalStateUnknown); ok {
		raw, deleted = t.Obj, true
	}
	obj, ok := raw.(*unstructured.Unstructured)
	if !ok {
		return
	}
	ref := objRef{src: src.idx, namespace: obj.GetNamespace(), name: obj.GetName()}
	uid := obj.GetUID()
	rv, _ := parseVersion(obj.GetResourceVersion())

	s.mu.Lock()
	defer s.mu.Unlock()
	var events []store.Event
	old, had := s.byRef[ref]
	if deleted {
		delete(s.objects, uid)
		if had {
			events = append(events, store.Event{Kind: store.EventDeleted, Record: storeutil.Clone(old.rec)})
			s.remove(old)
		}
	} else {
		if had && old.uid == uid && old.rec.Version == rv {
			return // a relist's unchanged object
		}
		s.objects[uid] = rv
		rec, err := s.m.recordOf(src, obj)
		if err == nil {
			if other, ok := s.index[rec.Key]; ok && other.ref != ref {
				// Two objects claim one key (a derived name and a
				// <name>.<namespace> one): the newer wins.
				err = errDuplicateKey
				if other.rec.Version < rec.Version {
					err = nil
					events = append(events, store.Event{Kind: store.EventDeleted, Record: storeutil.Clone(other.rec)})
					s.remove(other)
				}
			}
		}
		switch {
		case err != nil:
			s.logger.Warn("ignoring an object that is not a meshca record", "object", src.String()+" "+ref.namespace+"/"+ref.name, "error", err)
			if had {
				events = append(events, store.Event{Kind: store.EventDeleted, Record: storeutil.Clone(old.rec)})
				s.remove(old)
			}
		case had && old.rec.Key != rec.Key:
			// The key changed (a Dataplane's mesh was edited): the old
			// record is gone, a new one exists.
			events = append(events, store.Event{Kind: store.EventDeleted, Record: storeutil.Clone(old.rec)},
				store.Event{Kind: store.EventCreated, Record: storeutil.Clone(rec)})
			s.remove(old)
			s.put(&entry{rec: rec, ref: ref, uid: uid})
		case had:
			events = append(events, store.Event{Kind: store.EventUpdated, Record: storeutil.Clone(rec)})
			s.put(&entry{rec: rec, ref: ref, uid: uid})
		default:
			events = append(events, store.Event{Kind: store.EventCreated, Record: storeutil.Clone(rec)})
			s.put(&entry{rec: rec, ref: ref, uid: uid})
		}
	}
	if f := s.inflight; f != nil {
		if deleted {
			f.deleted[uid] = true
		}
		f.held = append(f.held, held{uid: uid, rv: rv, deleted: deleted, events: events})
		select {
		case f.notify <- struct{}{}:
		default:
		}
		return
	}
	s.hub.Publish(events)
}

func (s *Store) put(e *entry) {
	s.index[e.rec.Key] = e
	s.byRef[e.ref] = e
}

func (s *Store) remove(e *entry) {
	delete(s.index, e.rec.Key)
	if s.byRef[e.ref] == e {
		delete(s.byRef, e.ref)
	}
}

// expectation is one write of a commit the informers must show before the
// commit returns: the object uid at resourceVersion rv or later, or its
// deletion.
type expectation struct {
	uid     types.UID
	rv      int64
	deleted bool
}

// seenLocked reports whether the informers have shown e.
func (s *Store) seenLocked(f *inflight, e expectation) bool {
	if f.deleted[e.uid] {
		return true
	}
	if e.deleted {
		return false
	}
	rv, ok := s.objects[e.uid]
	return ok && rv >= e.rv
}

// flushLocked ends the commit under way: it publishes the deliveries held
// back, with the commit's own events (nil if it failed) in place of its
// writes' deliveries.
func (s *Store) flushLocked(own []store.Event, writes []expectation) {
	f := s.inflight
	s.inflight = nil
	isOwn := func(h held) bool {
		for _, w := range writes {
			if w.uid == h.uid && (h.deleted == w.deleted) && (w.deleted || w.rv == h.rv) {
				return true
			}
		}
		return false
	}
	pos := len(f.held)
	for i, h := range f.held {
		if isOwn(h) {
			pos = i
			break
		}
	}
	var out []store.Event
	for _, h := range f.held[:pos] {
		out = append(out, h.events...)
	}
	out = append(out, own...)
	// What comes after the commit's first write and is older than one of
	// its events for the same key (a concurrent write it overwrote) is not
	// published after it: the key's last state is the commit's.
	latest := make(map[store.Key]int64, len(own))
	for _, ev := range own {
		latest[ev.Record.Key] = ev.Record.Version
	}
	for _, h := range f.held[pos:] {
		if isOwn(h) {
			continue
		}
		for _, ev := range h.events {
			if v, ok := latest[ev.Record.Key]; ok && h.rv <= v {
				continue
			}
			out = append(out, ev)
		}
	}
	s.hub.Publish(out)
}
