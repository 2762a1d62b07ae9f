package insights

import (
	"context"
	"encoding/json"
	"sort"

	"meshca/pkg/api"
	"meshca/pkg/identity"
)

// Store is the part of the resource manager insights read.
type Store interface {
	Get(ctx context.Context, typ, mesh, name string) (api.Resource, error)
	List(ctx context.Context, typ, mesh string) ([]api.Resource, error)
}

// Identities gives a data plane's certificate state (identity.Manager).
type Identities interface {
	Insight(mesh, name string) (identity.Insight, bool)
}

// Service computes insights.
type Service struct {
	store Store
	ids   Identities
	conns *Connections
	zones Zones
	// remote, on a global control plane, is what zones report of their
	// data planes.
	remote func(mesh, name string) (DataplaneInsight, bool)
}

// New returns a Service reading from store, ids and conns.
func New(store Store, ids Identities, conns *Connections) *Service {
	return &Service{store: store, ids: ids, conns: conns}
}

// Data-plane statuses, as Kuma names them.
const (
	StatusOnline            = "Online"
	StatusOffline           = "Offline"
	StatusPartiallyDegraded = "PartiallyDegraded"
)

// Overview returns dp with its insight.
func (s *Service) Overview(dp *api.Dataplane) (DataplaneOverview, error) {
	// The spec alone (networking, metrics, probes), as Kuma nests it.
	spec, err := json.Marshal(dp.DataplaneSpec)
	if err != nil {
		return DataplaneOverview{}, err
	}
	return DataplaneOverview{
		Type: TypeDataplaneOverview, Mesh: dp.Mesh, Name: dp.Name,
		CreationTime: dp.CreationTime, ModificationTime: dp.ModificationTime, Labels: dp.Labels,
		Dataplane: json.RawMessage(spec), DataplaneInsight: s.insight(dp),
	}, nil
}

// WithRemote makes data planes' insights come from remote (a global control
// plane: what each zone reported) instead of this process's streams and
// identities.
func (s *Service) WithRemote(remote func(mesh, name string) (DataplaneInsight, bool)) *Service {
	s.remote = remote
	return s
}

// InsightOf is dp's DataplaneInsight: its streams and certificate state.
func (s *Service) InsightOf(dp *api.Dataplane) DataplaneInsight { return s.insight(dp) }

// insight is dp's DataplaneInsight: its streams and certificate state.
func (s *Service) insight(dp *api.Dataplane) DataplaneInsight {
	if s.remote != nil {
		in, _ := s.remote(dp.Mesh, dp.Name)
		return in
	}
	in := DataplaneInsight{Subscriptions: s.conns.Subscriptions(dp.Mesh, dp.Name)}
	for _, sub := range in.Subscriptions {
		if sub.DisconnectTime == nil {
			in.Connected = true
		}
	}
	if id, ok := s.ids.Insight(dp.Mesh, dp.Name); ok {
		in.MTLS = id.MTLS
	}
	return in
}

// Status is the data plane's status as kumactl computes it: offline while
// no stream is open or no inbound is ready, partially degraded while some
// inbound is not ready, online otherwise.
func (o DataplaneOverview) Status(dp *api.Dataplane) string {
	return status(o.DataplaneInsight, dp)
}

func status(in DataplaneInsight, dp *api.Dataplane) string {
	if !in.Connected {
		return StatusOffline
	}
	if dp.Networking.Gateway != nil {
		return StatusOnline
	}
	ready := 0
	for _, in := range dp.Networking.Inbound {
		if inboundReady(in) {
			ready++
		}
	}
	switch {
	case ready == 0:
		return StatusOffline
	case ready < len(dp.Networking.Inbound):
		return StatusPartiallyDegraded
	default:
		return StatusOnline
	}
}

func inboundReady(in api.Inbound) bool {
	if in.State == "NotReady" {
		return false
	}
	if len(in.Health) > 0 {
		var h struct {
			Ready bool `json:"ready"`
		}
		if json.Unmarshal(in.Health, &h) == nil && !h.Ready {
			return false
		}
	}
	return true
}

func (st *DataplaneStat) add(status string) {
	st.Total++
	switch status {
	case StatusOnline:
		st.Online++
	case StatusPartiallyDegraded:
		st.PartiallyDegraded++
	default:
		st.Offline++
	}
}

// MeshInsight summarizes mesh: its data planes by status, by type and by
// certificate backend, its services and how many resources of each type
// it holds. meshca has no traffic policies, so Policies is empty.
func (s *Service) MeshInsight(ctx context.Context, mesh *api.Mesh) (MeshInsight, error) {
	mi := MeshInsight{
		Type: TypeMeshInsight, Name: mesh.Name,
		CreationTime: mesh.CreationTime, ModificationTime: mesh.ModificationTime,
		Policies:  map[string]Total{},
		Resources: map[string]Total{},
		MTLS:      MeshMTLS{IssuedBackends: map[string]DataplaneStat{}, SupportedBackends: map[string]DataplaneStat{}},
	}
	dps, err := s.store.List(ctx, api.TypeDataplane, mesh.Name)
	if err != nil {
		return MeshInsight{}, err
	}
	services := map[string]bool{}
	for _, r := range dps {
		dp := r.(*api.Dataplane)
		in := s.insight(dp)
		st := status(in, dp)
		mi.Dataplanes.add(st)
		if gw := dp.Networking.Gateway; gw != nil {
			mi.DataplanesByType.Gateway.add(st)
			if gw.Type == "BUILTIN" {
				mi.DataplanesByType.GatewayBuiltin.add(st)
			} else {
				mi.DataplanesByType.GatewayDelegated.add(st)
			}
		} else {
			mi.DataplanesByType.Standard.add(st)
		}
		if m := in.MTLS; m != nil {
			if m.IssuedBackend != "" {
				ib := mi.MTLS.IssuedBackends[m.IssuedBackend]
				ib.add(st)
				mi.MTLS.IssuedBackends[m.IssuedBackend] = ib
			}
			for _, b := range m.SupportedBackends {
				sb := mi.MTLS.SupportedBackends[b]
				sb.add(st)
				mi.MTLS.SupportedBackends[b] = sb
			}
		}
		for _, svc := range dp.Services() {
			services[svc] = true
		}
	}
	if len(dps) > 0 {
		mi.DpVersions = DpVersions{
			KumaDp: map[string]DataplaneStat{"unknown": mi.Dataplanes},
			Envoy:  map[string]DataplaneStat{"unknown": mi.Dataplanes},
		}
	}
	mi.Services = ServiceStat{Total: uint32(len(services)), Internal: uint32(len(services))}
	if len(dps) > 0 {
		mi.Resources[api.TypeDataplane] = Total{Total: uint32(len(dps))}
	}
	secrets, err := s.store.List(ctx, api.TypeSecret, mesh.Name)
	if err != nil {
		return MeshInsight{}, err
	}
	if len(secrets) > 0 {
		mi.Resources[api.TypeSecret] = Total{Total: uint32(len(secrets))}
	}
	return mi, nil
}

// Overviews returns the overviews of dps that match f, sorted by mesh and
// name.
func (s *Service) Overviews(dps []api.Resource, f Filter) ([]DataplaneOverview, error) {
	return s.build(Select(dps, f))
}

// Select returns the Dataplanes of dps that match f, sorted by mesh and
// name: what a list pages through before any overview is built.
func Select(dps []api.Resource, f Filter) []*api.Dataplane {
	out := make([]*api.Dataplane, 0, len(dps))
	for _, r := range dps {
		if dp := r.(*api.Dataplane); f.match(dp) {
			out = append(out, dp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Mesh != out[j].Mesh {
			return out[i].Mesh < out[j].Mesh
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func (s *Service) build(dps []*api.Dataplane) ([]DataplaneOverview, error) {
	out := make([]DataplaneOverview, 0, len(dps))
	for _, dp := range dps {
		o, err := s.Overview(dp)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}
