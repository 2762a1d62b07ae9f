package authn

import (
	"context"
	"slices"
)

// Groups with a fixed meaning, as in Kuma.
const (
	// GroupAdmin may do everything.
	GroupAdmin = "mesh-system:admin"
	// GroupAuthenticated is every caller who proved an identity.
	GroupAuthenticated = "mesh-system:authenticated"
	// GroupUnauthenticated is every caller who did not.
	GroupUnauthenticated = "mesh-system:unauthenticated"
)

// Names of the built-in users.
const (
	// UserAdmin is the loopback client of the plain listener.
	UserAdmin = "mesh-system:admin"
	// UserAnonymous is a caller without credentials.
	UserAnonymous = "mesh-system:anonymous"
)

// Identity is who made a request.
type Identity struct {
	Name   string
	Groups []string
	// Via says how the identity was established ("localhost", "user-token",
	// "none"), for the audit trail.
	Via string
}

// Admin is the identity of a loopback client when localhost is admin.
func Admin() Identity {
	return Identity{Name: UserAdmin, Groups: []string{GroupAdmin, GroupAuthenticated}, Via: "localhost"}
}

// Anonymous is the identity of a caller without credentials.
func Anonymous() Identity {
	return Identity{Name: UserAnonymous, Groups: []string{GroupUnauthenticated}, Via: "none"}
}

// User is the identity a verified user token carries: its name and groups,
// plus GroupAuthenticated.
func User(name string, groups []string) Identity {
	g := slices.Clone(groups)
	if !slices.Contains(g, GroupAuthenticated) {
		g = append(g, GroupAuthenticated)
	}
	return Identity{Name: name, Groups: g, Via: "user-token"}
}

// InGroup reports whether the identity belongs to group.
func (id Identity) InGroup(group string) bool { return slices.Contains(id.Groups, group) }

// IsAdmin reports whether the identity may do everything.
func (id Identity) IsAdmin() bool { return id.InGroup(GroupAdmin) }

// IsAnonymous reports whether the caller proved no identity.
func (id Identity) IsAnonymous() bool { return !id.InGroup(GroupAuthenticated) }

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity ctx carries; ok is false when none was
// attached (a caller that bypassed authentication, which callers must treat
// as anonymous).
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}
