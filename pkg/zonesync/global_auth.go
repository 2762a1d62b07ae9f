package zonesync

// Zone authentication on global: tokens, the zone name claimed, revocations.

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"meshca/pkg/api"
)

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
