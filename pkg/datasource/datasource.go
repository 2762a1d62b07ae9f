// Package datasource reads the bytes a DataSource points at: a mesh-scoped
// Secret, a file on the control-plane host, or inline data. It never logs
// the bytes it returns.
package datasource

import (
	"context"
	"encoding/base64"
	"errors"
	"os"

	"meshca/pkg/api"
	"meshca/pkg/store"
)

// Resolver resolves DataSources against a store and the local filesystem.
type Resolver struct {
	store    store.Store
	readFile func(string) ([]byte, error)
	fileDirs []string // allowed directories of file sources; none: any
}

// New returns a Resolver reading Secrets from s.
func New(s store.Store) *Resolver {
	return &Resolver{store: s, readFile: os.ReadFile}
}

// Resolve returns the data of ds. field is the path of ds in the resource
// ("mtls.backends[0].conf.caCert") and is named in every error.
func (r *Resolver) Resolve(ctx context.Context, mesh string, ds *api.DataSource, field string) ([]byte, error) {
	v := &api.ValidationError{}
	api.ValidateDataSource(v, field, ds, true)
	if err := v.OrNil(); err != nil {
		return nil, err
	}
	switch {
	case ds.Secret != "":
		data, err := r.Secret(ctx, mesh, ds.Secret)
		if err != nil {
			return nil, api.PrefixErr(field+".secret", err)
		}
		return data, nil
	case ds.File != "":
		if err := r.checkFileDir(field+".file", ds.File); err != nil {
			return nil, err
		}
		data, err := r.readFile(ds.File)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, api.FieldErr(field+".file", "file %q does not exist on the control-plane host", ds.File)
			}
			return nil, api.FieldErr(field+".file", "cannot read file %q: %v", ds.File, errors.Unwrap(err))
		}
		return data, nil
	case ds.Inline != "":
		data, err := base64.StdEncoding.DecodeString(ds.Inline)
		if err != nil {
			return nil, api.FieldErr(field+".inline", "not valid base64")
		}
		return data, nil
	default:
		return []byte(ds.InlineString), nil
	}
}

// Secret returns the decoded data of a mesh-scoped Secret.
func (r *Resolver) Secret(ctx context.Context, mesh, name string) ([]byte, error) {
	rec, err := r.store.Get(ctx, store.Key{Type: api.TypeSecret, Mesh: mesh, Name: name})
	if errors.Is(err, store.ErrNotFound) {
		return nil, &NotFoundError{Mesh: mesh, Name: name}
	}
	if err != nil {
		return nil, err
	}
	res, err := api.UnmarshalSpec(api.Meta{Type: api.TypeSecret, Mesh: mesh, Name: name}, rec.Spec)
	if err != nil {
		return nil, err
	}
	data, err := base64.StdEncoding.DecodeString(res.(*api.Secret).Data)
	if err != nil {
		return nil, errors.New("secret " + name + " holds invalid base64")
	}
	return data, nil
}

// NotFoundError says a referenced Secret does not exist.
type NotFoundError struct{ Mesh, Name string }

func (e *NotFoundError) Error() string {
	return "secret \"" + e.Name + "\" not found in mesh \"" + e.Mesh + "\""
}
