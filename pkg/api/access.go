package api

import (
	"fmt"
	"slices"
	"strings"
)

// Types of the role-based access resources (Kong Mesh's shapes).
const (
	TypeAccessRole        = "AccessRole"
	TypeAccessRoleBinding = "AccessRoleBinding"
)

// Access values an AccessRole rule may grant.
const (
	AccessCreate                 = "CREATE"
	AccessUpdate                 = "UPDATE"
	AccessDelete                 = "DELETE"
	AccessGet                    = "GET"
	AccessGenerateDataplaneToken = "GENERATE_DATAPLANE_TOKEN"
	AccessGenerateUserToken      = "GENERATE_USER_TOKEN"
	AccessGenerateZoneToken      = "GENERATE_ZONE_TOKEN"
	AccessViewSecretData         = "VIEW_SECRET_DATA"
)

// AccessValues lists every access value, in documentation order.
func AccessValues() []string {
	return []string{AccessCreate, AccessUpdate, AccessDelete, AccessGet, AccessGenerateDataplaneToken,
		AccessGenerateUserToken, AccessGenerateZoneToken, AccessViewSecretData}
}

// Subject types of an AccessRoleBinding.
const (
	SubjectUser  = "User"
	SubjectGroup = "Group"
)

// AccessRole is a named set of rules saying what may be done to which
// resources. It is global.
type AccessRole struct {
	Meta
	AccessRoleSpec
}

// AccessRoleSpec is the part of an AccessRole that the Kubernetes form keeps under `spec`.
type AccessRoleSpec struct {
	Rules []AccessRule `json:"rules"`
}

// AccessRule grants Access on resources of Types (all when empty) in Mesh
// (every mesh when empty) named Names (every name when empty).
type AccessRule struct {
	Types  []string `json:"types,omitempty"`
	Mesh   string   `json:"mesh,omitempty"`
	Names  []string `json:"names,omitempty"`
	Access []string `json:"access"`
}

// AccessRoleBinding gives Roles to Subjects. It is global.
type AccessRoleBinding struct {
	Meta
	AccessRoleBindingSpec
}

// AccessRoleBindingSpec is the part of an AccessRoleBinding that the Kubernetes form keeps under `spec`.
type AccessRoleBindingSpec struct {
	Subjects []Subject `json:"subjects"`
	Roles    []string  `json:"roles"`
}

// Subject is a user or a group, as named in user tokens.
type Subject struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

// Validate checks the AccessRole.
func (r *AccessRole) Validate() error {
	v := &ValidationError{}
	validateMeta(v, &r.Meta, false)
	if len(r.Rules) == 0 {
		v.Addf("rules", "must have at least one rule")
	}
	for i, rule := range r.Rules {
		p := fmt.Sprintf("rules[%d]", i)
		for j, t := range rule.Types {
			if _, err := DescriptorOf(t); err != nil {
				v.Addf(fmt.Sprintf("%s.types[%d]", p, j), "%v", err)
			}
		}
		if rule.Mesh != "" {
			ValidateName(v, p+".mesh", rule.Mesh)
		}
		for j, n := range rule.Names {
			ValidateName(v, fmt.Sprintf("%s.names[%d]", p, j), n)
		}
		if len(rule.Access) == 0 {
			v.Addf(p+".access", "must list at least one of %s", strings.Join(AccessValues(), ", "))
		}
		for j, a := range rule.Access {
			if !slices.Contains(AccessValues(), a) {
				v.Addf(fmt.Sprintf("%s.access[%d]", p, j), "unknown access %q: must be one of %s", a, strings.Join(AccessValues(), ", "))
			}
		}
	}
	return v.OrNil()
}

// Validate checks the AccessRoleBinding.
func (b *AccessRoleBinding) Validate() error {
	v := &ValidationError{}
	validateMeta(v, &b.Meta, false)
	if len(b.Subjects) == 0 {
		v.Addf("subjects", "must have at least one subject")
	}
	for i, s := range b.Subjects {
		p := fmt.Sprintf("subjects[%d]", i)
		if s.Type != SubjectUser && s.Type != SubjectGroup {
			v.Addf(p+".type", "must be %s or %s, got %q", SubjectUser, SubjectGroup, s.Type)
		}
		if s.Name == "" {
			v.Addf(p+".name", "must not be empty")
		}
	}
	if len(b.Roles) == 0 {
		v.Addf("roles", "must name at least one AccessRole")
	}
	for i, r := range b.Roles {
		ValidateName(v, fmt.Sprintf("roles[%d]", i), r)
	}
	return v.OrNil()
}

// decodeKubeAccess decodes the spec of a Kubernetes-form AccessRole or
// AccessRoleBinding (global: no mesh).
func decodeKubeAccess(kind string, meta Meta, mesh string, spec []byte) (Resource, error) {
	if mesh != "" {
		return nil, FieldErr("mesh", "must be empty: an %s belongs to no mesh", kind)
	}
	if kind == TypeAccessRole {
		r := &AccessRole{Meta: meta}
		if err := DecodeStrict(spec, &r.AccessRoleSpec, "spec"); err != nil {
			return nil, err
		}
		return r, nil
	}
	b := &AccessRoleBinding{Meta: meta}
	if err := DecodeStrict(spec, &b.AccessRoleBindingSpec, "spec"); err != nil {
		return nil, err
	}
	return b, nil
}
