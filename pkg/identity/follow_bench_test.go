package identity

import (
	"context"
	"fmt"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/ca/catest"
	"meshca/pkg/datasource"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

// followFixture is a leader's issued records and a follower that holds the
// same data planes, for driving the follower's side of HA directly.
type followFixture struct {
	follower *Manager
	// specs[i] are two records issued for dp-i, one after the other.
	specs   [][2][]byte
	version int64 // of the last event
}

func newFollowFixture(tb testing.TB, n int) *followFixture {
	tb.Helper()
	ctx := context.Background()
	st := memory.New()
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now}, map[string]ca.Constructor{api.BackendBuiltin: builtin.New})
	if err != nil {
		tb.Fatal(err)
	}
	be, _ := reg.Get(api.BackendBuiltin)
	backend := api.MTLSBackend{Name: "ca-1", Type: api.BackendBuiltin}
	if err := catest.Provision(ctx, st, be, "default", backend); err != nil {
		tb.Fatal(err)
	}
	mesh := &api.Mesh{Meta: api.Meta{Type: api.TypeMesh, Name: "default"}}
	mesh.MTLS = &api.MTLS{EnabledBackend: "ca-1", Backends: []api.MTLSBackend{backend}}
	leader := New(st, reg, Options{})
	follower := New(st, reg, Options{})
	// Following, not leading: as on an instance that lost the election.
	follower.static = false
	follower.term.Store(nil)
	f := &followFixture{follower: follower}
	for _, m := range []*Manager{leader, follower} {
		m.mu.Lock()
		m.setMeshLocked(ctx, mesh, 1)
		m.mu.Unlock()
	}
	follower.refreshBundle(ctx, "default")
	for i := range n {
		dp := &api.Dataplane{Meta: api.Meta{Type: api.TypeDataplane, Mesh: "default", Name: fmt.Sprintf("dp-%05d", i)}}
		dp.Networking.Address = "127.0.0.1"
		dp.Networking.Inbound = []api.Inbound{{Port: 8080, Tags: map[string]string{api.ServiceTag: "backend"}}}
		spec, err := api.MarshalSpec(dp)
		if err != nil {
			tb.Fatal(err)
		}
		if err := store.Create(ctx, st, store.Record{Key: store.Key{Type: api.TypeDataplane, Mesh: "default", Name: dp.Name}, Spec: spec}); err != nil {
			tb.Fatal(err)
		}
		var pair [2][]byte
		for j := range pair {
			if _, err := leader.obtain(ctx, dp, backend, be, api.DefaultSVIDFormat, record{}); err != nil {
				tb.Fatal(err)
			}
			r, err := st.Get(ctx, store.Key{Type: TypeDataplaneIdentity, Mesh: "default", Name: dp.Name})
			if err != nil {
				tb.Fatal(err)
			}
			pair[j] = r.Spec
		}
		f.specs = append(f.specs, pair)
		follower.mu.Lock()
		follower.dps[dpKey{"default", dp.Name}] = &dpState{dp: dp}
		follower.mu.Unlock()
	}
	return f
}

// event is the store event of the leader's next write to dp-i, with
// record j%2 of those issued for it: writes with alternating j are
// rotations.
func (f *followFixture) event(i, j int) store.Event {
	f.version++
	return store.Event{Kind: store.EventUpdated, Record: store.Record{
		Key:     store.Key{Type: TypeDataplaneIdentity, Mesh: "default", Name: fmt.Sprintf("dp-%05d", i)},
		Version: f.version, Spec: f.specs[i][j%2],
	}}
}

// BenchmarkFollowIdentity is what a follower spends on one identity the
// leader wrote, from the store event on: decoding the record, taking its
// certificate into service, telling the data plane's subscribers. "first"
// is a data plane's first certificate (what a mass registration brings),
// "rotation" a renewal of one it held.
func BenchmarkFollowIdentity(b *testing.B) {
	const n = 512
	f := newFollowFixture(b, n)
	ctx := context.Background()
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if i%n == 0 {
				b.StopTimer()
				f.forget()
				b.StartTimer()
			}
			f.follower.handle(ctx, f.event(i%n, 0))
		}
	})
	b.Run("rotation", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			f.follower.handle(ctx, f.event(i%n, i/n+1))
		}
	})
}

// forget drops every certificate the follower holds.
func (f *followFixture) forget() {
	m := f.follower
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range m.dps {
		st.cur, st.idVersion, st.history = nil, 0, nil
	}
	m.meshes["default"].inUse = map[string]int{}
}
