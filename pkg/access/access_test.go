package access_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"meshca/pkg/access"
	"meshca/pkg/api"
	"meshca/pkg/authn"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

// listSource serves fixed resources.
type listSource []api.Resource

func (s listSource) List(_ context.Context, typ, _ string) ([]api.Resource, error) {
	var out []api.Resource
	for _, r := range s {
		if r.GetMeta().Type == typ {
			out = append(out, r)
		}
	}
	return out, nil
}

func teamA() listSource {
	return listSource{
		&api.AccessRole{Meta: api.Meta{Type: api.TypeAccessRole, Name: "team-a-dataplanes"}, AccessRoleSpec: api.AccessRoleSpec{Rules: []api.AccessRule{{
			Types: []string{api.TypeDataplane}, Mesh: "team-a",
			Access: []string{"CREATE", "UPDATE", "DELETE", "GET", "GENERATE_DATAPLANE_TOKEN"},
		}}}},
		&api.AccessRole{Meta: api.Meta{Type: api.TypeAccessRole, Name: "web-1-only"}, AccessRoleSpec: api.AccessRoleSpec{Rules: []api.AccessRule{{
			Types: []string{api.TypeDataplane}, Names: []string{"web-1"}, Access: []string{"DELETE"},
		}}}},
		&api.AccessRole{Meta: api.Meta{Type: api.TypeAccessRole, Name: "secret-reader"}, AccessRoleSpec: api.AccessRoleSpec{Rules: []api.AccessRule{{
			Types: []string{api.TypeSecret}, Mesh: "team-a", Access: []string{"GET", "VIEW_SECRET_DATA"},
		}}}},
		&api.AccessRoleBinding{Meta: api.Meta{Type: api.TypeAccessRoleBinding, Name: "team-a"}, AccessRoleBindingSpec: api.AccessRoleBindingSpec{
			Subjects: []api.Subject{{Type: "Group", Name: "team-a"}}, Roles: []string{"team-a-dataplanes"}}},
		&api.AccessRoleBinding{Meta: api.Meta{Type: api.TypeAccessRoleBinding, Name: "bob"}, AccessRoleBindingSpec: api.AccessRoleBindingSpec{
			Subjects: []api.Subject{{Type: "User", Name: "bob"}}, Roles: []string{"web-1-only", "secret-reader", "no-such-role"}}},
	}
}

func TestTeamAExample(t *testing.T) {
	c := access.New(teamA())
	alice := authn.User("alice", []string{"team-a"})
	bob := authn.User("bob", nil)
	carol := authn.User("carol", []string{"team-b"})
	for _, tc := range []struct {
		who  authn.Identity
		req  access.Request
		want bool
	}{
		{alice, access.Request{Access: "CREATE", Type: api.TypeDataplane, Mesh: "team-a", Name: "web-1"}, true},
		{alice, access.Request{Access: "DELETE", Type: api.TypeDataplane, Mesh: "team-a", Name: "web-2"}, true},
		{alice, access.Request{Access: "GENERATE_DATAPLANE_TOKEN", Type: api.TypeDataplane, Mesh: "team-a", Name: "web-1"}, true},
		{alice, access.Request{Access: "CREATE", Type: api.TypeDataplane, Mesh: "team-b", Name: "web-1"}, false},
		{alice, access.Request{Access: "GENERATE_DATAPLANE_TOKEN", Type: api.TypeDataplane, Mesh: "team-b", Name: "web-1"}, false},
		{alice, access.Request{Access: "CREATE", Type: api.TypeMesh, Name: "team-a"}, false},
		{alice, access.Request{Access: "GET", Type: api.TypeMesh, Name: "team-b"}, true}, // non-secret GET: any authenticated
		{alice, access.Request{Access: "GET", Type: api.TypeSecret, Mesh: "team-a", Name: "s"}, false},
		{alice, access.Request{Access: "VIEW_SECRET_DATA", Type: api.TypeSecret, Mesh: "team-a", Name: "s"}, false},
		{alice, access.Request{Access: "GENERATE_USER_TOKEN"}, false},
		{bob, access.Request{Access: "DELETE", Type: api.TypeDataplane, Mesh: "any", Name: "web-1"}, true},
		{bob, access.Request{Access: "DELETE", Type: api.TypeDataplane, Mesh: "any", Name: "web-2"}, false},
		{bob, access.Request{Access: "VIEW_SECRET_DATA", Type: api.TypeSecret, Mesh: "team-a", Name: "s"}, true},
		{bob, access.Request{Access: "VIEW_SECRET_DATA", Type: api.TypeSecret, Mesh: "team-b", Name: "s"}, false},
		{bob, access.Request{Access: "VIEW_SECRET_DATA", Type: api.TypeGlobalSecret, Name: "s"}, false},
		{carol, access.Request{Access: "CREATE", Type: api.TypeDataplane, Mesh: "team-a", Name: "web-1"}, false},
		{authn.Admin(), access.Request{Access: "VIEW_SECRET_DATA", Type: api.TypeGlobalSecret, Name: "s"}, true},
		{authn.User("root", []string{authn.GroupAdmin}), access.Request{Access: "GENERATE_USER_TOKEN"}, true},
		{authn.Anonymous(), access.Request{Access: "GET", Type: api.TypeMesh, Name: "m"}, false},
	} {
		err := c.Check(context.Background(), tc.who, tc.req)
		if (err == nil) != tc.want {
			t.Errorf("%s: %s: err = %v, want allowed=%v", tc.who.Name, tc.req, err, tc.want)
		}
		if err != nil && (!access.IsDenied(err) || !strings.Contains(err.Error(), tc.req.Access) || !strings.Contains(err.Error(), tc.who.Name)) {
			t.Errorf("refusal does not name the user and the access: %v", err)
		}
	}
}

// TestGrantsFollowRoleChanges: with Run watching the store, grants are
// cached and a change of a binding is seen.
func TestGrantsFollowRoleChanges(t *testing.T) {
	st := memory.New()
	defer st.Close()
	src := storeSource{st}
	c := access.New(src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx, st)
	alice := authn.User("alice", []string{"team-a"})
	req := access.Request{Access: "CREATE", Type: api.TypeDataplane, Mesh: "team-a", Name: "web-1"}
	if err := c.Check(ctx, alice, req); err == nil {
		t.Fatal("allowed before any binding")
	}
	for _, r := range teamA() {
		put(t, st, r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Check(ctx, alice, req) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the new binding was never seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := store.Delete(ctx, st, store.Key{Type: api.TypeAccessRoleBinding, Name: "team-a"}); err != nil {
		t.Fatal(err)
	}
	for c.Check(ctx, alice, req) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the removed binding still grants")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// storeSource reads resources from a store, as resources.Manager does.
type storeSource struct{ st store.Store }

func (s storeSource) List(ctx context.Context, typ, mesh string) ([]api.Resource, error) {
	recs, err := s.st.List(ctx, typ, mesh)
	if err != nil {
		return nil, err
	}
	var out []api.Resource
	for _, r := range recs {
		res, err := api.UnmarshalSpec(api.Meta{Type: r.Type, Mesh: r.Mesh, Name: r.Name}, r.Spec)
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

func put(t *testing.T, st store.Store, r api.Resource) {
	t.Helper()
	spec, err := api.MarshalSpec(r)
	if err != nil {
		t.Fatal(err)
	}
	m := r.GetMeta()
	if err := store.Upsert(context.Background(), st, store.Record{Key: store.Key{Type: m.Type, Mesh: m.Mesh, Name: m.Name}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
}
