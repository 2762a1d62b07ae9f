package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"meshca/pkg/api"
	"meshca/pkg/authn"
)

// Request is one thing an identity wants to do: Access on the resource
// Type/Mesh/Name. Type is "" for actions on no resource (GENERATE_USER_TOKEN,
// GENERATE_ZONE_TOKEN); Mesh is "" for global resources.
type Request struct {
	Access string
	Type   string
	Mesh   string
	Name   string
}

func (r Request) String() string {
	switch {
	case r.Type == "":
		return r.Access
	case r.Name == "" && r.Mesh == "":
		return fmt.Sprintf("%s on %s resources", r.Access, r.Type)
	case r.Name == "":
		return fmt.Sprintf("%s on %s resources in mesh %q", r.Access, r.Type, r.Mesh)
	case r.Mesh == "":
		return fmt.Sprintf("%s on %s %q", r.Access, r.Type, r.Name)
	default:
		return fmt.Sprintf("%s on %s %q in mesh %q", r.Access, r.Type, r.Name, r.Mesh)
	}
}

// DeniedError is a refusal: Who may not do Request.
type DeniedError struct {
	Who     authn.Identity
	Request Request
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("access denied: user %q (groups: %s) lacks %s", e.Who.Name, strings.Join(e.Who.Groups, ", "), e.Request)
}

// IsDenied reports whether err is a refusal.
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}

// Source reads the roles and bindings (resources.Manager is one).
type Source interface {
	List(ctx context.Context, typ, mesh string) ([]api.Resource, error)
}

// Checker evaluates requests against the roles and bindings in a Source.
type Checker struct {
	src   Source
	cache grantsCache
}

// New returns a Checker reading roles and bindings from src.
func New(src Source) *Checker {
	return &Checker{src: src, cache: grantsCache{byWho: map[string]Grants{}}}
}

// Check returns nil when id may do req, a *DeniedError when it may not,
// and another error when the roles could not be read.
func (c *Checker) Check(ctx context.Context, id authn.Identity, req Request) error {
	g, err := c.Grants(ctx, id)
	if err != nil {
		return err
	}
	return g.Check(req)
}

// Grants is what one identity may do, to check many requests (the items of
// a list) with one read of the roles.
type Grants struct {
	who   authn.Identity
	admin bool
	rules []api.AccessRule
}

// Grants collects the rules of every role bound to id.
func (c *Checker) Grants(ctx context.Context, id authn.Identity) (Grants, error) {
	g := Grants{who: id, admin: id.IsAdmin()}
	if g.admin || id.IsAnonymous() {
		return g, nil
	}
	cached, gen, ok := c.cache.get(id)
	if ok {
		return cached, nil
	}
	bindings, err := c.src.List(ctx, api.TypeAccessRoleBinding, "")
	if err != nil {
		return g, fmt.Errorf("read access role bindings: %w", err)
	}
	var roles []string
	for _, r := range bindings {
		b, ok := r.(*api.AccessRoleBinding)
		if !ok || !bound(b, id) {
			continue
		}
		roles = append(roles, b.Roles...)
	}
	if len(roles) == 0 {
		c.cache.put(id, g, gen)
		return g, nil
	}
	all, err := c.src.List(ctx, api.TypeAccessRole, "")
	if err != nil {
		return g, fmt.Errorf("read access roles: %w", err)
	}
	for _, r := range all {
		role, ok := r.(*api.AccessRole)
		if ok && slices.Contains(roles, role.Name) {
			g.rules = append(g.rules, role.Rules...)
		}
	}
	c.cache.put(id, g, gen)
	return g, nil
}

func bound(b *api.AccessRoleBinding, id authn.Identity) bool {
	for _, s := range b.Subjects {
		switch s.Type {
		case api.SubjectUser:
			if s.Name == id.Name {
				return true
			}
		case api.SubjectGroup:
			if id.InGroup(s.Name) {
				return true
			}
		}
	}
	return false
}

// IsSecretType reports whether resources of typ hold secret data.
func IsSecretType(typ string) bool {
	return typ == api.TypeSecret || typ == api.TypeGlobalSecret
}

// Allows reports whether the identity may do req.
func (g Grants) Allows(req Request) bool {
	if g.admin {
		return true
	}
	if g.who.IsAnonymous() {
		return false
	}
	if req.Access == api.AccessGet && req.Type != "" && !IsSecretType(req.Type) {
		return true
	}
	for _, r := range g.rules {
		if matches(r, req) {
			return true
		}
	}
	return false
}

// Check is Allows as an error: nil or a *DeniedError.
func (g Grants) Check(req Request) error {
	if g.Allows(req) {
		return nil
	}
	return &DeniedError{Who: g.who, Request: req}
}

func matches(r api.AccessRule, req Request) bool {
	if !slices.Contains(r.Access, req.Access) {
		return false
	}
	if len(r.Types) > 0 && !slices.Contains(r.Types, req.Type) {
		return false
	}
	if r.Mesh != "" {
		mesh := req.Mesh
		if req.Type == api.TypeMesh {
			mesh = req.Name
		}
		if mesh != r.Mesh {
			return false
		}
	}
	return len(r.Names) == 0 || slices.Contains(r.Names, req.Name)
}
