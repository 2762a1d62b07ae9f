package zonesync

// Zone to global: a zone's Dataplanes and insights, bound to that zone.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"meshca/pkg/api"
	"meshca/pkg/store"
)

// zoneToGlobal receives a zone's Dataplanes and insights.
func (g *Global) zoneToGlobal(ss grpc.ServerStream) error {
	zone, ctx, done, err := g.guard(ss)
	if err != nil {
		return err
	}
	defer done()
	for _, typ := range zoneToGlobalTypes {
		held, err := g.heldFrom(ctx, typ, zone)
		if err != nil {
			return status.Errorf(codes.Unavailable, "%v", err)
		}
		if err := ss.SendMsg(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: TypeURLPrefix + typ, InitialResourceVersions: held}); err != nil {
			return streamErr(ctx, err)
		}
	}
	for {
		resp := new(discoveryv3.DeltaDiscoveryResponse)
		if err := ss.RecvMsg(resp); err != nil {
			return streamErr(ctx, err)
		}
		typ := typeOf(resp.GetTypeUrl())
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if !slices.Contains(zoneToGlobalTypes, typ) {
			ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: fmt.Sprintf("type %q does not flow from zones to global", typ)}
		} else if names, err := g.applyFromZone(ctx, zone, typ, resp); err != nil {
			// The names refused travel in the details, so the zone sends
			// them again later (their Mesh may be created meanwhile).
			ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			for _, n := range names {
				ack.ErrorDetail.Details = append(ack.ErrorDetail.Details, &anypb.Any{TypeUrl: refusedTypeURL, Value: []byte(n)})
			}
			g.logger.Warn("refused resources from a zone", "zone", zone, "type", typ, "error", err)
		}
		g.counted(zone, false, len(resp.Resources)+len(resp.RemovedResources), resp)
		if err := ss.SendMsg(ack); err != nil {
			return streamErr(ctx, err)
		}
	}
}

// globalName is where a zone's record is kept on global.
func globalName(zone, name string) string { return name + "." + zone }

// heldFrom lists the versions of a zone's records of typ that global holds,
// by the names the zone uses.
func (g *Global) heldFrom(ctx context.Context, typ, zone string) (map[string]string, error) {
	recs, err := g.store.List(ctx, typ, "")
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", typ, err)
	}
	held := map[string]string{}
	for _, r := range recs {
		if r.Labels[LabelZone] == zone {
			held[resourceName(r.Mesh, r.Labels[LabelDisplayName])] = r.Labels[LabelSyncVersion]
		}
	}
	return held, nil
}

// applyFromZone stores what a zone sent, under names and labels that bind
// it to that zone. A record of another zone (or of global) is never
// overwritten or deleted. Everything is committed at once, conditional on
// the meshes existing; if that fails, each resource is committed alone and
// the ones refused are named.
func (g *Global) applyFromZone(ctx context.Context, zone, typ string, resp *discoveryv3.DeltaDiscoveryResponse) (refusedNames []string, err error) {
	type change struct {
		name string
		ops  []store.Op
	}
	var changes []change
	var refused []string
	for _, res := range resp.GetResources() {
		w, err := decode(typ, res)
		if err != nil {
			refused = append(refused, err.Error())
			refusedNames = append(refusedNames, res.GetName())
			continue
		}
		key := store.Key{Type: typ, Mesh: w.Mesh, Name: globalName(zone, w.Name)}
		if err := g.ownedBy(ctx, key, zone, false); err != nil {
			refused = append(refused, err.Error())
			refusedNames = append(refusedNames, res.GetName())
			continue
		}
		labels := map[string]string{}
		maps.Copy(labels, w.Labels)
		labels[LabelZone], labels[LabelDisplayName], labels[LabelSyncVersion] = zone, w.Name, res.GetVersion()
		ops := []store.Op{{Kind: store.OpUpsert, Record: store.Record{Key: key, Spec: w.Spec, Labels: labels}}}
		if w.Mesh != "" {
			ops = append([]store.Op{{Kind: store.OpRequire, Record: store.Record{Key: store.Key{Type: api.TypeMesh, Name: w.Mesh}}}}, ops...)
		}
		changes = append(changes, change{res.GetName(), ops})
	}
	for _, name := range resp.GetRemovedResources() {
		mesh, n := splitName(name)
		key := store.Key{Type: typ, Mesh: mesh, Name: globalName(zone, n)}
		if err := g.ownedBy(ctx, key, zone, true); err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				refused = append(refused, err.Error())
			}
			continue
		}
		changes = append(changes, change{name, []store.Op{{Kind: store.OpDelete, Record: store.Record{Key: key}}}})
	}
	ops := make([][]store.Op, len(changes))
	for i, c := range changes {
		ops[i] = c.ops
	}
	for i, err := range commitAllOrEach(ctx, g.store, ops, nil) {
		c := changes[i]
		switch {
		case err == nil:
		case c.ops[len(c.ops)-1].Kind == store.OpDelete && errors.Is(err, store.ErrNotFound):
			// already gone
		case errors.Is(err, store.ErrNotFound):
			refused = append(refused, fmt.Sprintf("%s: its mesh does not exist on the global control plane", c.name))
			refusedNames = append(refusedNames, c.name)
		default:
			refused = append(refused, fmt.Sprintf("%s: %v", c.name, err))
			refusedNames = append(refusedNames, c.name)
		}
	}
	if len(refused) > 0 {
		return refusedNames, errors.New(strings.Join(refused, "; "))
	}
	return nil, nil
}

// ownedBy checks that key, if stored, belongs to zone. With mustExist it
// answers store.ErrNotFound when it is not stored.
func (g *Global) ownedBy(ctx context.Context, key store.Key, zone string, mustExist bool) error {
	rec, err := g.store.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if mustExist {
			return err
		}
		return nil
	case err != nil:
		return err
	case rec.Labels[LabelZone] != zone:
		return fmt.Errorf("%s belongs to %s, not to zone %q", key, owner(rec), zone)
	}
	return nil
}

func owner(rec store.Record) string {
	if z := rec.Labels[LabelZone]; z != "" {
		return fmt.Sprintf("zone %q", z)
	}
	return "the global control plane"
}
