package zonesync

// Zone to global, on the zone: its Dataplanes and their insights.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"

	"meshca/pkg/api"
	"meshca/pkg/store"
)

// send reports the zone's Dataplanes and their certificate insights to
// global: what global does not hold yet, then every change.
func (z *Zone) send(ctx context.Context, s grpc.ClientStream) error {
	events := z.store.Watch(ctx, api.TypeDataplane, "DataplaneIdentity")
	sent := map[string]map[string]string{}
	for range zoneToGlobalTypes {
		req := new(discoveryv3.DeltaDiscoveryRequest)
		if err := s.RecvMsg(req); err != nil {
			return err
		}
		typ := typeOf(req.GetTypeUrl())
		if !slices.Contains(zoneToGlobalTypes, typ) {
			return fmt.Errorf("global asked for type %q", req.GetTypeUrl())
		}
		sent[typ] = maps.Clone(req.GetInitialResourceVersions())
		if sent[typ] == nil {
			sent[typ] = map[string]string{}
		}
	}
	acks := make(chan error, 1)
	type refusal struct{ typ, name string }
	refused := make(chan []refusal, 16)
	go func() {
		for {
			req := new(discoveryv3.DeltaDiscoveryRequest)
			if err := s.RecvMsg(req); err != nil {
				acks <- err
				return
			}
			if d := req.GetErrorDetail(); d != nil {
				typ := typeOf(req.GetTypeUrl())
				z.log.Warn("the global control plane refused resources of this zone; they are sent again later", "type", typ, "error", d.GetMessage())
				var rs []refusal
				for _, a := range d.GetDetails() {
					if a.GetTypeUrl() == refusedTypeURL {
						rs = append(rs, refusal{typ, string(a.GetValue())})
					}
				}
				select {
				case refused <- rs:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	// Insights also change without a store event (a failing backend's last
	// error), and a refused resource is worth sending again: look again now
	// and then.
	tick := time.NewTicker(z.cfg.Resync)
	defer tick.Stop()
	v, err := z.newView(ctx)
	if err != nil {
		return err
	}
	nonce := 0
	for {
		cur := v.cur
		for _, typ := range zoneToGlobalTypes {
			resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: TypeURLPrefix + typ}
			for _, name := range slices.Sorted(maps.Keys(cur[typ])) {
				res := cur[typ][name]
				if sent[typ][name] != res.Version {
					resp.Resources = append(resp.Resources, res)
				}
			}
			for name := range sent[typ] {
				if _, ok := cur[typ][name]; !ok {
					resp.RemovedResources = append(resp.RemovedResources, name)
				}
			}
			if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 {
				continue
			}
			nonce++
			resp.Nonce = strconv.Itoa(nonce)
			if err := s.SendMsg(resp); err != nil {
				return err
			}
			for _, name := range resp.RemovedResources {
				delete(sent[typ], name)
			}
			for _, r := range resp.Resources {
				sent[typ][r.Name] = r.Version
			}
		}
		z.synced()
	wait:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-acks:
			return err
		case rs := <-refused:
			// Global may hold an older version or none: the next look sends
			// them again, or their removal if they are gone by then.
			for _, r := range rs {
				if _, ok := sent[r.typ][r.name]; ok {
					sent[r.typ][r.name] = "refused"
				}
			}
			goto wait
		case <-tick.C:
			// Insights change without a store event (a backend's last error).
			if err := v.refreshInsights(nil); err != nil {
				return err
			}
		case ev := <-events:
			// Coalesce a burst (a mass rotation) into one response, and
			// rework only the data planes it touched.
			batch := []store.Event{ev}
			timer := time.NewTimer(200 * time.Millisecond)
		coalesce:
			for {
				select {
				case ev := <-events:
					batch = append(batch, ev)
				case <-timer.C:
					break coalesce
				case <-ctx.Done():
					timer.Stop()
					return ctx.Err()
				}
			}
			if err := v.apply(batch); err != nil {
				return err
			}
		}
	}
}

// view is what a zone reports to global, kept current from store events so
// that a change costs work for the data planes it touched, not for all.
type view struct {
	z   *Zone
	dps map[string]store.Record // by resource name
	// cur is what the zone reports now, by type and resource name.
	cur map[string]map[string]*discoveryv3.Resource
}

func (z *Zone) newView(ctx context.Context) (*view, error) {
	recs, err := z.store.List(ctx, api.TypeDataplane, "")
	if err != nil {
		return nil, fmt.Errorf("list dataplanes: %w", err)
	}
	v := &view{z: z, dps: map[string]store.Record{}, cur: map[string]map[string]*discoveryv3.Resource{}}
	for _, typ := range zoneToGlobalTypes {
		v.cur[typ] = map[string]*discoveryv3.Resource{}
	}
	for _, dp := range recs {
		if err := v.setDataplane(dp); err != nil {
			return nil, err
		}
	}
	return v, v.refreshInsights(nil)
}

// setDataplane records a zone Dataplane and its wire form.
func (v *view) setDataplane(dp store.Record) error {
	if dp.Labels[LabelOrigin] == OriginGlobal {
		return nil
	}
	res, err := encode(api.TypeDataplane, toWire(dp))
	if err != nil {
		return err
	}
	v.dps[res.Name] = dp
	v.cur[api.TypeDataplane][res.Name] = res
	return nil
}

// refreshInsights recomputes the insights of names (all when nil).
func (v *view) refreshInsights(names map[string]bool) error {
	if v.z.cfg.Insight == nil {
		return nil
	}
	if names == nil {
		names = make(map[string]bool, len(v.dps))
		for name := range v.dps {
			names[name] = true
		}
	}
	for name := range names {
		dp, ok := v.dps[name]
		if !ok {
			continue
		}
		body, ok := v.z.cfg.Insight(dp)
		if !ok || !json.Valid(body) {
			delete(v.cur[TypeDataplaneInsight], name)
			continue
		}
		res, err := encode(TypeDataplaneInsight, wireRecord{Mesh: dp.Mesh, Name: dp.Name, Spec: body})
		if err != nil {
			return err
		}
		v.cur[TypeDataplaneInsight][name] = res
	}
	return nil
}

// apply takes a batch of store events into the view.
func (v *view) apply(batch []store.Event) error {
	touched := map[string]bool{}
	for _, ev := range batch {
		name := resourceName(ev.Record.Mesh, ev.Record.Name)
		touched[name] = true
		if ev.Record.Type != api.TypeDataplane {
			continue // a certificate changed: its insight is recomputed below
		}
		if ev.Kind == store.EventDeleted {
			delete(v.dps, name)
			delete(v.cur[api.TypeDataplane], name)
			delete(v.cur[TypeDataplaneInsight], name)
			continue
		}
		if err := v.setDataplane(ev.Record); err != nil {
			return err
		}
	}
	return v.refreshInsights(touched)
}
