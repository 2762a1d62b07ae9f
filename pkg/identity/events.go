package identity

// Store events: how Mesh and Dataplane changes reach the loop.

import (
	"context"
	"errors"

	"meshca/pkg/api"
	"meshca/pkg/resources"
	"meshca/pkg/store"
)

// handle reacts to one store change.
func (m *Manager) handle(ctx context.Context, ev store.Event) {
	switch ev.Record.Type {
	case api.TypeMesh:
		if ev.Kind == store.EventDeleted {
			m.mu.Lock()
			delete(m.meshes, ev.Record.Name)
			m.mu.Unlock()
			return
		}
		res, err := resources.FromRecord(ev.Record)
		if err != nil {
			return
		}
		m.mu.Lock()
		m.setMeshLocked(ctx, res.(*api.Mesh), ev.Record.Version)
		m.mu.Unlock()
		// Peers learn a new CA's root before anyone holds its certificates.
		m.refreshBundle(ctx, ev.Record.Name)
		m.mu.Lock()
		defer m.mu.Unlock()
		for k, st := range m.dps {
			if k.mesh == ev.Record.Name {
				m.considerLocked(k, st)
			}
		}
	case api.TypeDataplane:
		k := dpKey{ev.Record.Mesh, ev.Record.Name}
		m.mu.Lock()
		defer m.mu.Unlock()
		if ev.Kind == store.EventDeleted {
			if st := m.dps[k]; st != nil {
				if ms := m.meshes[k.mesh]; ms != nil && st.cur.issued() {
					ms.inUse[st.cur.rec.Backend]--
				}
				if len(st.subs) > 0 {
					// Keep the subscribers: the data plane may come back.
					st.dp, st.cur, st.scheduled = nil, nil, false
				} else {
					delete(m.dps, k)
				}
				notify(st)
				// The leader deletes the identity (a term's start deletes
				// those left while nobody led).
				ops, err := m.fenced([]store.Op{{Kind: store.OpDelete, Record: store.Record{Key: store.Key{Type: TypeDataplaneIdentity, Mesh: k.mesh, Name: k.name}}}})
				if err != nil {
					return
				}
				go func() {
					if err := m.store.Commit(ctx, ops...); err != nil && !errors.Is(err, store.ErrNotFound) {
						m.logger.Warn("could not delete identity of a deleted dataplane", "mesh", k.mesh, "dataplane", k.name, "error", err)
					}
				}()
			}
			return
		}
		res, err := resources.FromRecord(ev.Record)
		if err != nil {
			return
		}
		st := m.dps[k]
		if st == nil {
			st = &dpState{}
			m.dps[k] = st
		}
		st.dp = res.(*api.Dataplane)
		m.considerLocked(k, st)
	case TypeDataplaneIdentity:
		m.follow(ctx, ev)
	case api.TypeSecret:
		// A CA's material may live in a Secret (provided CA, builtin root):
		// recompute the mesh's bundle so a change reaches every data plane.
		m.mu.Lock()
		ms := m.meshes[ev.Record.Mesh]
		if ms != nil {
			ms.bundles = map[string][]byte{}
			ms.bundlesEpoch++
		}
		m.mu.Unlock()
		if ms != nil {
			m.refreshBundle(ctx, ev.Record.Mesh)
		}
	}
}

func (m *Manager) setMeshLocked(ctx context.Context, mesh *api.Mesh, version int64) {
	ms := m.meshes[mesh.Name]
	if ms == nil {
		ms = &meshState{inUse: map[string]int{}, bundles: map[string][]byte{}}
		m.meshes[mesh.Name] = ms
	}
	ms.mesh, ms.version = mesh, version
	ms.bundles = map[string][]byte{}
	ms.bundlesEpoch++
	b, _, ok := mesh.EnabledMTLSBackend()
	ms.enabled, ms.mtls, ms.backend = b, ok, nil
	if ok {
		be, err := m.cas.Get(b.Type)
		if err != nil {
			ms.lastErr = err.Error()
			return
		}
		ms.backend = be
	}
}
