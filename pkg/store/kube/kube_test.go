package kube_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"meshca/internal/kubetest"
	"meshca/pkg/api"
	"meshca/pkg/kube/crd"
	"meshca/pkg/store"
	"meshca/pkg/store/kube"
	"meshca/pkg/store/storetest"
)

const systemNS = "meshca-system"

// TestKubernetesStore runs everything against one real API server (etcd +
// kube-apiserver), started once: the store conformance suite, then what
// kubectl users see and do.
func TestKubernetesStore(t *testing.T) {
	srv := kubetest.Start(t)
	srv.Prepare(t, systemNS, "demo")
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	// Without the client's rate limit, which would make the concurrent
	// tests wait on it rather than on the store.
	fast := rest.CopyConfig(srv.Config)
	fast.QPS, fast.Burst = 1e6, 1e6
	open := func(t *testing.T) *kube.Store {
		t.Helper()
		s, err := kube.Open(t.Context(), fast, kube.Options{Namespace: systemNS})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	fresh := func(t *testing.T) *kube.Store {
		t.Helper()
		wipe(t, dyn)
		return open(t)
	}

	t.Run("Conformance", func(t *testing.T) {
		storetest.RunWithOptions(t, storetest.Options{VersionsOnlyGrow: true}, func(t *testing.T) store.Store { return fresh(t) })
	})
	t.Run("Kubectl", func(t *testing.T) { testKubectl(t, srv, fresh(t)) })
	t.Run("StoreWritesAsKumaDoes", func(t *testing.T) { testShapes(t, srv, dyn, fresh(t)) })
	t.Run("KubectlEditConflicts", func(t *testing.T) { testExternalEdit(t, dyn, fresh(t)) })
	t.Run("FailedWriteIsUndone", func(t *testing.T) { testUndo(t, fresh(t), open) })
	t.Run("LostCreateShowsTheWinner", func(t *testing.T) { testLostCreate(t, fresh(t), open(t)) })
	t.Run("RestartKeepsRecords", func(t *testing.T) {
		s := fresh(t)
		r := store.Record{Key: store.Key{Type: "DataplaneIdentity", Mesh: "default", Name: "web-1.demo"}, Spec: []byte("key material")}
		if err := store.Create(t.Context(), s, r); err != nil {
			t.Fatal(err)
		}
		before, _ := s.Get(t.Context(), r.Key)
		s.Close()
		got, err := open(t).Get(t.Context(), r.Key)
		if err != nil || string(got.Spec) != "key material" || got.Version != before.Version || !got.CreationTime.Equal(before.CreationTime) {
			t.Fatalf("after reopening: %+v, %v; want %+v", got, err, before)
		}
	})
	t.Run("NoSystemNamespace", func(t *testing.T) {
		_, err := kube.Open(t.Context(), fast, kube.Options{Namespace: "nope"})
		if err == nil || !strings.Contains(err.Error(), `the system namespace "nope" does not exist`) {
			t.Fatalf("Open with a missing namespace: %v", err)
		}
	})
	t.Run("Forbidden", func(t *testing.T) {
		cfg := rest.CopyConfig(srv.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: "nobody"}
		_, err := kube.Open(t.Context(), cfg, kube.Options{Namespace: systemNS})
		if !errors.Is(err, kube.ErrForbidden) || !strings.Contains(err.Error(), "may not list meshes.kuma.io cluster-wide") {
			t.Fatalf("Open as a user without rights: %v, want ErrForbidden naming the verb and resource", err)
		}
		// A user who may read but not write opens the store; its writes
		// are refused naming what is missing, and change nothing.
		if err := kubetest.Apply(t.Context(), srv.Config, []byte(readerRBAC)); err != nil {
			t.Fatal(err)
		}
		cfg.Impersonate.UserName = "reader"
		// The API server's authorizer learns the binding from its own cache.
		var s *kube.Store
		deadline := time.Now().Add(30 * time.Second)
		for s, err = kube.Open(t.Context(), cfg, kube.Options{Namespace: systemNS}); errors.Is(err, kube.ErrForbidden) && time.Now().Before(deadline); s, err = kube.Open(t.Context(), cfg, kube.Options{Namespace: systemNS}) {
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("Open as a reader: %v", err)
		}
		defer s.Close()
		key := store.Key{Type: api.TypeSecret, Mesh: "default", Name: "sec-9"}
		err = store.Create(t.Context(), s, store.Record{Key: key, Spec: []byte(`{"data":"aGVsbG8="}`)})
		if !errors.Is(err, kube.ErrForbidden) || !strings.Contains(err.Error(), "may not create secrets in namespace meshca-system") {
			t.Fatalf("create as a reader: %v, want ErrForbidden naming the verb, resource and namespace", err)
		}
		if _, err := s.Get(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after the refused create: %v", err)
		}
	})
}

const readerRBAC = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: meshca-reader}
rules:
- apiGroups: [kuma.io]
  resources: [meshes, dataplanes, accessroles, accessrolebindings]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: meshca-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: meshca-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: reader}
`

// wipe deletes every object a previous test left: the kuma.io resources and
// the Secrets of the system namespace.
func wipe(t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	ctx := t.Context()
	for _, r := range crd.Resources() {
		gvr := schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: r.Plural}
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list.Items {
			ri := dyn.Resource(gvr).Namespace(o.GetNamespace())
			if !r.Namespaced {
				ri = dyn.Resource(gvr)
			}
			if err := ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	secrets := schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	if err := dyn.Resource(secrets).Namespace(systemNS).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
}

func kubectl(t *testing.T, srv *kubetest.Server, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), srv.Kubectl(t), append([]string{"--kubeconfig", srv.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no event")
	}
	return store.Event{}
}

// testKubectl: what kubectl applies appears through Get, List and Watch in
// the shapes the rest of meshca reads, and kubectl delete is a Deleted
// event with the last state.
func testKubectl(t *testing.T, srv *kubetest.Server, s *kube.Store) {
	ctx := t.Context()
	meshes := s.Watch(ctx, api.TypeMesh)
	secrets := s.Watch(ctx, api.TypeSecret)
	dps := s.Watch(ctx, api.TypeDataplane)

	seed := filepath.Join("..", "..", "..", "examples", "acmpca", "mesh-kubernetes.yaml")
	kubectl(t, srv, "", "apply", "-f", seed)
	ev := next(t, meshes)
	if ev.Kind != store.EventCreated || ev.Record.Key != (store.Key{Type: api.TypeMesh, Name: "default"}) {
		t.Fatalf("event %v %s, want the Mesh's creation", ev.Kind, ev.Record.Key)
	}
	res, err := api.UnmarshalSpec(api.Meta{Type: api.TypeMesh, Name: "default"}, ev.Record.Spec)
	if err != nil {
		t.Fatalf("the Mesh's spec does not decode: %v\n%s", err, ev.Record.Spec)
	}
	mesh := res.(*api.Mesh)
	if mesh.MTLS == nil || mesh.MTLS.EnabledBackend != "acmpca-1" || len(mesh.MTLS.Backends) != 1 || mesh.MTLS.Backends[0].Type != "acmpca" ||
		!strings.Contains(string(mesh.MTLS.Backends[0].Conf), `"secret":"sec-1"`) {
		t.Fatalf("Mesh read back: %s", ev.Record.Spec)
	}
	got, err := s.Get(ctx, ev.Record.Key)
	if err != nil || got.Version != ev.Record.Version || got.Version <= 0 {
		t.Fatalf("Get = %+v, %v; want the event's version %d", got, err, ev.Record.Version)
	}

	kubectl(t, srv, "", "create", "secret", "generic", "sec-1", "-n", systemNS, "--type", "system.kuma.io/secret", "--from-literal=value=hello")
	kubectl(t, srv, "", "label", "secret", "sec-1", "-n", systemNS, "kuma.io/mesh=default", "team=payments")
	ev = next(t, secrets)
	if ev.Kind != store.EventCreated || ev.Record.Key != (store.Key{Type: api.TypeSecret, Mesh: "default", Name: "sec-1"}) {
		t.Fatalf("event %v %s, want sec-1's creation in mesh default", ev.Kind, ev.Record.Key)
	}
	ev = next(t, secrets) // the label edit
	if ev.Kind != store.EventUpdated || ev.Record.Labels["team"] != "payments" || len(ev.Record.Labels) != 1 {
		t.Fatalf("event %v %+v, want the label edit", ev.Kind, ev.Record)
	}
	sec, err := api.UnmarshalSpec(api.Meta{Type: api.TypeSecret, Mesh: "default", Name: "sec-1"}, ev.Record.Spec)
	if err != nil || sec.(*api.Secret).Data != "aGVsbG8=" {
		t.Fatalf("Secret spec %s (%v), want data aGVsbG8= (hello)", ev.Record.Spec, err)
	}
	list, err := s.List(ctx, api.TypeSecret, "default")
	if err != nil || len(list) != 1 || list[0].Name != "sec-1" {
		t.Fatalf("List secrets = %+v, %v", list, err)
	}

	dp := "apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: web-1, namespace: demo}\nmesh: default\n" +
		"spec: {networking: {address: 10.0.0.1, inbound: [{port: 8080, tags: {kuma.io/service: web}}]}}\n"
	kubectl(t, srv, dp, "apply", "-f", "-")
	ev = next(t, dps)
	if ev.Kind != store.EventCreated || ev.Record.Key != (store.Key{Type: api.TypeDataplane, Mesh: "default", Name: "web-1.demo"}) {
		t.Fatalf("event %v %s, want Dataplane web-1.demo in mesh default", ev.Kind, ev.Record.Key)
	}
	if _, err := api.UnmarshalSpec(api.Meta{Type: api.TypeDataplane, Mesh: "default", Name: "web-1.demo"}, ev.Record.Spec); err != nil {
		t.Fatalf("Dataplane spec: %v", err)
	}

	// Moving a Dataplane to another mesh changes its key: the record in
	// the old mesh is gone, one in the new mesh exists.
	kubectl(t, srv, "", "patch", "dataplane", "web-1", "-n", "demo", "--type", "merge", "-p", `{"mesh":"other"}`)
	if ev := next(t, dps); ev.Kind != store.EventDeleted || ev.Record.Key != (store.Key{Type: api.TypeDataplane, Mesh: "default", Name: "web-1.demo"}) {
		t.Fatalf("event %v %s, want web-1.demo gone from mesh default", ev.Kind, ev.Record.Key)
	}
	if ev := next(t, dps); ev.Kind != store.EventCreated || ev.Record.Key != (store.Key{Type: api.TypeDataplane, Mesh: "other", Name: "web-1.demo"}) {
		t.Fatalf("event %v %s, want web-1.demo in mesh other", ev.Kind, ev.Record.Key)
	}

	kubectl(t, srv, "", "delete", "mesh", "default")
	ev = next(t, meshes)
	if ev.Kind != store.EventDeleted || ev.Record.Name != "default" || ev.Record.Version != got.Version || len(ev.Record.Spec) == 0 {
		t.Fatalf("event %v %+v, want the deletion with the last state", ev.Kind, ev.Record)
	}
	if _, err := s.Get(ctx, ev.Record.Key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after kubectl delete: %v", err)
	}
}

// testShapes: what the store writes is what Kuma on Kubernetes writes.
func testShapes(t *testing.T, srv *kubetest.Server, dyn dynamic.Interface, s *kube.Store) {
	ctx := t.Context()
	err := s.Commit(ctx,
		store.Op{Kind: store.OpCreate, Record: store.Record{Key: store.Key{Type: api.TypeMesh, Name: "default"}, Spec: []byte(`{"mtls":{"enabledBackend":"ca-1"}}`)}},
		store.Op{Kind: store.OpCreate, Record: store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: "default", Name: "default.ca-builtin-cert-ca-1"}, Spec: []byte(`{"data":"aGVsbG8="}`)}},
		store.Op{Kind: store.OpCreate, Record: store.Record{Key: store.Key{Type: api.TypeDataplane, Mesh: "default", Name: "web-2.demo"}, Spec: []byte(`{"networking":{"address":"10.0.0.2"}}`)}},
		store.Op{Kind: store.OpCreate, Record: store.Record{Key: store.Key{Type: "DataplaneIdentity", Mesh: "default", Name: "web-2.demo"}, Spec: []byte(`{"keyPEM":"…"}`)}},
	)
	if err != nil {
		t.Fatal(err)
	}
	// A Secret created for a known Mesh is owned by it (the garbage
	// collector deletes it with the Mesh, as Kuma's).
	key := store.Key{Type: "DataplaneInsight", Mesh: "default", Name: "web-3.demo"}
	if err := store.Create(ctx, s, store.Record{Key: key, Spec: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	mesh, err := dyn.Resource(schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "meshes"}).Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if out := kubectl(t, srv, "", "get", "secrets", "-n", systemNS, "-l", "meshca.io/type=DataplaneInsight", "-o",
		"jsonpath={range .items[*]}{.metadata.annotations.meshca\\.io/name}={.metadata.ownerReferences[*].kind}/{.metadata.ownerReferences[*].uid} {end}"); !strings.Contains(out, "web-3.demo=Mesh/"+string(mesh.GetUID())) {
		t.Errorf("owner of a Secret created for mesh default: %q", out)
	}

	// A zone's Dataplane synced to global is named <name>.<zone>: the
	// suffix is no namespace, and it is kept in the system namespace.
	synced := store.Record{Key: store.Key{Type: api.TypeDataplane, Mesh: "default", Name: "web-1.demo.zone-1"},
		Labels: map[string]string{"kuma.io/zone": "zone-1"}, Spec: []byte(`{"networking":{"address":"10.0.0.3"}}`)}
	if err := store.Create(ctx, s, synced); err != nil {
		t.Fatalf("create a zone's Dataplane: %v", err)
	}
	if out := kubectl(t, srv, "", "get", "dataplanes", "-n", systemNS, "-o", "jsonpath={.items[*].metadata.annotations.meshca\\.io/name}"); out != "web-1.demo.zone-1" {
		t.Errorf("zone's Dataplane in the system namespace: %q", out)
	}
	got, err := s.Get(ctx, synced.Key)
	if err != nil || got.Labels["kuma.io/zone"] != "zone-1" {
		t.Fatalf("Get the zone's Dataplane: %+v, %v", got, err)
	}
	got.Spec = []byte(`{"networking":{"address":"10.0.0.4"}}`)
	if err := store.Update(ctx, s, got); err != nil {
		t.Fatalf("update the zone's Dataplane: %v", err)
	}
	if err := store.Delete(ctx, s, synced.Key); err != nil {
		t.Fatalf("delete the zone's Dataplane: %v", err)
	}
	if out := kubectl(t, srv, "", "get", "meshes", "-o", "jsonpath={.items[*].spec.mtls.enabledBackend}"); out != "ca-1" {
		t.Errorf("kubectl get meshes: %q", out)
	}
	if out := kubectl(t, srv, "", "get", "dataplanes", "-n", "demo", "-o", "jsonpath={.items[*].metadata.name} {.items[*].mesh}"); out != "web-2 default" {
		t.Errorf("kubectl get dataplanes -n demo: %q", out)
	}
	sec, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}).Namespace(systemNS).Get(ctx, "default.ca-builtin-cert-ca-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	value, _, _ := unstructured.NestedString(sec.Object, "data", "value")
	if sec.Object["type"] != "system.kuma.io/secret" || sec.GetLabels()["kuma.io/mesh"] != "default" || value != "aGVsbG8=" {
		t.Errorf("Secret written: type %v labels %v data.value %q", sec.Object["type"], sec.GetLabels(), value)
	}
	out := kubectl(t, srv, "", "get", "secrets", "-n", systemNS, "-l", "meshca.io/type=DataplaneIdentity", "-o", "json")
	var states struct {
		Items []struct {
			Type     string            `json:"type"`
			Metadata metav1.ObjectMeta `json:"metadata"`
			Data     map[string][]byte `json:"data"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &states); err != nil {
		t.Fatal(err)
	}
	if len(states.Items) != 1 || states.Items[0].Type != kube.SecretTypeState || string(states.Items[0].Data["spec"]) != `{"keyPEM":"…"}` ||
		states.Items[0].Metadata.Annotations[kube.AnnotationName] != "web-2.demo" {
		t.Errorf("state Secrets: %s", out)
	}
}

// testExternalEdit: a kubectl edit makes the version grow, and a write from
// the version before it is refused.
func testExternalEdit(t *testing.T, dyn dynamic.Interface, s *kube.Store) {
	ctx := t.Context()
	key := store.Key{Type: api.TypeMesh, Name: "m1"}
	if err := store.Create(ctx, s, store.Record{Key: key, Spec: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Get(ctx, key)
	ch := s.Watch(ctx, api.TypeMesh)
	gvr := schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: "meshes"}
	obj, err := dyn.Resource(gvr).Get(ctx, "m1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(obj.Object, true, "spec", "mtls", "skipValidation")
	if _, err := dyn.Resource(gvr).Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := next(t, ch)
	if ev.Kind != store.EventUpdated || ev.Record.Version <= before.Version || !strings.Contains(string(ev.Record.Spec), "skipValidation") ||
		ev.Record.ModificationTime.Before(before.ModificationTime.Truncate(time.Second)) || !ev.Record.CreationTime.Equal(before.CreationTime) {
		t.Fatalf("event %v %+v after an edit, want an update with a newer version", ev.Kind, ev.Record)
	}
	stale := before
	stale.Spec = []byte(`{"mtls":{}}`)
	if err := store.Update(ctx, s, stale); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("update from the version before the edit: %v, want ErrConflict", err)
	}
}

// testUndo: when the API server refuses a later write of a commit, the
// earlier ones are undone and nothing is published.
func testUndo(t *testing.T, s *kube.Store, open func(*testing.T) *kube.Store) {
	ctx := t.Context()
	ch := s.Watch(ctx)
	first := store.Record{Key: store.Key{Type: "Zone", Name: "zone-1"}, Spec: []byte("{}")}
	// The checks pass; the API server refuses the name (not a DNS name).
	bad := store.Record{Key: store.Key{Type: api.TypeMesh, Name: "Not_A_DNS_Name"}, Spec: []byte("{}")}
	err := s.Commit(ctx, store.Op{Kind: store.OpCreate, Record: first}, store.Op{Kind: store.OpCreate, Record: bad})
	if err == nil || !strings.Contains(err.Error(), "Not_A_DNS_Name") {
		t.Fatalf("commit = %v, want the API server's refusal", err)
	}
	if _, err := s.Get(ctx, first.Key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the first write was not undone: Get = %v", err)
	}
	// A batch of writes to different objects goes out concurrently: one
	// refused among them undoes all those that were made.
	var ops []store.Op
	for i := range 40 {
		r := store.Record{Key: store.Key{Type: "Zone", Name: "batch-" + strconv.Itoa(i)}, Spec: []byte("{}")}
		if i == 20 {
			r = bad
		}
		ops = append(ops, store.Op{Kind: store.OpCreate, Record: r})
	}
	if err := s.Commit(ctx, ops...); err == nil || !strings.Contains(err.Error(), "Not_A_DNS_Name") {
		t.Fatalf("batch commit = %v, want the API server's refusal", err)
	}
	if zones, err := s.List(ctx, "Zone", ""); err != nil || len(zones) != 0 {
		t.Fatalf("after the failed batch: %d records (%v), want none", len(zones), err)
	}
	// Updates and deletions are undone too: the content comes back (from
	// the records, the informers keeping no payload), with newer versions.
	u := store.Record{Key: store.Key{Type: "Zone", Name: "u"}, Spec: []byte("orig"), Labels: map[string]string{"k": "v"}}
	d := store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: "default", Name: "d"}, Spec: []byte(`{"data":"a2VlcA=="}`)}
	if err := s.Commit(ctx, store.Op{Kind: store.OpCreate, Record: u}, store.Op{Kind: store.OpCreate, Record: d}); err != nil {
		t.Fatal(err)
	}
	u1, _ := s.Get(ctx, u.Key)
	changed, changed2 := u, u
	changed.Spec, changed2.Spec = []byte("changed"), []byte("changed2")
	err = s.Commit(ctx,
		store.Op{Kind: store.OpUpdate, Record: changed},
		store.Op{Kind: store.OpUpdate, Record: changed2}, // the same key: written in order
		store.Op{Kind: store.OpDelete, Record: store.Record{Key: d.Key}},
		store.Op{Kind: store.OpCreate, Record: bad})
	if err == nil {
		t.Fatal("commit with a refused write succeeded")
	}
	for _, want := range []store.Record{u, d} {
		got, err := s.Get(ctx, want.Key)
		if err != nil || string(got.Spec) != string(want.Spec) || len(got.Labels) != len(want.Labels) {
			t.Fatalf("%s after the undo: %+v, %v; want spec %s", want.Key, got, err, want.Spec)
		}
	}
	if got, _ := s.Get(ctx, u.Key); got.Version <= u1.Version {
		t.Errorf("restored record's version %d, not after %d", got.Version, u1.Version)
	}
	reopened := open(t) // reads everything from the API server again
	if got, err := reopened.Get(ctx, d.Key); err != nil || string(got.Spec) != string(d.Spec) {
		t.Fatalf("re-created Secret as the API server has it: %+v, %v", got, err)
	}
	if got, err := reopened.Get(ctx, u.Key); err != nil || string(got.Spec) != "orig" || got.Labels["k"] != "v" {
		t.Fatalf("restored record as the API server has it: %+v, %v", got, err)
	}

	marker := store.Record{Key: store.Key{Type: "Zone", Name: "marker"}}
	if err := store.Create(ctx, s, marker); err != nil {
		t.Fatal(err)
	}
	// Nothing of the failed commits was published: only the creations of
	// u and d, then the marker's.
	for _, want := range []store.Key{u.Key, d.Key, marker.Key} {
		if ev := next(t, ch); ev.Record.Key != want || ev.Kind != store.EventCreated {
			t.Fatalf("event %v %s, want the creation of %s", ev.Kind, ev.Record.Key, want)
		}
	}
}

// BenchmarkCommit measures the commit issuing a data plane's identity
// writes (its record, conditional on its Dataplane) from 64 goroutines, as
// the identity manager's workers make them: each is a create through the
// API server, returned once the informer shows it.
func BenchmarkCommit(b *testing.B) {
	srv := kubetest.Start(b)
	srv.Prepare(b, systemNS, "demo")
	// The client's own rate limit, not the store, would be measured.
	cfg := rest.CopyConfig(srv.Config)
	cfg.QPS, cfg.Burst = 1e6, 1e6
	s, err := kube.Open(b.Context(), cfg, kube.Options{Namespace: systemNS})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	dp := store.Record{Key: store.Key{Type: api.TypeDataplane, Mesh: "default", Name: "web.demo"}, Spec: []byte(`{}`)}
	if err := store.Create(b.Context(), s, dp); err != nil {
		b.Fatal(err)
	}
	spec := []byte(strings.Repeat("k", 2048)) // about an identity's size
	b.SetParallelism(64)
	var n atomicCounter
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := store.Record{Key: store.Key{Type: "DataplaneIdentity", Mesh: "default", Name: "dp-" + strconv.FormatInt(n.next(), 10)}, Spec: spec}
			if err := s.Commit(b.Context(), store.Op{Kind: store.OpRequire, Record: store.Record{Key: dp.Key}}, store.Op{Kind: store.OpUpsert, Record: r}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

type atomicCounter struct{ v atomic.Int64 }

func (c *atomicCounter) next() int64 { return c.v.Add(1) }

// testLostCreate: a create that another replica's store won, refused by
// the API server while this store's informers had not shown the winner's
// object yet, returns only once they do: a read right after it finds the
// record, as on every store (replicas starting together race so for the
// shared server CAs).
func testLostCreate(t *testing.T, a, b *kube.Store) {
	ctx := t.Context()
	for i := range 40 {
		key := store.Key{Type: api.TypeSecret, Mesh: "default", Name: fmt.Sprintf("race-%d", i)}
		if err := store.Create(ctx, a, store.Record{Key: key, Spec: []byte(`{"data":"aGVsbG8="}`)}); err != nil {
			t.Fatal(err)
		}
		if err := store.Create(ctx, b, store.Record{Key: key, Spec: []byte(`{"data":"b3RoZXI="}`)}); !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("the second create of %s: %v, want already exists", key, err)
		}
		if _, err := b.Get(ctx, key); err != nil {
			t.Fatalf("read right after losing the create of %s: %v", key, err)
		}
	}
}
