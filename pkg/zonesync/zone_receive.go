package zonesync

// Global to zone, on the zone: what global sends lands in the zone's store.

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

	"meshca/pkg/store"
)

// receive takes Meshes and Secrets from global into the zone's store.
func (z *Zone) receive(ctx context.Context, s grpc.ClientStream, fence []store.Op) error {
	for _, typ := range globalToZoneTypes {
		held, err := z.heldFromGlobal(ctx, typ)
		if err != nil {
			return err
		}
		if err := s.SendMsg(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: TypeURLPrefix + typ, InitialResourceVersions: held}); err != nil {
			return err
		}
	}
	for {
		resp := new(discoveryv3.DeltaDiscoveryResponse)
		if err := s.RecvMsg(resp); err != nil {
			return err
		}
		z.setState(true, nil)
		typ := typeOf(resp.GetTypeUrl())
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if err := z.apply(ctx, typ, resp, fence); err != nil {
			if errors.Is(err, ErrFenced) {
				// Not global's fault: no NACK; another instance syncs now.
				return err
			}
			z.log.Warn("could not apply what the global control plane sent", "type", typ, "error", err)
			ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		}
		z.synced()
		if err := s.SendMsg(ack); err != nil {
			return err
		}
	}
}

func (z *Zone) heldFromGlobal(ctx context.Context, typ string) (map[string]string, error) {
	recs, err := z.store.List(ctx, typ, "")
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", typ, err)
	}
	held := map[string]string{}
	for _, r := range recs {
		if r.Labels[LabelOrigin] == OriginGlobal {
			held[resourceName(r.Mesh, r.Name)] = r.Labels[LabelSyncVersion]
		}
	}
	return held, nil
}

// apply writes what global sent: only records that came from global are
// created, changed or deleted; a zone-local record of the same name is left
// as it is and reported.
func (z *Zone) apply(ctx context.Context, typ string, resp *discoveryv3.DeltaDiscoveryResponse, fence []store.Op) error {
	if !slices.Contains(globalToZoneTypes, typ) {
		return fmt.Errorf("type %q does not flow from global to zones", typ)
	}
	var ops [][]store.Op
	var refused []string
	for _, res := range resp.GetResources() {
		w, err := decode(typ, res)
		if err != nil {
			refused = append(refused, err.Error())
			continue
		}
		key := store.Key{Type: typ, Mesh: w.Mesh, Name: w.Name}
		if !syncs(typ, w.Name) {
			refused = append(refused, fmt.Sprintf("%s is not synced to zones", key))
			continue
		}
		if rec, err := z.store.Get(ctx, key); err == nil && rec.Labels[LabelOrigin] != OriginGlobal {
			refused = append(refused, fmt.Sprintf("%s exists in this zone and was not created by sync: left as it is", key))
			continue
		}
		labels := maps.Clone(w.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelOrigin], labels[LabelSyncVersion] = OriginGlobal, res.GetVersion()
		ops = append(ops, []store.Op{{Kind: store.OpUpsert, Record: store.Record{Key: key, Spec: w.Spec, Labels: labels}}})
	}
	for _, name := range resp.GetRemovedResources() {
		mesh, n := splitName(name)
		key := store.Key{Type: typ, Mesh: mesh, Name: n}
		rec, err := z.store.Get(ctx, key)
		if err != nil || rec.Labels[LabelOrigin] != OriginGlobal {
			continue // gone already, or zone-local: sync never deletes what it did not create
		}
		ops = append(ops, []store.Op{{Kind: store.OpDelete, Record: store.Record{Key: key, Version: rec.Version}}})
	}
	errs := commitAllOrEach(ctx, z.store, ops, fence)
	if slices.ContainsFunc(errs, func(err error) bool { return errors.Is(err, store.ErrConflict) }) {
		if held, err := fenceHolds(ctx, z.store, fence); err == nil && !held {
			return fmt.Errorf("%w: %w", ErrFenced, store.ErrConflict)
		}
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			refused = append(refused, fmt.Sprintf("%s: %v", ops[i][0].Record.Key, err))
		}
	}
	if len(refused) > 0 {
		return errors.New(strings.Join(refused, "; "))
	}
	return nil
}

// ErrFenced says the zone's sync wrote under a leader term that has ended:
// the write was refused, nothing of it committed.
var ErrFenced = errors.New("the sync's leader term ended: another instance leads and syncs")

// fenceHolds reports whether every record fence requires is still at the
// version it requires (false once another leader term started).
func fenceHolds(ctx context.Context, st store.Store, fence []store.Op) (bool, error) {
	for _, op := range fence {
		rec, err := st.Get(ctx, op.Record.Key)
		if err != nil {
			return false, err
		}
		if rec.Version != op.Record.Version {
			return false, nil
		}
	}
	return true, nil
}
