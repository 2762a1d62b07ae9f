package kube

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/cache"

	"meshca/pkg/api"
	"meshca/pkg/kube/crd"
	"meshca/pkg/store"
)

// Secret types and the labels and annotations of the objects this store
// writes.
const (
	// SecretTypeMesh and SecretTypeGlobal are Kuma's Secret types.
	SecretTypeMesh   = api.KubeSecretType
	SecretTypeGlobal = api.KubeGlobalSecretType
	// SecretTypeState is the type of the Secrets holding meshca's own
	// records (issued identities, server CAs, leader term, insights, …).
	SecretTypeState = "meshca.io/state"

	// LabelMesh is Kuma's mesh label (on Secrets).
	LabelMesh = api.KubeMeshLabel
	// LabelType names the record type of a state Secret.
	LabelType = "meshca.io/type"
	// LabelManagedBy marks the Secrets this store writes for itself.
	LabelManagedBy = "app.kubernetes.io/managed-by"

	// Annotations of state Secrets (and of custom resources stored under a
	// derived name): the record's key as given, which the object name
	// cannot always carry.
	AnnotationType   = "meshca.io/type"
	AnnotationMesh   = "meshca.io/mesh"
	AnnotationName   = "meshca.io/name"
	AnnotationLabels = "meshca.io/labels"
	// AnnotationCreated and AnnotationModified keep a state record's times
	// to the nanosecond (metadata.creationTimestamp has seconds only).
	AnnotationCreated  = "meshca.io/created-at"
	AnnotationModified = "meshca.io/modified-at"

	// annotationObserved is set, in the informers' copies only, to the
	// time of the object's last write, read from its managedFields before
	// they are dropped (they are most of a small object's size). It is
	// never sent.
	annotationObserved = "meshca.io/observed-last-write"

	// dataSpec and dataValue are the data keys of state and Kuma Secrets.
	dataSpec  = "spec"
	dataValue = "value"

	// defaultMesh is Kuma's mesh of a Dataplane that names none.
	defaultMesh = "default"

	// labelZone marks a record a zone synced to its global control plane.
	labelZone = "kuma.io/zone"
)

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// class says how records of a type are kept.
type class int

const (
	classCustom class = iota + 1 // a kuma.io custom resource
	classKumaSecret
	classState
)

// source is one informed set of objects: a custom resource (every
// namespace) or the Secrets of one type in the system namespace.
type source struct {
	idx        int
	gvr        schema.GroupVersionResource
	namespace  string // "" for every namespace
	secretType string // Secrets only: the type this source informs
	res        *crd.Resource
}

func (s *source) String() string {
	if s.res != nil {
		return s.res.Name()
	}
	return "secrets of type " + s.secretType + " in namespace " + s.namespace
}

// location is where one record lives.
type location struct {
	src       *source
	namespace string
	name      string
	// derived is set when the object name is derived from the key (a
	// state record, or a custom resource whose name is not of the form
	// <name>.<namespace>): the key is then in the annotations.
	derived bool
}

func (l location) String() string {
	what := l.src.gvr.Resource
	if l.src.gvr.Group != "" {
		what += "." + l.src.gvr.Group
	}
	if l.namespace == "" {
		return fmt.Sprintf("%s %q", what, l.name)
	}
	return fmt.Sprintf("%s %q in namespace %q", what, l.name, l.namespace)
}

// mapping knows where every record type lives.
type mapping struct {
	systemNS string
	custom   map[string]*source // by record type (kind)
	secrets  map[string]*source // by Secret type
	sources  []*source
}

func newMapping(systemNS string) *mapping {
	m := &mapping{systemNS: systemNS, custom: map[string]*source{}, secrets: map[string]*source{}}
	for _, r := range crd.Resources() {
		src := &source{idx: len(m.sources), gvr: schema.GroupVersionResource{Group: crd.Group, Version: crd.Version, Resource: r.Plural}, res: &r}
		m.custom[r.Kind] = src
		m.sources = append(m.sources, src)
	}
	for _, t := range []string{SecretTypeMesh, SecretTypeGlobal, SecretTypeState} {
		src := &source{idx: len(m.sources), gvr: secretsGVR, namespace: systemNS, secretType: t}
		m.secrets[t] = src
		m.sources = append(m.sources, src)
	}
	return m
}

func (m *mapping) classOf(typ string) class {
	switch {
	case m.custom[typ] != nil:
		return classCustom
	case typ == api.TypeSecret || typ == api.TypeGlobalSecret:
		return classKumaSecret
	default:
		return classState
	}
}

// locate returns where the record of key is created, or why it cannot be.
// A namespaced custom resource named <name>.<namespace> is created there,
// unless a zone synced it (label kuma.io/zone): on a global control plane
// the suffix is the zone's name, not a namespace, and the record is kept
// in the system namespace, as Kuma's global keeps zones' resources.
func (m *mapping) locate(key store.Key, labels map[string]string) (location, error) {
	switch m.classOf(key.Type) {
	case classCustom:
		src := m.custom[key.Type]
		if !src.res.MeshScoped && key.Mesh != "" {
			return location{}, fmt.Errorf("%s: a %s belongs to no mesh", key, key.Type)
		}
		if !src.res.Namespaced {
			return location{src: src, name: key.Name}, nil
		}
		if name, ns, ok := splitNamespaced(key.Name); ok && labels[labelZone] == "" {
			return location{src: src, namespace: ns, name: name}, nil
		}
		return location{src: src, namespace: m.systemNS, name: derivedName(key, false), derived: true}, nil
	case classKumaSecret:
		if key.Type == api.TypeSecret {
			if key.Mesh == "" {
				return location{}, fmt.Errorf("%s: a Secret belongs to a mesh", key)
			}
			return location{src: m.secrets[SecretTypeMesh], namespace: m.systemNS, name: key.Name}, nil
		}
		if key.Mesh != "" {
			return location{}, fmt.Errorf("%s: a GlobalSecret belongs to no mesh", key)
		}
		return location{src: m.secrets[SecretTypeGlobal], namespace: m.systemNS, name: key.Name}, nil
	default:
		if errs := validation.IsValidLabelValue(key.Type); len(errs) > 0 || key.Type == "" {
			return location{}, fmt.Errorf("%s: record type is not a valid label value: %s", key, strings.Join(errs, "; "))
		}
		return location{src: m.secrets[SecretTypeState], namespace: m.systemNS, name: derivedName(key, true), derived: true}, nil
	}
}

// splitNamespaced splits Kuma's <name>.<namespace> at the last dot, when
// both parts can be a Kubernetes object name and namespace.
func splitNamespaced(s string) (name, ns string, ok bool) {
	i := strings.LastIndexByte(s, '.')
	if i <= 0 {
		return "", "", false
	}
	name, ns = s[:i], s[i+1:]
	if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return "", "", false
	}
	return name, ns, true
}

// derivedName is a DNS-valid object name for key: a readable prefix and a
// hash of the whole key, so that distinct keys never share a name.
func derivedName(key store.Key, withType bool) string {
	sum := sha256.Sum256([]byte(key.Type + "\x00" + key.Mesh + "\x00" + key.Name))
	h := hex.EncodeToString(sum[:])[:12]
	readable := key.Name
	if withType {
		readable = key.Type + "-" + key.Mesh + "-" + key.Name
	}
	var b strings.Builder
	dash := true // no leading dash
	for _, r := range strings.ToLower(readable) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= 200 {
			break
		}
	}
	p := strings.TrimRight(b.String(), "-")
	if p == "" {
		return "r-" + h
	}
	return p + "-" + h
}

// object builds the Kubernetes object of rec at loc, starting from base
// (the stored object, for an update; nil for a create) so that what the
// record does not model (annotations of others, owner references,
// finalizers) is kept.
func (m *mapping) object(loc location, rec store.Record, base *unstructured.Unstructured, now time.Time) (*unstructured.Unstructured, error) {
	var obj *unstructured.Unstructured
	if base != nil {
		obj = cleanCopy(base)
	} else {
		obj = &unstructured.Unstructured{Object: map[string]any{}}
		obj.SetName(loc.name)
		if loc.namespace != "" {
			obj.SetNamespace(loc.namespace)
		}
	}
	switch {
	case loc.src.res != nil:
		obj.SetAPIVersion(crd.Group + "/" + crd.Version)
		obj.SetKind(loc.src.res.Kind)
		spec, err := specObject(rec.Spec)
		if err != nil {
			return nil, fmt.Errorf("%s: spec: %w", rec.Key, err)
		}
		obj.Object["spec"] = spec
		if loc.src.res.MeshScoped {
			obj.Object["mesh"] = rec.Mesh
		}
		obj.SetLabels(copyLabels(rec.Labels))
		if loc.derived {
			ann := obj.GetAnnotations()
			if ann == nil {
				ann = map[string]string{}
			}
			ann[AnnotationName] = rec.Name
			ann[AnnotationMesh] = rec.Mesh
			obj.SetAnnotations(ann)
		}
	case loc.src.secretType == SecretTypeState:
		setSecret(obj, SecretTypeState)
		labels := map[string]string{LabelType: rec.Type, LabelManagedBy: "meshca"}
		if len(validation.IsValidLabelValue(rec.Mesh)) == 0 {
			labels[LabelMesh] = rec.Mesh
		}
		obj.SetLabels(labels)
		ann := obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[AnnotationType], ann[AnnotationMesh], ann[AnnotationName] = rec.Type, rec.Mesh, rec.Name
		delete(ann, AnnotationLabels)
		if len(rec.Labels) > 0 {
			b, err := json.Marshal(rec.Labels)
			if err != nil {
				return nil, err
			}
			ann[AnnotationLabels] = string(b)
		}
		if _, ok := ann[AnnotationCreated]; !ok || base == nil {
			ann[AnnotationCreated] = now.Format(time.RFC3339Nano)
		}
		ann[AnnotationModified] = now.Format(time.RFC3339Nano)
		obj.SetAnnotations(ann)
		obj.Object["data"] = map[string]any{dataSpec: base64.StdEncoding.EncodeToString(rec.Spec)}
	default: // Kuma Secret
		setSecret(obj, loc.src.secretType)
		value, err := secretValue(rec.Spec)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rec.Key, err)
		}
		labels := copyLabels(rec.Labels)
		if rec.Type == api.TypeSecret {
			if labels == nil {
				labels = map[string]string{}
			}
			labels[LabelMesh] = rec.Mesh
		}
		obj.SetLabels(labels)
		data := map[string]any{}
		if value != nil {
			data[dataValue] = *value
		}
		obj.Object["data"] = data
	}
	return obj, nil
}

func setSecret(obj *unstructured.Unstructured, typ string) {
	obj.SetAPIVersion("v1")
	obj.SetKind("Secret")
	obj.Object["type"] = typ
	delete(obj.Object, "stringData")
}

func copyLabels(l map[string]string) map[string]string {
	if len(l) == 0 {
		return nil
	}
	return maps.Clone(l)
}

// specObject decodes a record's spec for a custom resource: a JSON object
// (numbers kept exactly).
func specObject(spec []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(spec)) == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("must be a JSON object to be kept as a custom resource's spec: %w", err)
	}
	if v == nil {
		v = map[string]any{}
	}
	return v, nil
}

// secretValue reads the base64 bytes of a Secret record's spec, which is
// the Universal form without its meta ({"data":"<base64>"}, pkg/api), as
// every store keeps it. nil means no data.
func secretValue(spec []byte) (*string, error) {
	if len(bytes.TrimSpace(spec)) == 0 {
		return nil, nil
	}
	var s struct {
		Data *string `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf(`spec: a Secret's spec must be {"data":"<base64>"}: %w`, err)
	}
	if s.Data != nil {
		if _, err := base64.StdEncoding.DecodeString(*s.Data); err != nil {
			return nil, fmt.Errorf("spec.data: not base64: %w", err)
		}
	}
	return s.Data, nil
}

// record converts an object of src to the record it stores, or says why
// the object is not a record (a state Secret without its key).
func (m *mapping) record(src *source, obj *unstructured.Unstructured) (store.Record, error) {
	rv, err := parseVersion(obj.GetResourceVersion())
	if err != nil {
		return store.Record{}, err
	}
	rec := store.Record{Version: rv, CreationTime: obj.GetCreationTimestamp().UTC()}
	rec.ModificationTime = lastWrite(obj, rec.CreationTime)
	ann := obj.GetAnnotations()
	switch {
	case src.res != nil:
		rec.Type = src.res.Kind
		rec.Name = obj.GetName()
		if src.res.MeshScoped {
			rec.Mesh, _, _ = unstructured.NestedString(obj.Object, "mesh")
			if rec.Mesh == "" {
				rec.Mesh = defaultMesh
			}
		}
		if src.res.Namespaced {
			rec.Name += "." + obj.GetNamespace()
			if n, ok := ann[AnnotationName]; ok && obj.GetNamespace() == m.systemNS {
				rec.Name = n
			}
		}
		spec, ok := obj.Object["spec"]
		if !ok || spec == nil {
			spec = map[string]any{}
		}
		if rec.Spec, err = json.Marshal(spec); err != nil {
			return store.Record{}, fmt.Errorf("spec: %w", err)
		}
		rec.Labels = copyLabels(obj.GetLabels())
	case src.secretType == SecretTypeState:
		rec.Type, rec.Mesh, rec.Name = ann[AnnotationType], ann[AnnotationMesh], ann[AnnotationName]
		if rec.Type == "" || rec.Name == "" {
			return store.Record{}, fmt.Errorf("no %s and %s annotations", AnnotationType, AnnotationName)
		}
		if l := ann[AnnotationLabels]; l != "" {
			if err := json.Unmarshal([]byte(l), &rec.Labels); err != nil {
				return store.Record{}, fmt.Errorf("annotation %s: %w", AnnotationLabels, err)
			}
		}
		if t, err := time.Parse(time.RFC3339Nano, ann[AnnotationCreated]); err == nil {
			rec.CreationTime = t.UTC()
		}
		if t, err := time.Parse(time.RFC3339Nano, ann[AnnotationModified]); err == nil {
			rec.ModificationTime = t.UTC()
		}
		b64, _, _ := unstructured.NestedString(obj.Object, "data", dataSpec)
		if rec.Spec, err = base64.StdEncoding.DecodeString(b64); err != nil {
			return store.Record{}, fmt.Errorf("data.%s: %w", dataSpec, err)
		}
	default:
		rec.Name = obj.GetName()
		rec.Labels = copyLabels(obj.GetLabels())
		if src.secretType == SecretTypeMesh {
			rec.Type = api.TypeSecret
			rec.Mesh = rec.Labels[LabelMesh]
			if rec.Mesh == "" {
				rec.Mesh = defaultMesh
			}
			delete(rec.Labels, LabelMesh)
			if len(rec.Labels) == 0 {
				rec.Labels = nil
			}
		} else {
			rec.Type = api.TypeGlobalSecret
		}
		if v, ok, _ := unstructured.NestedString(obj.Object, "data", dataValue); ok {
			rec.Spec, _ = json.Marshal(map[string]string{"data": v})
		} else {
			rec.Spec = []byte("{}")
		}
	}
	return rec, nil
}

// lastWrite is when obj was last written: the latest of its managed
// fields' times (seconds), never before its creation.
func lastWrite(obj *unstructured.Unstructured, created time.Time) time.Time {
	last := created
	if t, err := time.Parse(time.RFC3339, obj.GetAnnotations()[annotationObserved]); err == nil && t.After(last) {
		last = t.UTC()
	}
	for _, f := range obj.GetManagedFields() {
		if f.Time != nil && f.Time.After(last) {
			last = f.Time.UTC()
		}
	}
	return last
}

// fieldRecord holds, in the informers' copies only, what the object
// converted to before slim dropped its payload. It is never sent.
const fieldRecord = "meshca.io/record"

// converted is the record of an informed object, or why it is none.
type converted struct {
	rec store.Record
	err error
}

// slim is the informers' transform for src. It converts each object to its
// record once, keeps that beside it, and drops what the record holds
// (spec, data) and the managedFields (keeping the time of the last write):
// the informers then hold little more than the objects' metadata, the
// records being in the store's index. The informers never copy their
// objects; the store copies them only through cleanCopy.
func (m *mapping) slim(src *source) cache.TransformFunc {
	return func(raw any) (any, error) {
		obj, ok := raw.(*unstructured.Unstructured)
		if !ok {
			return raw, nil
		}
		if _, done := obj.Object[fieldRecord]; done {
			return obj, nil
		}
		if len(obj.GetManagedFields()) > 0 {
			last := lastWrite(obj, obj.GetCreationTimestamp().Time)
			unstructured.RemoveNestedField(obj.Object, "metadata", "managedFields")
			ann := obj.GetAnnotations()
			if ann == nil {
				ann = map[string]string{}
			}
			ann[annotationObserved] = last.UTC().Format(time.RFC3339)
			obj.SetAnnotations(ann)
		}
		rec, err := m.record(src, obj)
		obj.Object[fieldRecord] = &converted{rec: rec, err: err}
		if err == nil {
			delete(obj.Object, "spec")
			delete(obj.Object, "data")
		}
		return obj, nil
	}
}

// recordOf is record for an object that may come from an informer.
func (m *mapping) recordOf(src *source, obj *unstructured.Unstructured) (store.Record, error) {
	if c, ok := obj.Object[fieldRecord].(*converted); ok {
		return c.rec, c.err
	}
	return m.record(src, obj)
}

// cleanCopy copies an object read (from the API server or an informer) to
// be written back: without managedFields (the server keeps them) and
// without what slim added. An informer's copy has no payload: object()
// puts it back from the record.
func cleanCopy(obj *unstructured.Unstructured) *unstructured.Unstructured {
	top := make(map[string]any, len(obj.Object))
	for k, v := range obj.Object {
		if k != fieldRecord {
			top[k] = v
		}
	}
	c := (&unstructured.Unstructured{Object: top}).DeepCopy()
	unstructured.RemoveNestedField(c.Object, "metadata", "managedFields")
	if ann := c.GetAnnotations(); ann != nil {
		if _, ok := ann[annotationObserved]; ok {
			delete(ann, annotationObserved)
			c.SetAnnotations(ann)
		}
	}
	return c
}

// parseVersion reads a resourceVersion as the record's version: the etcd
// revision of the object's last write, which only grows.
func parseVersion(rv string) (int64, error) {
	v, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("resourceVersion %q is not a positive integer: this store needs an API server backed by etcd, whose resource versions are revisions", rv)
	}
	return v, nil
}
