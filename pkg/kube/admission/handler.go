package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshca/pkg/api"
	"meshca/pkg/resources"
)

// Path is where the webhook is served.
const Path = "/validate"

// maxReviewBytes bounds a request body: an AdmissionReview carries the object
// and its old version, each at most ~1.5 MiB (the API server's limit).
const maxReviewBytes = 8 << 20

// Validator is what the webhook asks; *resources.Manager is one. Apply is
// called with DryRun (and Synced) only.
type Validator interface {
	Apply(ctx context.Context, r api.Resource, opts resources.ApplyOptions) (bool, error)
	CheckDelete(ctx context.Context, typ, mesh, name string) error
}

// Options configure a Handler.
type Options struct {
	// SystemNamespace holds meshca's Secrets; Secrets elsewhere are not
	// meshca's and are allowed.
	SystemNamespace string
	// ExemptUser, when set, is the control plane's own Kubernetes user: its
	// writes were validated by its resource manager before they were made,
	// and are allowed unchecked (as Kuma exempts its control plane's
	// ServiceAccount), so that, say, the Secrets it deletes with their Mesh
	// are not refused by a cache that still sees the Mesh.
	ExemptUser string
	// MeshExists, when set, is asked before a Secret's deletion is checked
	// against its Mesh: a Mesh the API server no longer has uses nothing,
	// whatever a cache that has not seen its deletion yet says (the
	// control plane deletes a Mesh's Secrets right after the Mesh).
	MeshExists func(ctx context.Context, name string) (bool, error)
	// RecheckFor, when positive, is how long a write that passes its own
	// structural checks but is refused for what the store holds (a Secret
	// or Mesh it names is not there) is checked again before being refused:
	// a store that reads through a cache (informers) may not show yet what
	// kubectl wrote a moment before, as a Secret and the Mesh using it
	// applied from one file. Invalid writes of that kind are refused that
	// much later.
	RecheckFor time.Duration
	Logger     *slog.Logger
}

// Handler is the webhook's http.Handler.
type Handler struct {
	v    Validator
	opts Options
	log  *slog.Logger
}

// NewHandler returns a Handler validating with v.
func NewHandler(v Validator, opts Options) *Handler {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Handler{v: v, opts: opts, log: log}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		http.Error(w, "Content-Type must be application/json, got "+ct, http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) > maxReviewBytes {
		http.Error(w, fmt.Sprintf("AdmissionReview larger than %d bytes", maxReviewBytes), http.StatusRequestEntityTooLarge)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "not an AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(w, "AdmissionReview has no request", http.StatusBadRequest)
		return
	}
	resp := h.Review(r.Context(), review.Request)
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	if out.APIVersion == "" {
		out.APIVersion, out.Kind = admissionv1.SchemeGroupVersion.String(), "AdmissionReview"
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// Review answers one admission request.
func (h *Handler) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if h.opts.ExemptUser != "" && req.UserInfo.Username == h.opts.ExemptUser {
		return allowed()
	}
	k := req.Kind
	switch {
	case k.Group == "" && k.Kind == "Secret":
		return h.reviewSecret(ctx, req)
	case k.Group == "kuma.io":
		return h.reviewKuma(ctx, req)
	}
	return allowed() // not meshca's: the configuration should not send it
}

func (h *Handler) reviewKuma(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	switch req.Operation {
	case admissionv1.Create, admissionv1.Update:
		return h.validateApply(ctx, req)
	case admissionv1.Delete:
		if req.Kind.Kind != api.TypeMesh {
			return allowed() // the API refuses no other deletion
		}
		return h.denyErr(req, api.TypeMesh, h.v.CheckDelete(ctx, api.TypeMesh, "", req.Name))
	}
	return allowed()
}

func (h *Handler) reviewSecret(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Namespace != h.opts.SystemNamespace {
		return allowed()
	}
	raw := req.Object.Raw
	if req.Operation == admissionv1.Delete {
		raw = req.OldObject.Raw
	}
	var s struct {
		Type     string            `json:"type"`
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return h.denyErr(req, "Secret", fmt.Errorf("the Secret cannot be read: %w", err))
	}
	if s.Type != api.KubeSecretType && s.Type != api.KubeGlobalSecretType {
		return allowed()
	}
	switch req.Operation {
	case admissionv1.Create, admissionv1.Update:
		return h.validateApply(ctx, req)
	case admissionv1.Delete:
		if s.Type != api.KubeSecretType {
			return allowed() // nothing may use a global secret yet
		}
		mesh := s.Metadata.Labels[api.KubeMeshLabel]
		if mesh == "" {
			mesh = "default" // as pkg/api decodes a Secret without the label
		}
		if h.opts.MeshExists != nil {
			exists, err := h.opts.MeshExists(ctx, mesh)
			if err != nil {
				return h.denyErr(req, api.TypeSecret, err)
			}
			if !exists {
				return allowed()
			}
		}
		return h.denyErr(req, api.TypeSecret, h.v.CheckDelete(ctx, api.TypeSecret, mesh, req.Name))
	}
	return allowed()
}

// validateApply converts the object to meshca's resource and dry-runs its
// apply through the validator, as the API's PUT does.
func (h *Handler) validateApply(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	js, deleting, err := apiForm(req.Object.Raw)
	if err != nil {
		return h.denyErr(req, req.Kind.Kind, err)
	}
	if deleting {
		// Finalizers being removed from an object on its way out.
		return allowed()
	}
	r, _, err := api.DecodeOne(js)
	if err != nil {
		// The codec's paths are the Kubernetes form's already.
		return h.denyErr(req, req.Kind.Kind, err)
	}
	meta := r.GetMeta()
	if meta.Type == api.TypeDataplane && req.Namespace != "" {
		// The store's name of a namespaced Dataplane, as Kuma's:
		// <name>.<namespace>.
		meta.Name += "." + req.Namespace
	}
	typ := meta.Type
	// The resource's own structure first: no store can change that verdict.
	if err := r.Validate(); err != nil {
		return h.denyErr(req, typ, kubeFields(typ, err))
	}
	deadline := time.Now().Add(h.opts.RecheckFor)
	for {
		// Synced: the write is kubectl's, to the Kubernetes API, where the
		// control plane's own API may refuse writes of these resources.
		_, err := h.v.Apply(ctx, r, resources.ApplyOptions{DryRun: true, Synced: true})
		var ve *api.ValidationError
		if err == nil || !errors.As(err, &ve) || !time.Now().Before(deadline) {
			return h.denyErr(req, typ, kubeFields(typ, err))
		}
		// Refused for what the store holds (a Mesh or Secret it does not
		// show): it may be behind what kubectl wrote a moment ago.
		select {
		case <-ctx.Done():
			return h.denyErr(req, typ, kubeFields(typ, err))
		case <-time.After(recheckInterval):
		}
	}
}

// recheckInterval spaces the checks of Options.RecheckFor.
const recheckInterval = 100 * time.Millisecond

// apiForm rewrites an object as the API server stored it into the document
// pkg/api's Kubernetes codec reads: metadata keeps only what the codec
// accepts (name, namespace, labels, annotations); what the API server adds
// (finalizers, generateName, ...) is meshca's concern nowhere. deleting
// reports a deletionTimestamp.
func apiForm(raw []byte) (js []byte, deleting bool, err error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, false, fmt.Errorf("the object is not a JSON object: %w", err)
	}
	var meta metav1.ObjectMeta
	if m, ok := obj["metadata"]; ok {
		if err := json.Unmarshal(m, &meta); err != nil {
			return nil, false, api.FieldErr("metadata", "%v", err)
		}
	}
	type kubeMeta struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace,omitempty"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	b, err := json.Marshal(kubeMeta{Name: meta.Name, Namespace: meta.Namespace, Labels: meta.Labels, Annotations: meta.Annotations})
	if err != nil {
		return nil, false, err
	}
	obj["metadata"] = b
	delete(obj, "immutable") // a core/v1 Secret's; meshca's Secrets may be
	js, err = json.Marshal(obj)
	return js, meta.DeletionTimestamp != nil, err
}

// kubeFields maps the Universal field paths of validation errors to the
// Kubernetes form's, as meshctl does for a Kubernetes-form file.
func kubeFields(typ string, err error) error {
	var ve *api.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	out := &api.ValidationError{}
	for _, c := range ve.Causes {
		out.Causes = append(out.Causes, api.FieldError{Field: api.KubeField(typ, c.Field), Message: c.Message})
	}
	return out
}

func allowed() *admissionv1.AdmissionResponse { return &admissionv1.AdmissionResponse{Allowed: true} }

// denyErr answers err: allowed when nil; otherwise denied with a status the
// API server passes to the client (kubectl prints its message and causes).
func (h *Handler) denyErr(req *admissionv1.AdmissionRequest, kind string, err error) *admissionv1.AdmissionResponse {
	if err == nil {
		return allowed()
	}
	st := &metav1.Status{Status: metav1.StatusFailure, Details: &metav1.StatusDetails{
		Name: req.Name, Group: req.Kind.Group, Kind: kind,
	}}
	var (
		ve  *api.ValidationError
		iue *resources.InUseError
	)
	switch {
	case errors.As(err, &ve):
		st.Code, st.Reason = http.StatusUnprocessableEntity, metav1.StatusReasonInvalid
		st.Message = fmt.Sprintf("%s %q is not valid: %s", kind, req.Name, ve.Error())
		for _, c := range ve.Causes {
			st.Details.Causes = append(st.Details.Causes, metav1.StatusCause{Type: metav1.CauseTypeFieldValueInvalid, Field: c.Field, Message: c.Message})
		}
	case errors.As(err, &iue):
		// The API answers 400 "Resource is in use".
		st.Code, st.Reason, st.Message = http.StatusBadRequest, metav1.StatusReasonBadRequest, iue.Msg
	default:
		// The store could not be read, say: fail closed, as the
		// configuration's failurePolicy does when no answer comes.
		h.log.Warn("admission: could not validate", "operation", req.Operation, "kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name, "error", err)
		st.Code, st.Reason = http.StatusInternalServerError, metav1.StatusReasonInternalError
		st.Message = fmt.Sprintf("meshca could not validate %s %q: %v", kind, req.Name, err)
	}
	return &admissionv1.AdmissionResponse{Allowed: false, Result: st}
}
