package apiserver

import (
	"errors"
	"net/http"

	"meshca/pkg/access"
	"meshca/pkg/api"
	"meshca/pkg/authn"
	"meshca/pkg/store"
)

// Caller is the identity of a request that went through HandlerFor;
// Anonymous for one that did not.
func Caller(r *http.Request) authn.Identity {
	if id, ok := authn.FromContext(r.Context()); ok {
		return id
	}
	return authn.Anonymous()
}

// Authorize checks that the caller of r may do req: nil, or an error that
// WriteError answers 403 naming the missing access. Extension endpoints
// call it before acting.
func (s *Server) Authorize(r *http.Request, req access.Request) error {
	return s.access.Check(r.Context(), Caller(r), req)
}

// readAccess is what reading one resource needs: its secret data is
// VIEW_SECRET_DATA, anything else GET.
func readAccess(typ string) string {
	if access.IsSecretType(typ) {
		return api.AccessViewSecretData
	}
	return api.AccessGet
}

// authorizePut checks CREATE or UPDATE, whichever the PUT would be; the
// resource is read only when the caller holds one and not the other.
func (s *Server) authorizePut(r *http.Request, d api.Descriptor, mesh, name string) error {
	g, err := s.access.Grants(r.Context(), Caller(r))
	if err != nil {
		return err
	}
	create := access.Request{Access: api.AccessCreate, Type: d.Type, Mesh: mesh, Name: name}
	update := access.Request{Access: api.AccessUpdate, Type: d.Type, Mesh: mesh, Name: name}
	mayCreate, mayUpdate := g.Allows(create), g.Allows(update)
	if mayCreate && mayUpdate {
		return nil
	}
	_, err = s.mgr.Get(r.Context(), d.Type, mesh, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return g.Check(create)
	case err != nil:
		return err
	default:
		return g.Check(update)
	}
}

// visible keeps the resources of a list the caller may GET, without their
// secret data: a list never carries a Secret's or GlobalSecret's data.
func (s *Server) visible(r *http.Request, all []api.Resource) ([]api.Resource, error) {
	g, err := s.access.Grants(r.Context(), Caller(r))
	if err != nil {
		return nil, err
	}
	out := all[:0:0]
	for _, res := range all {
		m := res.GetMeta()
		if !g.Allows(access.Request{Access: api.AccessGet, Type: m.Type, Mesh: m.Mesh, Name: m.Name}) {
			continue
		}
		out = append(out, withoutSecretData(res))
	}
	return out, nil
}

// RedactedData is what a list shows as a Secret's or GlobalSecret's data:
// base64 of "REDACTED", as Kuma answers for the secrets it hides, so that
// Kuma's clients find the field they read.
const RedactedData = "UkVEQUNURUQ="

// withoutSecretData returns a copy of a Secret or GlobalSecret whose data
// is RedactedData; other resources as they are.
func withoutSecretData(res api.Resource) api.Resource {
	switch v := res.(type) {
	case *api.Secret:
		c := *v
		c.Data = RedactedData
		return &c
	case *api.GlobalSecret:
		c := *v
		c.Data = RedactedData
		return &c
	}
	return res
}
