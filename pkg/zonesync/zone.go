package zonesync

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

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

// Run keeps the zone connected to global until ctx ends. Every write of
// the sync carries fence in its commit: the leader term's fence
// (leader.Term.Fence), so that once another instance leads, a paused or
// partitioned old leader commits nothing. A write refused by the fence ends
// Run with an error wrapping ErrFenced (and store.ErrConflict).
func (z *Zone) Run(ctx context.Context, fence ...store.Op) error {
	attempt := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := z.session(ctx, fence)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrFenced) {
			z.setState(false, err)
			return err
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
func (z *Zone) session(ctx context.Context, fence []store.Op) error {
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
	go func() { errc <- z.receive(ctx, g2z, fence) }()
	go func() { errc <- z.send(ctx, z2g) }()
	return <-errc
}
