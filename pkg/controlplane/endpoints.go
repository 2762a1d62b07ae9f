package controlplane

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/gui"
	"meshca/pkg/identity"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/tokens"
)

// tokenRequest is the body of POST /tokens/dataplane, as Kuma takes it.
type tokenRequest struct {
	Name     string            `json:"name"`
	Mesh     string            `json:"mesh"`
	Tags     map[string]string `json:"tags,omitempty"`
	Type     string            `json:"type,omitempty"`
	ValidFor string            `json:"validFor,omitempty"`
}

func extraEndpoints(mgr *resources.Manager, ids *identity.Manager, toks *tokens.Tokens, logger *slog.Logger, withPprof bool) map[string]http.Handler {
	eps := map[string]http.Handler{
		"POST /tokens/dataplane": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
			if err != nil {
				apiserver.WriteError(w, logger, err)
				return
			}
			var req tokenRequest
			if err := json.Unmarshal(body, &req); err != nil {
				apiserver.WriteError(w, logger, apiserver.BadRequest("", "body must be JSON: "+err.Error()))
				return
			}
			v := &api.ValidationError{}
			if req.Mesh == "" {
				v.Addf("mesh", "must not be empty")
			}
			if req.Name == "" {
				v.Addf("name", "must not be empty")
			}
			var validFor time.Duration
			if req.ValidFor != "" {
				if validFor, err = api.ParseDuration(req.ValidFor); err != nil {
					v.AddErr("validFor", err)
				}
			}
			if err := v.OrNil(); err != nil {
				apiserver.WriteError(w, logger, err)
				return
			}
			if _, err := mgr.Get(r.Context(), api.TypeMesh, "", req.Mesh); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					err = api.FieldErr("mesh", "mesh %q does not exist", req.Mesh)
				}
				apiserver.WriteError(w, logger, err)
				return
			}
			tok, err := toks.Generate(r.Context(), req.Mesh, req.Name, validFor)
			if err != nil {
				apiserver.WriteError(w, logger, err)
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, tok)
		}),
		"GET /meshes/{mesh}/dataplanes/{name}/_insight": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mesh, name := r.PathValue("mesh"), r.PathValue("name")
			if _, err := mgr.Get(r.Context(), api.TypeDataplane, mesh, name); err != nil {
				apiserver.WriteError(w, logger, err)
				return
			}
			in, _ := ids.Insight(mesh, name)
			in.Mesh, in.Dataplane = mesh, name
			apiserver.WriteJSON(w, http.StatusOK, in)
		}),
	}
	if withPprof {
		eps["GET /debug/pprof/"] = http.HandlerFunc(pprof.Index)
		eps["GET /debug/pprof/profile"] = http.HandlerFunc(pprof.Profile)
		eps["GET /debug/pprof/trace"] = http.HandlerFunc(pprof.Trace)
	}
	return eps
}

// withGUI adds the web view's routes (pages under /gui/, their JSON, and
// GET /meshes/{mesh}/_overview) to the extra endpoints.
func withGUI(eps map[string]http.Handler, g *gui.Handler) map[string]http.Handler {
	for pattern, h := range g.Routes() {
		eps[pattern] = h
	}
	return eps
}
