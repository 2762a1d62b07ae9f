package controlplane

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/gui"
	"meshca/pkg/identity"
	"meshca/pkg/resources"
	"meshca/pkg/tokens"
)

func extraEndpoints(mgr *resources.Manager, ids *identity.Manager, toks *tokens.Tokens, maxTokenValidity time.Duration, logger *slog.Logger, withPprof bool) map[string]http.Handler {
	eps := map[string]http.Handler{
		"POST /tokens/dataplane": tokenHandler(mgr, toks, maxTokenValidity, logger),
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
