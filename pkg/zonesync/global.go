package zonesync

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"meshca/pkg/api"
	"meshca/pkg/store"
)

// ZoneAuthenticator verifies zone tokens (pkg/tokens implements it).
type ZoneAuthenticator interface {
	// VerifyZone returns the zone name a token is bound to, or an error
	// (expired, revoked, badly signed). The error never contains the token.
	VerifyZone(ctx context.Context, token string) (zone string, err error)
}

// TypeZone is the global record of a zone that has connected once.
const TypeZone = "Zone"

// ZoneStatus is what global knows of one zone.
type ZoneStatus struct {
	Name      string    `json:"name"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"` // of the current state
	LastSync  time.Time `json:"lastSync,omitzero"`
	// Sent and Received count resources, since this global started.
	Sent     int64 `json:"sent"`
	Received int64 `json:"received"`
	// SentBytes and ReceivedBytes count the messages' encoded size.
	SentBytes     int64  `json:"sentBytes"`
	ReceivedBytes int64  `json:"receivedBytes"`
	Version       string `json:"version,omitempty"`
}

// Global is the global control plane's side of the sync.
type Global struct {
	store  store.Store
	auth   ZoneAuthenticator
	logger *slog.Logger
	now    func() time.Time

	mu    sync.Mutex
	zones map[string]*zoneState
	// tokensChanged is closed and replaced when zone-token keys or
	// revocations change: every open stream then verifies its token again.
	tokensChanged chan struct{}
}

type zoneState struct {
	status  ZoneStatus
	streams int
}

// NewGlobal returns the global side; serve it with Serve.
func NewGlobal(st store.Store, auth ZoneAuthenticator, logger *slog.Logger) *Global {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Global{store: st, auth: auth, logger: logger.With("component", "zonesync"), now: time.Now,
		zones: map[string]*zoneState{}, tokensChanged: make(chan struct{})}
}

// Serve serves zones on lis with TLS until ctx ends.
func (g *Global) Serve(ctx context.Context, lis net.Listener, tlsConf *tls.Config) error {
	if err := g.loadZones(ctx); err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConf)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	srv.RegisterService(&serviceDesc, g)
	go g.watchTokens(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		return nil
	case err := <-errc:
		return err
	}
}

// loadZones lists the zones that connected before (persisted as Zone records).
func (g *Global) loadZones(ctx context.Context) error {
	recs, err := g.store.List(ctx, TypeZone, "")
	if err != nil {
		return fmt.Errorf("zonesync: list zones: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range recs {
		if g.zones[r.Name] == nil {
			g.zones[r.Name] = &zoneState{status: ZoneStatus{Name: r.Name, Since: r.ModificationTime}}
		}
	}
	return nil
}

// Zones returns every zone that has connected once, by name.
func (g *Global) Zones() []ZoneStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]ZoneStatus, 0, len(g.zones))
	for _, n := range slices.Sorted(maps.Keys(g.zones)) {
		out = append(out, g.zones[n].status)
	}
	return out
}

func (g *Global) watchTokens(ctx context.Context) {
	for ev := range g.store.Watch(ctx, api.TypeGlobalSecret) {
		if strings.HasPrefix(ev.Record.Name, "zone-token-") {
			g.mu.Lock()
			close(g.tokensChanged)
			g.tokensChanged = make(chan struct{})
			g.mu.Unlock()
		}
	}
}

// authenticate checks a stream's zone token and the zone name it claims.
func (g *Global) authenticate(ctx context.Context) (zone, token, version string, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	token, ok := strings.CutPrefix(first(mdAuthorization), "Bearer ")
	if !ok || token == "" {
		return "", "", "", status.Error(codes.Unauthenticated, "no zone token: start the zone with --zone-token-file (meshctl generate zone-token --zone NAME on global)")
	}
	zone, err = g.auth.VerifyZone(ctx, token)
	if err != nil {
		return "", "", "", status.Errorf(codes.Unauthenticated, "zone token refused: %v", err)
	}
	if claimed := first(mdZone); claimed != zone {
		return "", "", "", status.Errorf(codes.PermissionDenied, "zone token is for zone %q, but this zone is %q", zone, claimed)
	}
	return zone, token, first(mdVersion), nil
}

// guard authenticates a stream and cancels its context as soon as its
// token stops verifying (revoked, signing key removed).
func (g *Global) guard(ss grpc.ServerStream) (zone string, ctx context.Context, done func(), err error) {
	zone, token, version, err := g.authenticate(ss.Context())
	if err != nil {
		g.logger.Warn("zone refused", "zone", metadata.ValueFromIncomingContext(ss.Context(), mdZone), "error", err)
		return "", nil, nil, err
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	go func() {
		for {
			g.mu.Lock()
			ch := g.tokensChanged
			g.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			if _, err := g.auth.VerifyZone(ctx, token); err != nil && ctx.Err() == nil {
				g.logger.Warn("zone token no longer valid; disconnecting the zone", "zone", zone, "error", err)
				cancel(status.Errorf(codes.Unauthenticated, "zone token no longer valid: %v", err))
				return
			}
		}
	}()
	g.connected(ctx, zone, version, +1)
	return zone, ctx, func() { cancel(nil); g.connected(context.Background(), zone, version, -1) }, nil
}

func (g *Global) connected(ctx context.Context, zone, version string, delta int) {
	g.mu.Lock()
	z := g.zones[zone]
	first := z == nil
	if first {
		z = &zoneState{status: ZoneStatus{Name: zone}}
		g.zones[zone] = z
	}
	was := z.streams > 0
	z.streams += delta
	if now := z.streams > 0; now != was {
		z.status.Connected, z.status.Since = now, g.now()
		if version != "" {
			z.status.Version = version
		}
		if now {
			g.logger.Info("zone connected", "zone", zone, "version", version)
		} else {
			g.logger.Info("zone disconnected", "zone", zone)
		}
	}
	g.mu.Unlock()
	if first {
		rec := store.Record{Key: store.Key{Type: TypeZone, Name: zone}, Spec: []byte(`{"enabled":true}`)}
		if err := store.Upsert(ctx, g.store, rec); err != nil {
			g.logger.Warn("could not record the zone", "zone", zone, "error", err)
		}
	}
}

func (g *Global) counted(zone string, sent, received int, msg proto.Message) {
	size := int64(proto.Size(msg))
	g.mu.Lock()
	defer g.mu.Unlock()
	if z := g.zones[zone]; z != nil {
		z.status.Sent += int64(sent)
		z.status.Received += int64(received)
		if sent > 0 || received == 0 {
			z.status.SentBytes += size
		} else {
			z.status.ReceivedBytes += size
		}
		z.status.LastSync = g.now()
	}
}

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
			g.counted(zone, len(resp.Resources)+len(resp.RemovedResources), 0, resp)
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
		g.counted(zone, 0, len(resp.Resources)+len(resp.RemovedResources), resp)
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
	var all []store.Op
	for _, c := range changes {
		all = append(all, c.ops...)
	}
	if len(all) > 0 {
		if err := g.store.Commit(ctx, all...); err != nil {
			for _, c := range changes {
				err := g.store.Commit(ctx, c.ops...)
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
