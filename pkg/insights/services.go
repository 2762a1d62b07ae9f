package insights

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
)

// TypeServiceInsight is the type of Kuma's per-service insight items.
const TypeServiceInsight = "ServiceInsight"

// Service statuses, as Kuma's ServiceInsight names them.
const (
	ServiceOnline            = "online"
	ServiceOffline           = "offline"
	ServicePartiallyDegraded = "partially_degraded"
)

// ServiceInsight is one service (kuma.io/service value) of a mesh, as Kuma's
// `/meshes/{mesh}/service-insights` lists it: how many of its data planes
// are online and which backends issued their certificates.
type ServiceInsight struct {
	Type             string            `json:"type"`
	Mesh             string            `json:"mesh"`
	Name             string            `json:"name"`
	CreationTime     string            `json:"creationTime"`
	ModificationTime string            `json:"modificationTime"`
	Status           string            `json:"status"`
	Dataplanes       ServiceDataplanes `json:"dataplanes"`
	IssuedBackends   map[string]uint32 `json:"issuedBackends,omitempty"`
	ServiceType      string            `json:"serviceType"`
}

// ServiceDataplanes counts a service's data planes.
type ServiceDataplanes struct {
	Total   uint32 `json:"total"`
	Online  uint32 `json:"online"`
	Offline uint32 `json:"offline"`
}

// zeroTime is how Kuma writes the times of a computed insight item.
const zeroTime = "0001-01-01T00:00:00Z"

// ServiceInsights returns mesh's services, sorted by name. A data plane
// counts as online for each of its services while it is Online (see
// DataplaneOverview.Status); a service is online when all its data planes
// are, offline when none is.
func (s *Service) ServiceInsights(ctx context.Context, mesh string) ([]ServiceInsight, error) {
	dps, err := s.store.List(ctx, api.TypeDataplane, mesh)
	if err != nil {
		return nil, err
	}
	by := map[string]*ServiceInsight{}
	for _, r := range dps {
		dp := r.(*api.Dataplane)
		in := s.insight(dp)
		online := status(in, dp) == StatusOnline
		for _, name := range dp.Services() {
			si := by[name]
			if si == nil {
				si = &ServiceInsight{Type: TypeServiceInsight, Mesh: mesh, Name: name,
					CreationTime: zeroTime, ModificationTime: zeroTime, ServiceType: "internal"}
				by[name] = si
			}
			si.Dataplanes.Total++
			if online {
				si.Dataplanes.Online++
			} else {
				si.Dataplanes.Offline++
			}
			if m := in.MTLS; m != nil && m.IssuedBackend != "" {
				if si.IssuedBackends == nil {
					si.IssuedBackends = map[string]uint32{}
				}
				si.IssuedBackends[m.IssuedBackend]++
			}
		}
	}
	out := make([]ServiceInsight, 0, len(by))
	for _, si := range by {
		switch {
		case si.Dataplanes.Online == 0:
			si.Status = ServiceOffline
		case si.Dataplanes.Online == si.Dataplanes.Total:
			si.Status = ServiceOnline
		default:
			si.Status = ServicePartiallyDegraded
		}
		out = append(out, *si)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Service) serviceHandlers(logger *slog.Logger, h map[string]http.Handler) {
	h["GET /meshes/{mesh}/service-insights"] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mesh := r.PathValue("mesh")
		if _, err := s.store.Get(r.Context(), api.TypeMesh, "", mesh); err != nil {
			apiserver.WriteError(w, logger, notFound(err, fmt.Sprintf("Mesh %q not found", mesh)))
			return
		}
		items, err := s.ServiceInsights(r.Context(), mesh)
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		apiserver.WriteList(w, r, logger, items)
	})
	h["GET /meshes/{mesh}/service-insights/{name}"] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mesh, name := r.PathValue("mesh"), r.PathValue("name")
		items, err := s.ServiceInsights(r.Context(), mesh)
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		for _, si := range items {
			if si.Name == name {
				apiserver.WriteJSON(w, http.StatusOK, si)
				return
			}
		}
		apiserver.WriteError(w, logger, &apiserver.Error{Status: http.StatusNotFound, Title: apiserver.TitleNotFound,
			Detail: fmt.Sprintf("service %q not found in mesh %q", name, mesh)})
	})
}
