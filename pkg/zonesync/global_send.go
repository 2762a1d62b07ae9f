package zonesync

// Global to zone: Meshes, Secrets and what else zones need.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshca/pkg/store"
)

// streamErr turns the end of a stream into its status: the guard's cause
// (a revoked token) when it has one.
func streamErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// globalToZone sends Meshes and Secrets to a zone: what changed since what
// the zone says it holds, then every change as it is committed.
func (g *Global) globalToZone(ss grpc.ServerStream) error {
	zone, ctx, done, err := g.guard(ss)
	if err != nil {
		return err
	}
	defer done()
	events := g.store.Watch(ctx, globalToZoneTypes...) // before any listing: nothing falls between
	reqs := make(chan *discoveryv3.DeltaDiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req := new(discoveryv3.DeltaDiscoveryRequest)
			if err := ss.RecvMsg(req); err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	sent := map[string]map[string]string{} // type -> name -> version the zone holds
	dirty := map[string]map[string]bool{}
	// After a subscription one response goes out even when empty: it tells
	// the zone it is up to date.
	answer := map[string]bool{}
	mark := func(typ, name string) {
		if sent[typ] == nil {
			return // not subscribed
		}
		if dirty[typ] == nil {
			dirty[typ] = map[string]bool{}
		}
		dirty[typ][name] = true
	}
	nonce := 0
	for {
		select {
		case <-ctx.Done():
			return streamErr(ctx, ctx.Err())
		case err := <-recvErr:
			return streamErr(ctx, err)
		case req := <-reqs:
			typ := typeOf(req.GetTypeUrl())
			if !slices.Contains(globalToZoneTypes, typ) {
				return status.Errorf(codes.InvalidArgument, "type %q does not flow from global to zones", req.GetTypeUrl())
			}
			if req.GetResponseNonce() == "" { // a subscription: resume from what the zone holds
				sent[typ] = maps.Clone(req.GetInitialResourceVersions())
				if sent[typ] == nil {
					sent[typ] = map[string]string{}
				}
				recs, err := g.store.List(ctx, typ, "")
				if err != nil {
					return status.Errorf(codes.Unavailable, "list %s: %v", typ, err)
				}
				for _, r := range recs {
					if syncs(typ, r.Name) {
						mark(typ, resourceName(r.Mesh, r.Name))
					}
				}
				for name := range sent[typ] {
					mark(typ, name)
				}
				answer[typ] = true
			} else if d := req.GetErrorDetail(); d != nil {
				g.logger.Warn("zone refused resources", "zone", zone, "type", typ, "error", d.GetMessage())
			}
		case ev := <-events:
			if syncs(ev.Record.Type, ev.Record.Name) {
				mark(ev.Record.Type, resourceName(ev.Record.Mesh, ev.Record.Name))
			}
		}
		// Take every change already queued before sending: one response
		// per type for a burst.
	drain:
		for {
			select {
			case ev := <-events:
				if syncs(ev.Record.Type, ev.Record.Name) {
					mark(ev.Record.Type, resourceName(ev.Record.Mesh, ev.Record.Name))
				}
			default:
				break drain
			}
		}
		for _, typ := range globalToZoneTypes {
			if len(dirty[typ]) == 0 && !answer[typ] {
				continue
			}
			resp, err := g.diff(ctx, typ, dirty[typ], sent[typ])
			delete(dirty, typ)
			if err != nil {
				return status.Errorf(codes.Unavailable, "%v", err)
			}
			if resp == nil && answer[typ] {
				resp = &discoveryv3.DeltaDiscoveryResponse{TypeUrl: TypeURLPrefix + typ}
			}
			delete(answer, typ)
			if resp == nil {
				continue
			}
			nonce++
			resp.Nonce = strconv.Itoa(nonce)
			if err := ss.SendMsg(resp); err != nil {
				return streamErr(ctx, err)
			}
			g.counted(zone, true, len(resp.Resources)+len(resp.RemovedResources), resp)
		}
	}
}

// diff builds the response that brings a zone holding sent up to date for
// the names in dirty, and records what it will then hold.
func (g *Global) diff(ctx context.Context, typ string, dirty map[string]bool, sent map[string]string) (*discoveryv3.DeltaDiscoveryResponse, error) {
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: TypeURLPrefix + typ}
	for _, name := range slices.Sorted(maps.Keys(dirty)) {
		mesh, n := splitName(name)
		rec, err := g.store.Get(ctx, store.Key{Type: typ, Mesh: mesh, Name: n})
		switch {
		case errors.Is(err, store.ErrNotFound):
			if _, held := sent[name]; held {
				resp.RemovedResources = append(resp.RemovedResources, name)
				delete(sent, name)
			}
		case err != nil:
			return nil, fmt.Errorf("read %s %s: %w", typ, name, err)
		case !syncs(typ, n):
			if _, held := sent[name]; held {
				resp.RemovedResources = append(resp.RemovedResources, name)
				delete(sent, name)
			}
		default:
			res, err := encode(typ, toWire(rec))
			if err != nil {
				return nil, err
			}
			if sent[name] == res.Version {
				continue
			}
			resp.Resources = append(resp.Resources, res)
			sent[name] = res.Version
		}
	}
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 {
		return nil, nil
	}
	return resp, nil
}
