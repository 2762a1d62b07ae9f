package api

import (
	"fmt"
	"slices"
	"sort"
)

// Descriptor tells how a resource type is addressed.
type Descriptor struct {
	Type       string
	MeshScoped bool
	// Path is the plural used in HTTP paths and by meshctl (`/meshes/{mesh}/secrets`).
	Path string
	// Singular is the name meshctl accepts for one resource (`get mesh NAME`).
	Singular string
	New      func() Resource
}

// Descriptors lists every resource type the API serves.
func Descriptors() []Descriptor {
	return []Descriptor{
		{Type: TypeMesh, Path: "meshes", Singular: "mesh", New: func() Resource { return &Mesh{} }},
		{Type: TypeSecret, MeshScoped: true, Path: "secrets", Singular: "secret", New: func() Resource { return &Secret{} }},
		{Type: TypeGlobalSecret, Path: "global-secrets", Singular: "global-secret", New: func() Resource { return &GlobalSecret{} }},
		{Type: TypeDataplane, MeshScoped: true, Path: "dataplanes", Singular: "dataplane", New: func() Resource { return &Dataplane{} }},
		{Type: TypeAccessRole, Path: "access-roles", Singular: "access-role", New: func() Resource { return &AccessRole{} }},
		{Type: TypeAccessRoleBinding, Path: "access-role-bindings", Singular: "access-role-binding", New: func() Resource { return &AccessRoleBinding{} }},
	}
}

// DescriptorOf returns the descriptor of a type name.
func DescriptorOf(typ string) (Descriptor, error) {
	for _, d := range Descriptors() {
		if d.Type == typ {
			return d, nil
		}
	}
	return Descriptor{}, fmt.Errorf("unknown resource type %q: must be one of %s", typ, typeNames())
}

// DescriptorByPath finds a type by its plural or singular name.
func DescriptorByPath(p string) (Descriptor, bool) {
	for _, d := range Descriptors() {
		if d.Path == p || d.Singular == p {
			return d, true
		}
	}
	return Descriptor{}, false
}

func typeNames() string {
	var names []string
	for _, d := range Descriptors() {
		names = append(names, d.Type)
	}
	return fmt.Sprint(names)
}

// CA backend types meshca knows of.
const (
	BackendBuiltin     = "builtin"
	BackendProvided    = "provided"
	BackendVault       = "vault"
	BackendACMPCA      = "acmpca"
	BackendCertManager = "certmanager"
)

// KnownBackendTypes lists the mTLS backend types of Kong Mesh.
func KnownBackendTypes() []string {
	return []string{BackendBuiltin, BackendProvided, BackendVault, BackendACMPCA, BackendCertManager}
}

// IsKnownBackendType reports whether t is one of KnownBackendTypes.
func IsKnownBackendType(t string) bool { return slices.Contains(KnownBackendTypes(), t) }

func sortStrings(s []string) { sort.Strings(s) }
