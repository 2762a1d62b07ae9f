package zonesync

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

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

// counted records one response exchanged with zone: sent to it (sent) or
// received from it, with n resources.
func (g *Global) counted(zone string, sent bool, n int, msg proto.Message) {
	size := int64(proto.Size(msg))
	g.mu.Lock()
	defer g.mu.Unlock()
	z := g.zones[zone]
	if z == nil {
		return
	}
	if sent {
		z.status.Sent += int64(n)
		z.status.SentBytes += size
	} else {
		z.status.Received += int64(n)
		z.status.ReceivedBytes += size
	}
	z.status.LastSync = g.now()
}
