package crd

import (
	"bytes"
	"fmt"

	"sigs.k8s.io/yaml"

	"meshca/pkg/api"
)

// Group and Version of meshca's custom resources, as Kuma's.
const (
	Group   = "kuma.io"
	Version = "v1alpha1"
)

// Resource describes one custom resource kind.
type Resource struct {
	Kind       string
	Plural     string
	Singular   string
	Namespaced bool
	// MeshScoped resources carry a top-level `mesh` field (Kuma's form).
	MeshScoped bool
	Categories []string
}

// Resources lists the kinds meshca keeps as custom resources: every API
// type except the two kinds of Secret.
func Resources() []Resource {
	return []Resource{
		{Kind: api.TypeMesh, Plural: "meshes", Singular: "mesh", Categories: []string{"kuma"}},
		{Kind: api.TypeDataplane, Plural: "dataplanes", Singular: "dataplane", Namespaced: true, MeshScoped: true, Categories: []string{"kuma"}},
		{Kind: api.TypeAccessRole, Plural: "accessroles", Singular: "accessrole", Categories: []string{"kuma"}},
		{Kind: api.TypeAccessRoleBinding, Plural: "accessrolebindings", Singular: "accessrolebinding", Categories: []string{"kuma"}},
	}
}

// Name is the CRD's metadata.name, <plural>.<group>.
func (r Resource) Name() string { return r.Plural + "." + Group }

// Definition returns the apiextensions.k8s.io/v1 CustomResourceDefinition
// of r as an object ready to marshal.
func (r Resource) Definition() map[string]any {
	scope := "Cluster"
	if r.Namespaced {
		scope = "Namespaced"
	}
	props := map[string]any{
		"apiVersion": map[string]any{"type": "string"},
		"kind":       map[string]any{"type": "string"},
		"metadata":   map[string]any{"type": "object"},
		// meshca decodes spec strictly and answers with field paths, as
		// its API does; a CRD schema would repeat that in a second language.
		"spec": map[string]any{
			"type":                                 "object",
			"x-kubernetes-preserve-unknown-fields": true,
		},
	}
	columns := []any{}
	if r.MeshScoped {
		props["mesh"] = map[string]any{"type": "string", "description": "The mesh the resource belongs to."}
		columns = append(columns, map[string]any{"name": "Mesh", "type": "string", "jsonPath": ".mesh"})
	}
	columns = append(columns, map[string]any{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
	return map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata": map[string]any{
			"name":   r.Name(),
			"labels": map[string]any{"app.kubernetes.io/part-of": "meshca"},
		},
		"spec": map[string]any{
			"group": Group,
			"names": map[string]any{
				"kind":       r.Kind,
				"listKind":   r.Kind + "List",
				"plural":     r.Plural,
				"singular":   r.Singular,
				"categories": r.Categories,
			},
			"scope": scope,
			"versions": []any{map[string]any{
				"name":                     Version,
				"served":                   true,
				"storage":                  true,
				"additionalPrinterColumns": columns,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type":       "object",
					"properties": props,
				}},
			}},
		},
	}
}

// Manifest returns every CRD of Resources as one multi-document YAML, for
// `kubectl apply -f -`.
func Manifest() ([]byte, error) {
	var buf bytes.Buffer
	for _, r := range Resources() {
		b, err := yaml.Marshal(r.Definition())
		if err != nil {
			return nil, fmt.Errorf("CRD %s: %w", r.Name(), err)
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return buf.Bytes(), nil
}
