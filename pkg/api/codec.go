package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// Form is the shape a document was written in.
type Form int

const (
	// FormUniversal is Kuma's flat form: `type`, `name`, `mesh` and the spec fields.
	FormUniversal Form = iota + 1
	// FormKubernetes is `apiVersion`, `kind`, `metadata`, `spec`.
	FormKubernetes
)

// Kubernetes-form constants, as Kuma uses them.
const (
	KubeAPIVersion        = "kuma.io/v1alpha1"
	KubeSecretType        = "system.kuma.io/secret"
	KubeGlobalSecretType  = "system.kuma.io/global-secret"
	KubeMeshLabel         = "kuma.io/mesh"
	kubeCoreV1            = "v1"
	kubeDefaultSecretMesh = "default"
)

// Document is one decoded resource and where it came from.
type Document struct {
	Index    int // 1-based position in the input
	Form     Form
	Resource Resource
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// DecodeDocuments parses multi-document YAML or JSON, Universal or Kubernetes
// form. Unknown fields are errors that name the field. Empty documents are
// skipped. Structural validation is not done here: call Validate.
func DecodeDocuments(data []byte) ([]Document, error) {
	var docs []Document
	for i, part := range docSeparator.Split(string(data), -1) {
		if isBlankYAML(part) {
			continue
		}
		res, form, err := DecodeOne([]byte(part))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		docs = append(docs, Document{Index: i + 1, Form: form, Resource: res})
	}
	if len(docs) == 0 {
		return nil, errors.New("no resources in input")
	}
	return docs, nil
}

func isBlankYAML(s string) bool {
	for _, line := range strings.Split(s, "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

// DecodeOne parses a single YAML or JSON document.
func DecodeOne(data []byte) (Resource, Form, error) {
	dup := &ValidationError{}
	DuplicateYAMLKeys(dup, data, "")
	if err := dup.OrNil(); err != nil {
		return nil, 0, err
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, 0, fmt.Errorf("not valid YAML or JSON: %w", err)
	}
	var head map[string]json.RawMessage
	if err := json.Unmarshal(js, &head); err != nil {
		return nil, 0, errors.New("a resource must be a YAML or JSON object")
	}
	if _, ok := head["kind"]; ok {
		r, err := decodeKubernetes(head)
		return r, FormKubernetes, err
	}
	if _, ok := head["apiVersion"]; ok {
		return nil, 0, FieldErr("kind", "must be set in the Kubernetes form")
	}
	r, err := DecodeUniversal(js)
	return r, FormUniversal, err
}

// DecodeUniversal parses the Universal JSON form of a resource.
func DecodeUniversal(js []byte) (Resource, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return nil, FieldErr("type", "must be a string")
	}
	if head.Type == "" {
		return nil, FieldErr("type", "must be set (Universal form) or use apiVersion/kind (Kubernetes form)")
	}
	d, err := DescriptorOf(head.Type)
	if err != nil {
		return nil, FieldErr("type", "%v", err)
	}
	r := d.New()
	if err := DecodeStrict(js, r, ""); err != nil {
		return nil, err
	}
	return r, nil
}

type kubeMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Fields a `kubectl get -o yaml` adds; accepted and ignored.
	UID               string          `json:"uid,omitempty"`
	ResourceVersion   string          `json:"resourceVersion,omitempty"`
	Generation        int64           `json:"generation,omitempty"`
	CreationTimestamp json.RawMessage `json:"creationTimestamp,omitempty"`
	OwnerReferences   json.RawMessage `json:"ownerReferences,omitempty"`
	ManagedFields     json.RawMessage `json:"managedFields,omitempty"`
}

type kubeObject struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   kubeMeta        `json:"metadata"`
	Spec       json.RawMessage `json:"spec,omitempty"`
	Mesh       string          `json:"mesh,omitempty"` // Kuma puts a Dataplane's mesh beside spec
	// core/v1 Secret
	Type       string            `json:"type,omitempty"`
	Data       map[string]string `json:"data,omitempty"`
	StringData map[string]string `json:"stringData,omitempty"`
	Status     json.RawMessage   `json:"status,omitempty"`
}

func decodeKubernetes(head map[string]json.RawMessage) (Resource, error) {
	js, _ := json.Marshal(head)
	var o kubeObject
	if err := DecodeStrict(js, &o, ""); err != nil {
		return nil, err
	}
	if o.Metadata.Name == "" {
		return nil, FieldErr("metadata.name", "must not be empty")
	}
	switch o.Kind {
	case "Secret":
		if o.APIVersion != kubeCoreV1 {
			return nil, FieldErr("apiVersion", "must be %q for kind Secret, got %q", kubeCoreV1, o.APIVersion)
		}
		return decodeKubeSecret(o)
	case TypeMesh, TypeDataplane, TypeAccessRole, TypeAccessRoleBinding:
		if o.APIVersion != KubeAPIVersion {
			return nil, FieldErr("apiVersion", "must be %q for kind %s, got %q", KubeAPIVersion, o.Kind, o.APIVersion)
		}
	default:
		return nil, FieldErr("kind", "unsupported kind %q: must be Mesh, Dataplane, Secret, AccessRole or AccessRoleBinding", o.Kind)
	}
	if o.Type != "" || o.Data != nil || o.StringData != nil {
		return nil, FieldErr("", "fields type/data/stringData belong to kind Secret, not %s", o.Kind)
	}
	meta := Meta{Type: o.Kind, Name: o.Metadata.Name, Labels: o.Metadata.Labels}
	spec := o.Spec
	if len(spec) == 0 || string(spec) == "null" {
		spec = []byte("{}")
	}
	switch o.Kind {
	case TypeMesh:
		if o.Mesh != "" {
			return nil, FieldErr("mesh", "must be empty: a Mesh belongs to no mesh")
		}
		m := &Mesh{Meta: meta}
		if err := DecodeStrict(spec, &m.MeshSpec, "spec"); err != nil {
			return nil, err
		}
		return m, nil
	case TypeAccessRole, TypeAccessRoleBinding:
		return decodeKubeAccess(o.Kind, meta, o.Mesh, spec)
	default:
		meta.Mesh = o.Mesh
		if meta.Mesh == "" {
			meta.Mesh = o.Metadata.Labels[KubeMeshLabel]
		}
		if meta.Mesh == "" {
			meta.Mesh = kubeDefaultSecretMesh
		}
		d := &Dataplane{Meta: meta}
		if err := DecodeStrict(spec, &d.DataplaneSpec, "spec"); err != nil {
			return nil, err
		}
		return d, nil
	}
}

func decodeKubeSecret(o kubeObject) (Resource, error) {
	if len(o.Spec) > 0 || o.Mesh != "" {
		return nil, FieldErr("", "a Secret has no spec or mesh field: put the mesh in label %q", KubeMeshLabel)
	}
	if len(o.StringData) > 0 {
		return nil, FieldErr("stringData", "not supported: put the base64 bytes in data.value")
	}
	for k := range o.Data {
		if k != "value" {
			return nil, FieldErr("data."+k, "unknown key: a Kuma secret keeps its bytes in data.value")
		}
	}
	value, ok := o.Data["value"]
	if !ok {
		return nil, FieldErr("data.value", "must be set")
	}
	meta := Meta{Name: o.Metadata.Name, Labels: o.Metadata.Labels}
	switch o.Type {
	case KubeSecretType:
		meta.Type = TypeSecret
		meta.Mesh = o.Metadata.Labels[KubeMeshLabel]
		if meta.Mesh == "" {
			meta.Mesh = kubeDefaultSecretMesh
		}
		return &Secret{Meta: meta, Data: value}, nil
	case KubeGlobalSecretType:
		meta.Type = TypeGlobalSecret
		return &GlobalSecret{Meta: meta, Data: value}, nil
	default:
		return nil, FieldErr("type", "must be %q or %q, got %q", KubeSecretType, KubeGlobalSecretType, o.Type)
	}
}

// MarshalYAML renders a resource in the Universal form as YAML.
func MarshalYAML(r Resource) ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "a list"
	case reflect.Map, reflect.Struct, reflect.Pointer:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}
