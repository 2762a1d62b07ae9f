package insights

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/store"
)

// Handlers returns Kuma's insight endpoints, keyed by http.ServeMux pattern
// (for apiserver.Options.Extra):
//
//	GET /meshes/{mesh}/dataplanes/_overview    (and /meshes/{mesh}/dataplanes+insights)
//	GET /meshes/{mesh}/dataplanes/{name}/_overview (and /meshes/{mesh}/dataplanes+insights/{name})
//	GET /dataplanes/_overview                  (and /dataplanes+insights): every mesh
//	GET /mesh-insights, /mesh-insights/{mesh}
//	GET /meshes/{mesh}/service-insights, /meshes/{mesh}/service-insights/{name}
//	GET /zones, /zones/_overview, /zones+insights, /zone-insights (and /{name}): a global's zones, else empty
//	GET the zone ingress and egress lists: empty, meshca runs no zone proxies
func (s *Service) Handlers(logger *slog.Logger) map[string]http.Handler {
	h := map[string]http.Handler{}
	list := s.listOverviews(logger)
	one := s.oneOverview(logger)
	for _, p := range []string{
		"GET /meshes/{mesh}/dataplanes/_overview",
		"GET /meshes/{mesh}/dataplanes+insights",
		"GET /dataplanes/_overview",
		"GET /dataplanes+insights",
	} {
		h[p] = list
	}
	h["GET /meshes/{mesh}/dataplanes/{name}/_overview"] = one
	h["GET /meshes/{mesh}/dataplanes+insights/{name}"] = one
	h["GET /mesh-insights"] = s.listMeshInsights(logger)
	h["GET /mesh-insights/{mesh}"] = s.oneMeshInsight(logger)
	s.serviceHandlers(logger, h)
	empty := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiserver.WriteList(w, r, logger, []struct{}{})
	})
	for _, p := range []string{
		"GET /zoneingresses", "GET /zoneingresses/_overview", "GET /zoneingresses+insights", "GET /zone-ingress-insights",
		"GET /zoneegresses", "GET /zoneegresses/_overview", "GET /zoneegressoverviews", "GET /zoneegressinsights",
	} {
		h[p] = empty
	}
	s.zoneHandlers(logger, h)
	return h
}

func (s *Service) listOverviews(logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := ParseFilter(r.URL.Query())
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		mesh := r.PathValue("mesh")
		dps, err := s.store.List(r.Context(), api.TypeDataplane, mesh)
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		// Only the page asked for is built: a list of thousands is cheap
		// to filter and sort, not to describe.
		selected := Select(dps, f)
		start, end, next, err := apiserver.Page(r, len(selected))
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		items, err := s.build(selected[start:end])
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		body := apiserver.ListBody{Total: len(selected), Items: make([]json.RawMessage, 0, len(items)), Next: next}
		for _, it := range items {
			js, err := json.Marshal(it)
			if err != nil {
				apiserver.WriteError(w, logger, err)
				return
			}
			body.Items = append(body.Items, js)
		}
		apiserver.WriteJSON(w, http.StatusOK, body)
	})
}

func (s *Service) oneOverview(logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mesh, name := r.PathValue("mesh"), r.PathValue("name")
		res, err := s.store.Get(r.Context(), api.TypeDataplane, mesh, name)
		if err != nil {
			apiserver.WriteError(w, logger, notFound(err, fmt.Sprintf("Dataplane %q in mesh %q not found", name, mesh)))
			return
		}
		o, err := s.Overview(res.(*api.Dataplane))
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		apiserver.WriteJSON(w, http.StatusOK, o)
	})
}

func (s *Service) listMeshInsights(logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		meshes, err := s.store.List(r.Context(), api.TypeMesh, "")
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		items := make([]MeshInsight, 0, len(meshes))
		for _, m := range meshes {
			mi, err := s.MeshInsight(r.Context(), m.(*api.Mesh))
			if err != nil {
				apiserver.WriteError(w, logger, err)
				return
			}
			items = append(items, mi)
		}
		apiserver.WriteList(w, r, logger, items)
	})
}

func (s *Service) oneMeshInsight(logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("mesh")
		m, err := s.store.Get(r.Context(), api.TypeMesh, "", name)
		if err != nil {
			apiserver.WriteError(w, logger, notFound(err, fmt.Sprintf("MeshInsight %q not found", name)))
			return
		}
		mi, err := s.MeshInsight(r.Context(), m.(*api.Mesh))
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		apiserver.WriteJSON(w, http.StatusOK, mi)
	})
}

func notFound(err error, detail string) error {
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return &apiserver.Error{Status: http.StatusNotFound, Title: apiserver.TitleNotFound, Detail: detail, Err: err}
}
