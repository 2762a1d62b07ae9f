package ca

import (
	"fmt"
	"sort"
)

// Constructor builds a Backend from the control plane's dependencies.
type Constructor func(Deps) (Backend, error)

// Registry maps backend types to backends. It is built once at start-up and
// read-only afterwards.
type Registry struct {
	backends map[string]Backend
}

// NewRegistry constructs every backend in ctors.
func NewRegistry(deps Deps, ctors map[string]Constructor) (*Registry, error) {
	r := &Registry{backends: map[string]Backend{}}
	for typ, c := range ctors {
		b, err := c(deps)
		if err != nil {
			return nil, fmt.Errorf("ca backend %q: %w", typ, err)
		}
		r.backends[typ] = b
	}
	return r, nil
}

// Get returns the backend of a type.
func (r *Registry) Get(typ string) (Backend, error) {
	b, ok := r.backends[typ]
	if !ok {
		return nil, fmt.Errorf("backend type %q is not available in this build of meshca (available: %v)", typ, r.Types())
	}
	return b, nil
}

// Types lists the available types, sorted.
func (r *Registry) Types() []string {
	var out []string
	for t := range r.backends {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
