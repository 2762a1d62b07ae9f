package insights

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/zonesync"
)

// Zones lists the zones a global control plane knows (zonesync.Global).
type Zones interface {
	Zones() []zonesync.ZoneStatus
}

// WithZones makes the zone endpoints list zones (a global control plane);
// without it they are empty, as on a standalone or zone control plane.
func (s *Service) WithZones(z Zones) *Service {
	s.zones = z
	return s
}

// ZoneSubscription is Kuma's KDSSubscription, as kumactl inspect zones
// reads it.
type ZoneSubscription struct {
	ID               string     `json:"id"`
	GlobalInstanceID string     `json:"globalInstanceId"`
	ConnectTime      *time.Time `json:"connectTime,omitempty"`
	DisconnectTime   *time.Time `json:"disconnectTime,omitempty"`
	Status           struct {
		LastUpdateTime *time.Time `json:"lastUpdateTime,omitempty"`
		Total          struct {
			ResponsesSent         string `json:"responsesSent"`
			ResponsesAcknowledged string `json:"responsesAcknowledged"`
		} `json:"total"`
		Stat map[string]any `json:"stat"`
	} `json:"status"`
	Version struct {
		KumaCp struct {
			Version string `json:"version"`
		} `json:"kumaCp"`
	} `json:"version"`
	// ResourcesReceived, BytesSent and BytesReceived are meshca's: what the
	// zone sent global, and the encoded size of each direction.
	ResourcesReceived int64 `json:"resourcesReceived"`
	BytesSent         int64 `json:"bytesSent"`
	BytesReceived     int64 `json:"bytesReceived"`
}

// ZoneInsight is Kuma's ZoneInsight.
type ZoneInsight struct {
	Subscriptions []ZoneSubscription `json:"subscriptions"`
}

// ZoneOverview is one item of GET /zones/_overview.
type ZoneOverview struct {
	Type             string      `json:"type"`
	Name             string      `json:"name"`
	CreationTime     time.Time   `json:"creationTime"`
	ModificationTime time.Time   `json:"modificationTime"`
	Zone             ZoneSpec    `json:"zone"`
	ZoneInsight      ZoneInsight `json:"zoneInsight"`
	// Dataplanes is meshca's: the zone's data planes as it reported them.
	Dataplanes ZoneDataplanes `json:"dataplanes"`
}

// ZoneDataplanes counts a zone's data planes and those whose last
// issuance failed, with one of their errors (a backend conf the zone
// cannot use, e.g. a file: credential missing on its host).
type ZoneDataplanes struct {
	Total     int    `json:"total"`
	Failing   int    `json:"failing"`
	LastError string `json:"lastError,omitempty"`
}

// ZoneSpec is Kuma's Zone spec.
type ZoneSpec struct {
	Enabled bool `json:"enabled"`
}

type zoneItem struct {
	Type             string    `json:"type"`
	Name             string    `json:"name"`
	CreationTime     time.Time `json:"creationTime"`
	ModificationTime time.Time `json:"modificationTime"`
	Enabled          bool      `json:"enabled"`
}

type zoneInsightItem struct {
	Type             string    `json:"type"`
	Name             string    `json:"name"`
	CreationTime     time.Time `json:"creationTime"`
	ModificationTime time.Time `json:"modificationTime"`
	ZoneInsight
}

func zoneOverview(z zonesync.ZoneStatus) ZoneOverview {
	sub := ZoneSubscription{ID: z.Name, GlobalInstanceID: "global", ResourcesReceived: z.Received, BytesSent: z.SentBytes, BytesReceived: z.ReceivedBytes}
	since := z.Since
	if z.Connected {
		sub.ConnectTime = &since
	} else if !since.IsZero() {
		sub.DisconnectTime = &since
	}
	if !z.LastSync.IsZero() {
		last := z.LastSync
		sub.Status.LastUpdateTime = &last
	}
	sub.Status.Total.ResponsesSent = strconv.FormatInt(z.Sent, 10)
	sub.Status.Total.ResponsesAcknowledged = strconv.FormatInt(z.Sent, 10)
	sub.Status.Stat = map[string]any{}
	sub.Version.KumaCp.Version = z.Version
	return ZoneOverview{Type: "ZoneOverview", Name: z.Name, CreationTime: z.Since, ModificationTime: z.Since,
		Zone: ZoneSpec{Enabled: true}, ZoneInsight: ZoneInsight{Subscriptions: []ZoneSubscription{sub}}}
}

// zoneHandlers serves Kuma's zone endpoints from s.zones.
func (s *Service) zoneHandlers(logger *slog.Logger, h map[string]http.Handler) {
	list := func(shape func(ZoneOverview) any) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var items []any
			if s.zones != nil {
				counts := s.zoneDataplanes(r.Context())
				for _, z := range s.zones.Zones() {
					o := zoneOverview(z)
					o.Dataplanes = counts[z.Name]
					items = append(items, shape(o))
				}
			}
			if items == nil {
				items = []any{}
			}
			apiserver.WriteList(w, r, logger, items)
		})
	}
	one := func(shape func(ZoneOverview) any) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("name")
			if s.zones != nil {
				for _, z := range s.zones.Zones() {
					if z.Name == name {
						o := zoneOverview(z)
						o.Dataplanes = s.zoneDataplanes(r.Context())[z.Name]
						apiserver.WriteJSON(w, http.StatusOK, shape(o))
						return
					}
				}
			}
			detail := fmt.Sprintf("Zone %q not found", name)
			if s.zones == nil {
				detail += ": this control plane is not global"
			}
			apiserver.WriteError(w, logger, &apiserver.Error{Status: http.StatusNotFound, Title: apiserver.TitleNotFound, Detail: detail})
		})
	}
	overview := func(o ZoneOverview) any { return o }
	zone := func(o ZoneOverview) any {
		return zoneItem{Type: "Zone", Name: o.Name, CreationTime: o.CreationTime, ModificationTime: o.ModificationTime, Enabled: true}
	}
	insight := func(o ZoneOverview) any {
		return zoneInsightItem{Type: "ZoneInsight", Name: o.Name, CreationTime: o.CreationTime, ModificationTime: o.ModificationTime, ZoneInsight: o.ZoneInsight}
	}
	h["GET /zones"] = list(zone)
	h["GET /zones/_overview"] = list(overview)
	h["GET /zones+insights"] = list(overview)
	h["GET /zone-insights"] = list(insight)
	h["GET /zones/{name}"] = one(zone)
	h["GET /zones/{name}/_overview"] = one(overview)
	h["GET /zones+insights/{name}"] = one(overview)
	h["GET /zone-insights/{name}"] = one(insight)
}

// zoneDataplanes counts, by zone, the data planes zones reported and those
// whose last issuance failed.
func (s *Service) zoneDataplanes(ctx context.Context) map[string]ZoneDataplanes {
	out := map[string]ZoneDataplanes{}
	dps, err := s.store.List(ctx, api.TypeDataplane, "")
	if err != nil {
		return out
	}
	for _, r := range dps {
		m := r.GetMeta()
		zone := m.Labels[zonesync.LabelZone]
		if zone == "" {
			continue
		}
		c := out[zone]
		c.Total++
		if s.remote != nil {
			if in, ok := s.remote(m.Mesh, m.Name); ok && in.MTLS != nil && in.MTLS.LastError != "" {
				c.Failing++
				if c.LastError == "" {
					c.LastError = in.MTLS.LastError
				}
			}
		}
		out[zone] = c
	}
	return out
}
