package resources_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/builtin"
	"meshca/pkg/datasource"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

func newManager(t *testing.T) (*resources.Manager, store.Store) {
	t.Helper()
	st := memory.New()
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now},
		map[string]ca.Constructor{api.BackendBuiltin: builtin.New})
	if err != nil {
		t.Fatal(err)
	}
	return resources.NewManager(st, reg, resources.Options{}), st
}

func decode(t *testing.T, yaml string) api.Resource {
	t.Helper()
	docs, err := api.DecodeDocuments([]byte(yaml))
	if err != nil || len(docs) != 1 {
		t.Fatalf("decode: %v (%d documents)", err, len(docs))
	}
	return docs[0].Resource
}

const dpYAML = "type: Dataplane\nmesh: default\nname: web-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9002, tags: {kuma.io/service: %s}}]}\n"

// TestApplyInMesh: a Dataplane is created, then updated in place; into a
// Mesh that does not exist it is refused on the field "mesh" and nothing is
// written, also when the Mesh was deleted after it existed.
func TestApplyInMesh(t *testing.T) {
	ctx := context.Background()
	m, st := newManager(t)
	key := store.Key{Type: api.TypeDataplane, Mesh: "default", Name: "web-1"}

	_, err := m.Apply(ctx, decode(t, strings.Replace(dpYAML, "%s", "web", 1)), resources.ApplyOptions{})
	if fields := api.Fields(err); len(fields) != 1 || fields[0] != "mesh" || !strings.Contains(err.Error(), `mesh "default" does not exist`) {
		t.Fatalf("apply into a missing mesh: err = %v (fields %v), want one on \"mesh\"", err, fields)
	}
	if _, err := st.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused dataplane was stored (Get err = %v)", err)
	}

	if _, err := m.Apply(ctx, decode(t, "type: Mesh\nname: default\n"), resources.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	created, err := m.Apply(ctx, decode(t, strings.Replace(dpYAML, "%s", "web", 1)), resources.ApplyOptions{})
	if err != nil || !created {
		t.Fatalf("first apply: created=%v err=%v, want created", created, err)
	}
	first, err := st.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	created, err = m.Apply(ctx, decode(t, strings.Replace(dpYAML, "%s", "web-v2", 1)), resources.ApplyOptions{})
	if err != nil || created {
		t.Fatalf("second apply: created=%v err=%v, want an update", created, err)
	}
	second, err := st.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if second.Version != first.Version+1 || !second.CreationTime.Equal(first.CreationTime) || !strings.Contains(string(second.Spec), "web-v2") {
		t.Fatalf("after update: version %d (was %d), created %v (was %v), spec %s", second.Version, first.Version,
			second.CreationTime, first.CreationTime, second.Spec)
	}

	// The Mesh goes away behind the manager's back (another control plane):
	// neither a create nor an update is written into it.
	if err := st.Commit(ctx, store.Op{Kind: store.OpDelete, Record: store.Record{Key: store.Key{Type: api.TypeMesh, Name: "default"}}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web-1", "web-2"} {
		_, err := m.Apply(ctx, decode(t, strings.Replace(strings.Replace(dpYAML, "%s", "web-v3", 1), "web-1", name, 1)), resources.ApplyOptions{})
		if fields := api.Fields(err); len(fields) != 1 || fields[0] != "mesh" {
			t.Fatalf("apply %s into a deleted mesh: err = %v, want one on \"mesh\"", name, err)
		}
	}
	if r, _ := st.Get(ctx, key); r.Version != second.Version {
		t.Fatalf("dataplane changed in a deleted mesh: version %d", r.Version)
	}
}

// TestMeshDeleteSeesLateDataplane: a Dataplane added to a Mesh after the
// deletion listed its contents (here: straight into the store, between the
// two) fails the deletion, which changes nothing, instead of being left
// behind in no mesh.
func TestMeshDeleteSeesLateDataplane(t *testing.T) {
	ctx := context.Background()
	m, st := newManager(t)
	if _, err := m.Apply(ctx, decode(t, "type: Mesh\nname: default\n"), resources.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	late := &lateStore{Store: st}
	m = resources.NewManager(late, nil, resources.Options{})
	late.onList = func() {
		rec, err := resources.ToRecord(decode(t, strings.Replace(dpYAML, "%s", "web", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Commit(ctx, store.Op{Kind: store.OpCreate, Record: rec}); err != nil {
			t.Fatal(err)
		}
	}
	err := m.Delete(ctx, api.TypeMesh, "", "default")
	var inUse *resources.InUseError
	if !errors.As(err, &inUse) || !strings.Contains(err.Error(), "web-1") {
		t.Fatalf("Delete: err = %v, want the mesh in use by web-1", err)
	}
	if _, err := st.Get(ctx, store.Key{Type: api.TypeMesh, Name: "default"}); err != nil {
		t.Fatalf("the mesh is gone after a refused deletion: %v", err)
	}
}

// lateStore runs onList once, after the first List of Secrets (the last
// thing a Mesh deletion reads before its commit).
type lateStore struct {
	store.Store
	onList func()
}

func (s *lateStore) List(ctx context.Context, typ, mesh string) ([]store.Record, error) {
	recs, err := s.Store.List(ctx, typ, mesh)
	if typ == api.TypeSecret && s.onList != nil {
		f := s.onList
		s.onList = nil
		f()
	}
	return recs, err
}

// TestCheckDelete: what Delete refuses, CheckDelete refuses with the same
// error, and neither it nor what it allows changes anything.
func TestCheckDelete(t *testing.T) {
	ctx := context.Background()
	m, st := newManager(t)
	if _, err := m.Apply(ctx, decode(t, "type: Mesh\nname: default\n"), resources.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, decode(t, strings.Replace(dpYAML, "%s", "web", 1)), resources.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	checkErr := m.CheckDelete(ctx, api.TypeMesh, "", "default")
	var iue *resources.InUseError
	if !errors.As(checkErr, &iue) {
		t.Fatalf("CheckDelete of a Mesh with a Dataplane: %v", checkErr)
	}
	if deleteErr := m.Delete(ctx, api.TypeMesh, "", "default"); deleteErr == nil || deleteErr.Error() != checkErr.Error() {
		t.Errorf("Delete said %v, CheckDelete %v", deleteErr, checkErr)
	}
	if err := m.CheckDelete(ctx, api.TypeDataplane, "default", "web-1"); err != nil {
		t.Errorf("CheckDelete of a Dataplane: %v", err)
	}
	if _, err := st.Get(ctx, store.Key{Type: api.TypeDataplane, Mesh: "default", Name: "web-1"}); err != nil {
		t.Errorf("CheckDelete deleted: %v", err)
	}
	if err := m.CheckDelete(ctx, api.TypeSecret, "default", "no-such"); err != nil {
		t.Errorf("CheckDelete of a Secret nothing uses: %v", err)
	}
}
