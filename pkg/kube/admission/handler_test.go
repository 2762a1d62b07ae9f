package admission_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/controlplane"
	"meshca/pkg/datasource"
	"meshca/pkg/kube/admission"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

// review posts one AdmissionReview to h and returns its response.
func review(t *testing.T, h http.Handler, req admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	req.UID = "uid-1"
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req,
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, admission.Path, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil || out.Response.UID != "uid-1" {
		t.Fatalf("answer %s", rec.Body)
	}
	return out.Response
}

func meshRequest(op admissionv1.Operation, obj string) admissionv1.AdmissionRequest {
	return admissionv1.AdmissionRequest{
		Kind:      metav1.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: "Mesh"},
		Operation: op, Name: "default",
		Object:   runtime.RawExtension{Raw: []byte(obj)},
		UserInfo: authnUser("alice"),
	}
}

func TestHandlerDeniesWithFieldPaths(t *testing.T) {
	h := admission.NewHandler(newManager(t), admission.Options{SystemNamespace: "meshca-system"})
	// What the API server sends for a CR: metadata the codec does not
	// know (uid, generation, managedFields) is no error.
	resp := review(t, h, meshRequest(admissionv1.Create, `{"apiVersion":"kuma.io/v1alpha1","kind":"Mesh",
		"metadata":{"name":"default","uid":"x","generation":1,"finalizers":["f"],"managedFields":[]},
		"spec":{"mtls":{"enabledBackend":"b","backends":[{"name":"b","type":"builtin","dpCert":{"rotation":{"expiration":"soon"}}}],"bogus":1}}}`))
	if resp.Allowed || resp.Result == nil {
		t.Fatalf("allowed: %+v", resp)
	}
	if resp.Result.Code != http.StatusUnprocessableEntity || resp.Result.Reason != metav1.StatusReasonInvalid {
		t.Errorf("status %d %s", resp.Result.Code, resp.Result.Reason)
	}
	if len(resp.Result.Details.Causes) != 1 || resp.Result.Details.Causes[0].Field != "spec.mtls.bogus" {
		t.Errorf("causes %+v", resp.Result.Details.Causes)
	}

	// Decoded, then validated: the Universal paths of Validate become the
	// Kubernetes form's.
	resp = review(t, h, meshRequest(admissionv1.Create, `{"apiVersion":"kuma.io/v1alpha1","kind":"Mesh","metadata":{"name":"default"},
		"spec":{"mtls":{"enabledBackend":"b","backends":[{"name":"b","type":"builtin","dpCert":{"rotation":{"expiration":"soon"}}}]}}}`))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "spec.mtls.backends[0].dpCert.rotation.expiration") {
		t.Errorf("answer %+v", resp.Result)
	}

	ok := `{"apiVersion":"kuma.io/v1alpha1","kind":"Mesh","metadata":{"name":"default"},"spec":{"mtls":{"enabledBackend":"b","backends":[{"name":"b","type":"builtin"}]}}}`
	if resp := review(t, h, meshRequest(admissionv1.Create, ok)); !resp.Allowed {
		t.Errorf("valid Mesh denied: %+v", resp.Result)
	}
}

func TestHandlerAllows(t *testing.T) {
	mgr := newManager(t)
	h := admission.NewHandler(mgr, admission.Options{SystemNamespace: "meshca-system", ExemptUser: "system:serviceaccount:meshca-system:meshca-control-plane"})
	bad := `{"apiVersion":"kuma.io/v1alpha1","kind":"Mesh","metadata":{"name":"default"},"spec":{"bogus":1}}`

	exempt := meshRequest(admissionv1.Create, bad)
	exempt.UserInfo = authnUser("system:serviceaccount:meshca-system:meshca-control-plane")
	if resp := review(t, h, exempt); !resp.Allowed {
		t.Errorf("the control plane's own write denied: %+v", resp.Result)
	}
	// An object on its way out loses its finalizers by an update.
	deleting := `{"apiVersion":"kuma.io/v1alpha1","kind":"Mesh","metadata":{"name":"default","deletionTimestamp":"2026-01-01T00:00:00Z"},"spec":{"bogus":1}}`
	if resp := review(t, h, meshRequest(admissionv1.Update, deleting)); !resp.Allowed {
		t.Errorf("finalizer removal denied: %+v", resp.Result)
	}
	// Secrets of other types or namespaces are not meshca's.
	for _, req := range []admissionv1.AdmissionRequest{
		{Namespace: "meshca-system", Object: runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"Secret","type":"Opaque","metadata":{"name":"s"},"data":{"x":""}}`)}},
		{Namespace: "default", Object: runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"Secret","type":"system.kuma.io/secret","metadata":{"name":"s"},"data":{"x":""}}`)}},
	} {
		req.Kind = metav1.GroupVersionKind{Version: "v1", Kind: "Secret"}
		req.Operation, req.Name = admissionv1.Create, "s"
		if resp := review(t, h, req); !resp.Allowed {
			t.Errorf("%s denied: %+v", req.Object.Raw, resp.Result)
		}
	}
	// A Secret of the system namespace is checked, with the mesh of its label.
	sec := admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Secret"}, Namespace: "meshca-system", Name: "s",
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"Secret","type":"system.kuma.io/secret","immutable":true,"metadata":{"name":"s","labels":{"kuma.io/mesh":"m1"}},"data":{"value":"aGk="}}`)}}
	if resp := review(t, h, sec); resp.Allowed || !strings.Contains(resp.Result.Message, `mesh "m1" does not exist`) {
		t.Errorf("Secret of a missing mesh: %+v", resp)
	}
	if _, err := mgr.Apply(t.Context(), mustDecode(t, "type: Mesh\nname: m1\n"), resources.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if resp := review(t, h, sec); !resp.Allowed {
		t.Errorf("Secret denied: %+v", resp.Result)
	}
}

func TestHandlerRefusesBadRequests(t *testing.T) {
	h := admission.NewHandler(newManager(t), admission.Options{})
	for _, tc := range []struct {
		method, body string
		want         int
	}{
		{http.MethodGet, "", http.StatusMethodNotAllowed},
		{http.MethodPost, "{", http.StatusBadRequest},
		{http.MethodPost, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, admission.Path, strings.NewReader(tc.body)))
		if rec.Code != tc.want {
			t.Errorf("%s %q: %d, want %d", tc.method, tc.body, rec.Code, tc.want)
		}
	}
}

func authnUser(name string) authenticationv1.UserInfo {
	return authenticationv1.UserInfo{Username: name}
}

func mustDecode(t testing.TB, y string) api.Resource {
	t.Helper()
	r, _, err := api.DecodeOne([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSecretOfDeletedMesh: a Secret a Mesh's backend uses may not go while
// the Mesh exists, but may once the API server no longer has the Mesh,
// even when the store (a cache that has not seen the deletion yet) still
// holds it: the control plane deletes a Mesh's Secrets right after it.
func TestSecretOfDeletedMesh(t *testing.T) {
	mgr := newManager(t)
	// The Mesh as the store holds it (written directly: its backend's CA
	// is not there to be prepared).
	mesh := mustDecode(t, `type: Mesh
name: default
mtls:
  enabledBackend: pca
  backends:
  - {name: pca, type: acmpca, conf: {arn: "arn:aws:acm-pca:region:account:certificate-authority/1", caCert: {secret: sec-1}}}
`)
	rec, err := resources.ToRecord(mesh)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Upsert(t.Context(), mgr.Store(), rec); err != nil {
		t.Fatal(err)
	}
	del := admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Secret"}, Namespace: "meshca-system", Name: "sec-1",
		Operation: admissionv1.Delete,
		OldObject: runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"Secret","type":"system.kuma.io/secret","metadata":{"name":"sec-1","labels":{"kuma.io/mesh":"default"}},"data":{"value":"aGk="}}`)}}
	for _, tc := range []struct {
		exists  func(context.Context, string) (bool, error)
		allowed bool
	}{
		{nil, false},
		{func(context.Context, string) (bool, error) { return true, nil }, false},
		{func(context.Context, string) (bool, error) { return false, nil }, true},
		{func(context.Context, string) (bool, error) { return false, errors.New("API server unreachable") }, false},
	} {
		h := admission.NewHandler(mgr, admission.Options{SystemNamespace: "meshca-system", MeshExists: tc.exists, Logger: slog.New(slog.DiscardHandler)})
		resp := review(t, h, del)
		if resp.Allowed != tc.allowed {
			t.Errorf("MeshExists %v: allowed = %v, want %v (%+v)", tc.exists != nil, resp.Allowed, tc.allowed, resp.Result)
		}
		if !resp.Allowed && tc.exists != nil && resp.Result.Code == http.StatusBadRequest && !strings.Contains(resp.Result.Message, `secret "sec-1" is used by backend "pca" of mesh "default"`) {
			t.Errorf("message %q", resp.Result.Message)
		}
	}
}

// TestReadOnlyAPI: on Kubernetes the control plane's API refuses writes of
// kuma.io resources and Secrets (users make them with kubectl); the webhook,
// validating kubectl's writes, is not refused by that guard.
func TestReadOnlyAPI(t *testing.T) {
	st := memory.New()
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now}, controlplane.Backends())
	if err != nil {
		t.Fatal(err)
	}
	mgr := resources.NewManager(st, reg, resources.Options{ReadOnly: func(context.Context, store.Key) error {
		return fmt.Errorf("%w: managed with kubectl", resources.ErrReadOnly)
	}})
	h := admission.NewHandler(mgr, admission.Options{SystemNamespace: "meshca-system"})
	ok := `{"apiVersion":"kuma.io/v1alpha1","kind":"Mesh","metadata":{"name":"default"},"spec":{"mtls":{"enabledBackend":"b","backends":[{"name":"b","type":"builtin"}]}}}`
	if resp := review(t, h, meshRequest(admissionv1.Create, ok)); !resp.Allowed {
		t.Errorf("valid Mesh denied: %+v", resp.Result)
	}
	bad := `{"apiVersion":"kuma.io/v1alpha1","kind":"Mesh","metadata":{"name":"default"},"spec":{"mtls":{"enabledBackend":"c"}}}`
	if resp := review(t, h, meshRequest(admissionv1.Create, bad)); resp.Allowed || len(resp.Result.Details.Causes) != 1 || resp.Result.Details.Causes[0].Field != "spec.mtls.enabledBackend" {
		t.Errorf("invalid Mesh: %+v", resp.Result)
	}
	del := meshRequest(admissionv1.Delete, "")
	del.Object = runtime.RawExtension{}
	if resp := review(t, h, del); !resp.Allowed {
		t.Errorf("Mesh deletion denied: %+v", resp.Result)
	}
}

// TestRecheck: a Secret of a Mesh the store does not show yet is allowed
// once it does within Options.RecheckFor, and refused when it never does;
// a structurally invalid one is refused without waiting for anything.
func TestRecheck(t *testing.T) {
	mgr := newManager(t)
	h := admission.NewHandler(mgr, admission.Options{SystemNamespace: "meshca-system", RecheckFor: 30 * time.Second})
	sec := func(mesh, value string) admissionv1.AdmissionRequest {
		return admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Secret"}, Namespace: "meshca-system", Name: "s",
			Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"Secret","type":"system.kuma.io/secret",
				"metadata":{"name":"s","labels":{"kuma.io/mesh":"` + mesh + `"}},"data":{"value":"` + value + `"}}`)}}
	}
	// The Mesh reaches the store while the review waits.
	reviewed := make(chan *admissionv1.AdmissionResponse, 1)
	go func() { reviewed <- review(t, h, sec("late", "aGk=")) }()
	time.Sleep(300 * time.Millisecond)
	if _, err := mgr.Apply(t.Context(), mustDecode(t, "type: Mesh\nname: late\n"), resources.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if resp := <-reviewed; !resp.Allowed {
		t.Errorf("Secret of a Mesh the store showed late: %+v", resp.Result)
	}
	// Invalid on its own: refused at once (a 30 s recheck would time the
	// test out).
	done := make(chan *admissionv1.AdmissionResponse, 1)
	go func() { done <- review(t, h, sec("late", "not base64!")) }()
	select {
	case resp := <-done:
		if resp.Allowed || !strings.Contains(resp.Result.Message, "data.value: not valid base64") {
			t.Errorf("invalid Secret: %+v", resp.Result)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a structurally invalid Secret waited for the store")
	}
	// A Mesh that never comes: refused once the recheck time is over.
	short := admission.NewHandler(mgr, admission.Options{SystemNamespace: "meshca-system", RecheckFor: 200 * time.Millisecond})
	if resp := review(t, short, sec("never", "aGk=")); resp.Allowed || !strings.Contains(resp.Result.Message, `mesh "never" does not exist`) {
		t.Errorf("Secret of a missing Mesh: %+v", resp.Result)
	}
}
