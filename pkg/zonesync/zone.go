package zonesync

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
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

	"meshca/pkg/api"
	"meshca/pkg/store"
)

// ZoneConfig configures a zone's side of the sync.
type ZoneConfig struct {
	// Zone is this zone's name; its token must be bound to it.
	Zone string
	// GlobalAddress is global's sync server, HOST:PORT.
	GlobalAddress string
	// TLS verifies global's certificate (RootCAs: --global-ca-cert).
	TLS *tls.Config
	// Token returns the zone token; it is called on every connection, so a
	// replaced token file is picked up.
	Token func() (string, error)
	// Version is reported to global.
	Version string
	// Insight returns what global is told of a data plane (its streams and
	// certificate, as JSON), or false when there is nothing to tell.
	Insight func(dp store.Record) ([]byte, bool)
	Logger  *slog.Logger
	// BackoffBase and BackoffMax shape reconnection (defaults 500 ms, 30 s).
	BackoffBase, BackoffMax time.Duration
	// Resync is how often the zone looks again at what it reports without a
	// store event (insights, resources global refused); default 5 s.
	Resync time.Duration
}

// Zone is a zone control plane's side of the sync: it dials global, keeps
// the connection, and reconnects with capped, jittered backoff.
type Zone struct {
	store store.Store
	cfg   ZoneConfig
	log   *slog.Logger

	mu       sync.Mutex
	state    ZoneConnection
	lastLogd string
}

// ZoneConnection is a zone's view of its link to global.
type ZoneConnection struct {
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	LastSync  time.Time `json:"lastSync,omitzero"`
	LastError string    `json:"lastError,omitempty"`
	Global    string    `json:"global"`
}

// NewZone returns a zone's side of the sync; start it with Run.
func NewZone(st store.Store, cfg ZoneConfig) *Zone {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 500 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 5 * time.Second
	}
	return &Zone{store: st, cfg: cfg, log: cfg.Logger.With("component", "zonesync", "zone", cfg.Zone),
		state: ZoneConnection{Since: time.Now(), Global: cfg.GlobalAddress}}
}

// Status returns the state of the link to global.
func (z *Zone) Status() ZoneConnection {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.state
}

// setState records the link's state; each change is logged once, and so is
// each new reason for failing to connect.
func (z *Zone) setState(connected bool, err error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if connected != z.state.Connected {
		z.state.Connected, z.state.Since = connected, time.Now()
		if connected {
			z.log.Info("connected to the global control plane", "global", z.cfg.GlobalAddress)
		} else {
			z.log.Warn("disconnected from the global control plane; serving from what was synced", "global", z.cfg.GlobalAddress, "error", msg)
			z.lastLogd = msg
		}
	} else if !connected && msg != "" && msg != z.lastLogd {
		z.log.Warn("cannot reach the global control plane; serving from what was synced", "global", z.cfg.GlobalAddress, "error", msg)
		z.lastLogd = msg
	}
	z.state.LastError = msg
}

func (z *Zone) synced() {
	z.mu.Lock()
	z.state.LastSync = time.Now()
	z.mu.Unlock()
}

// Run keeps the zone connected to global until ctx ends.
func (z *Zone) Run(ctx context.Context) error {
	attempt := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := z.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		z.setState(false, err)
		if time.Since(start) > z.cfg.BackoffMax {
			attempt = 0
		}
		attempt++
		wait := min(z.cfg.BackoffMax, z.cfg.BackoffBase<<min(attempt-1, 16))
		wait = wait/2 + time.Duration(mrand.Int64N(int64(wait/2)+1)) // jitter: [wait/2, wait]
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// session runs one connection: both streams until either ends.
func (z *Zone) session(ctx context.Context) error {
	token, err := z.cfg.Token()
	if err != nil {
		return fmt.Errorf("zone token: %w", err)
	}
	conn, err := grpc.NewClient(z.cfg.GlobalAddress,
		grpc.WithTransportCredentials(credentials.NewTLS(z.cfg.TLS)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx,
		mdAuthorization, "Bearer "+token, mdZone, z.cfg.Zone, mdVersion, z.cfg.Version))
	defer cancel()
	g2z, err := conn.NewStream(ctx, &serviceDesc.Streams[0], methodGlobalToZone)
	if err != nil {
		return err
	}
	z2g, err := conn.NewStream(ctx, &serviceDesc.Streams[1], methodZoneToGlobal)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- z.receive(ctx, g2z) }()
	go func() { errc <- z.send(ctx, z2g) }()
	return <-errc
}

// receive takes Meshes and Secrets from global into the zone's store.
func (z *Zone) receive(ctx context.Context, s grpc.ClientStream) error {
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
		if err := z.apply(ctx, typ, resp); err != nil {
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
func (z *Zone) apply(ctx context.Context, typ string, resp *discoveryv3.DeltaDiscoveryResponse) error {
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
	var all []store.Op
	for _, o := range ops {
		all = append(all, o...)
	}
	if len(all) > 0 {
		if err := z.store.Commit(ctx, all...); err != nil {
			for _, o := range ops {
				if err := z.store.Commit(ctx, o...); err != nil && !errors.Is(err, store.ErrNotFound) {
					refused = append(refused, fmt.Sprintf("%s: %v", o[0].Record.Key, err))
				}
			}
		}
	}
	if len(refused) > 0 {
		return errors.New(strings.Join(refused, "; "))
	}
	return nil
}

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
