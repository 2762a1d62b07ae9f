package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"

	"sigs.k8s.io/yaml"

	"meshca/pkg/access"
	"meshca/pkg/api"
	"meshca/pkg/audit"
	"meshca/pkg/resources"
	"meshca/pkg/store"
)

// Paging of list endpoints, as Kuma does it.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// ListBody is the JSON body of a list answer. Next is the URL of the next
// page, or null on the last one; its `offset` parameter is an opaque token.
type ListBody struct {
	Total int               `json:"total"`
	Items []json.RawMessage `json:"items"`
	Next  *string           `json:"next"`
}

// ApplyBody is the JSON body of a successful PUT. Kuma answers an empty
// object; DryRun and Created are set only for dry runs (meshca extension),
// Created telling whether the resource would have been created.
type ApplyBody struct {
	DryRun  bool `json:"dryRun,omitempty"`
	Created bool `json:"created,omitempty"`
}

// handlerFunc is an endpoint that reports failures by returning them.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			if context.Cause(r.Context()) == ErrShuttingDown {
				w.Header().Set("Retry-After", "1")
				err = &Error{Status: http.StatusServiceUnavailable, Title: "Shutting down",
					Detail: "the control plane is shutting down and stopped this request before it changed anything; retry (another instance, or this one once restarted)", Err: err}
			}
			WriteError(w, s.logger.With(slog.String("method", r.Method), slog.String("path", r.URL.Path)), err)
		}
	})
}

func (s *Server) resourceRoutes() {
	for _, d := range api.Descriptors() {
		one := "/" + d.Path + "/{name}"
		if d.MeshScoped {
			s.mux.Handle("GET /"+d.Path, s.wrap(s.list(d)))
			s.mux.Handle("GET /meshes/{mesh}/"+d.Path, s.wrap(s.list(d)))
			one = "/meshes/{mesh}/" + d.Path + "/{name}"
		} else {
			s.mux.Handle("GET /"+d.Path, s.wrap(s.list(d)))
		}
		s.mux.Handle("GET "+one, s.wrap(s.get(d)))
		s.mux.Handle("PUT "+one, s.wrap(s.put(d)))
		s.mux.Handle("DELETE "+one, s.wrap(s.delete(d)))
	}
}

// describe names a resource in messages: `Mesh "default"`,
// `Secret "ca" in mesh "default"`.
func describe(d api.Descriptor, mesh, name string) string {
	if d.MeshScoped {
		return fmt.Sprintf("%s %q in mesh %q", d.Type, name, mesh)
	}
	return fmt.Sprintf("%s %q", d.Type, name)
}

func notFound(d api.Descriptor, mesh, name string, err error) error {
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return &Error{Status: http.StatusNotFound, Title: TitleNotFound,
		Detail: describe(d, mesh, name) + " not found", Err: err}
}

func (s *Server) get(d api.Descriptor) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		mesh, name := r.PathValue("mesh"), r.PathValue("name")
		if err := s.Authorize(r, access.Request{Access: readAccess(d.Type), Type: d.Type, Mesh: mesh, Name: name}); err != nil {
			return err
		}
		res, err := s.mgr.Get(r.Context(), d.Type, mesh, name)
		if err != nil {
			return notFound(d, mesh, name, err)
		}
		WriteJSON(w, http.StatusOK, res)
		return nil
	}
}

func (s *Server) delete(d api.Descriptor) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		mesh, name := r.PathValue("mesh"), r.PathValue("name")
		audit.Describe(r.Context(), "delete", d.Type, mesh, name)
		if err := s.Authorize(r, access.Request{Access: api.AccessDelete, Type: d.Type, Mesh: mesh, Name: name}); err != nil {
			return err
		}
		if err := s.mgr.Delete(r.Context(), d.Type, mesh, name); err != nil {
			return notFound(d, mesh, name, err)
		}
		WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
}

func (s *Server) put(d api.Descriptor) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		mesh, name := r.PathValue("mesh"), r.PathValue("name")
		dryRun, err := parseBoolParam(r.URL.Query(), "dryRun")
		if err != nil {
			return err
		}
		audit.Describe(r.Context(), "apply", d.Type, mesh, name)
		if dryRun {
			audit.SetDryRun(r.Context())
		}
		if err := s.authorizePut(r, d, mesh, name); err != nil {
			return err
		}
		body, release, err := s.readBody(w, r)
		if err != nil {
			return err
		}
		res, err := decodeBody(body, d, mesh, name)
		if err != nil {
			release()
			return err
		}
		// The decoded resource is as large as the body until it is stored.
		defer release()
		created, err := s.mgr.Apply(r.Context(), res, resources.ApplyOptions{DryRun: dryRun})
		if err != nil {
			return err
		}
		if created {
			audit.Describe(r.Context(), "create", d.Type, mesh, name)
		} else {
			audit.Describe(r.Context(), "update", d.Type, mesh, name)
		}
		switch {
		case dryRun:
			WriteJSON(w, http.StatusOK, ApplyBody{DryRun: true, Created: created})
		case created:
			WriteJSON(w, http.StatusCreated, ApplyBody{})
		default:
			WriteJSON(w, http.StatusOK, ApplyBody{})
		}
		return nil
	}
}

// decodeBody parses the Universal form of one resource (JSON, or YAML) and
// reconciles it with the URL: type, name and mesh are filled in when absent
// and must match when present. Unknown fields are refused.
func decodeBody(body []byte, d api.Descriptor, mesh, name string) (api.Resource, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, &Error{Status: http.StatusBadRequest, Title: TitleInvalid, Detail: "the request body is empty: send the resource in the Universal form"}
	}
	js := body
	if body[0] != '{' || !json.Valid(body) {
		var err error
		dup := &api.ValidationError{} // with the path, where YAML's own error has only the line
		api.DuplicateYAMLKeys(dup, body, "")
		if err := dup.OrNil(); err != nil {
			return nil, err
		}
		if js, err = yaml.YAMLToJSONStrict(body); err != nil {
			return nil, &Error{Status: http.StatusBadRequest, Title: TitleInvalid, Detail: "the request body is not valid JSON or YAML: " + err.Error()}
		}
	}
	if complete(js, d, mesh, name) {
		// The type is known: decode as it (DecodeStrict refuses duplicate
		// keys), without reading the type from the body a second time.
		r := d.New()
		if err := api.DecodeStrict(js, r, ""); err != nil {
			return nil, err
		}
		return r, nil
	}
	// Before the body becomes a map, which would keep one of two keys.
	dup := &api.ValidationError{}
	api.DuplicateKeys(dup, js, "")
	if err := dup.OrNil(); err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(js, &obj); err != nil || obj == nil {
		return nil, &Error{Status: http.StatusBadRequest, Title: TitleInvalid, Detail: "the request body must be a JSON or YAML object"}
	}
	for _, k := range []string{"kind", "apiVersion"} {
		if _, ok := obj[k]; ok {
			return nil, api.FieldErr(k, "unknown field: the API takes the Universal form (type, name, mesh and the spec fields); meshctl apply converts the Kubernetes form")
		}
	}
	v := &api.ValidationError{}
	reconcile := func(field, want string) {
		raw, ok := obj[field]
		var got string
		if ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &got); err != nil {
				return // DecodeUniversal reports the type error
			}
		}
		switch {
		case got == "":
			obj[field], _ = json.Marshal(want)
		case got != want:
			v.Addf(field, "must be %q as in the URL, got %q", want, got)
		}
	}
	reconcile("type", d.Type)
	reconcile("name", name)
	if d.MeshScoped {
		reconcile("mesh", mesh)
	}
	if err := v.OrNil(); err != nil {
		return nil, err
	}
	js, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return api.DecodeUniversal(js)
}

// complete reports whether js already names the type, name and mesh of
// the URL and carries no Kubernetes fields: the common case, decoded as is,
// without a map of the body and a second encoding of it (each as large as
// the body). Anything else takes the reconciling path, which explains.
func complete(js []byte, d api.Descriptor, mesh, name string) bool {
	var head struct {
		Type       *string         `json:"type"`
		Name       *string         `json:"name"`
		Mesh       *string         `json:"mesh"`
		Kind       json.RawMessage `json:"kind"`
		APIVersion json.RawMessage `json:"apiVersion"`
	}
	if err := json.Unmarshal(js, &head); err != nil || head.Kind != nil || head.APIVersion != nil {
		return false
	}
	if head.Type == nil || *head.Type != d.Type || head.Name == nil || *head.Name != name {
		return false
	}
	if d.MeshScoped {
		return head.Mesh != nil && *head.Mesh == mesh
	}
	return head.Mesh == nil
}

func (s *Server) list(d api.Descriptor) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		size, offset, err := parsePaging(q)
		if err != nil {
			return err
		}
		all, err := s.mgr.List(r.Context(), d.Type, r.PathValue("mesh"))
		if err != nil {
			return err
		}
		if all, err = s.visible(r, all); err != nil {
			return err
		}
		out := ListBody{Total: len(all), Items: []json.RawMessage{}}
		end := min(offset+size, len(all))
		for i := offset; i < end; i++ {
			js, err := json.Marshal(all[i])
			if err != nil {
				return err
			}
			out.Items = append(out.Items, js)
		}
		if end < len(all) {
			next := nextURL(r, size, end)
			out.Next = &next
		}
		WriteJSON(w, http.StatusOK, out)
		return nil
	}
}

func parsePaging(q url.Values) (size, offset int, err error) {
	size = DefaultPageSize
	if v := q.Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageSize {
			return 0, 0, BadRequest("size", fmt.Sprintf("must be an integer in 1..%d, got %q", MaxPageSize, v))
		}
		size = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, BadRequest("offset", fmt.Sprintf("invalid page token %q: use the next URL of the previous page", v))
		}
		offset = n
	}
	return size, offset, nil
}

// nextURL is the absolute URL of the page after this one, keeping the
// request's other query parameters.
func nextURL(r *http.Request, size, offset int) string {
	q := r.URL.Query()
	q.Set("size", strconv.Itoa(size))
	q.Set("offset", strconv.Itoa(offset))
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}
	return u.String()
}

func parseBoolParam(q url.Values, name string) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, BadRequest(name, fmt.Sprintf("must be true or false, got %q", v))
	}
	return b, nil
}
