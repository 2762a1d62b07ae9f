package sds

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"meshca/pkg/tokens"
)

// TokenAuthenticator adapts dataplane tokens to an Authenticator. Its
// Generation is only meaningful while Tokens.Run is watching the store;
// otherwise every push re-verifies the token.
type TokenAuthenticator struct {
	Tokens *tokens.Tokens
	// UnknownKeyIsTransient is set on a zone control plane: a token signed
	// by a key it does not hold yet was most likely made on global a moment
	// ago, before the key was synced, so the data plane is asked to retry
	// rather than told its token is bad.
	UnknownKeyIsTransient bool
}

var _ GenerationAuthenticator = TokenAuthenticator{}

// Verify implements Authenticator.
func (a TokenAuthenticator) Verify(ctx context.Context, token string) (string, string, error) {
	mesh, name, _, err := a.VerifyUntil(ctx, token)
	return mesh, name, err
}

// VerifyUntil implements GenerationAuthenticator.
func (a TokenAuthenticator) VerifyUntil(ctx context.Context, token string) (string, string, time.Time, error) {
	c, err := a.Tokens.Verify(ctx, token)
	if a.UnknownKeyIsTransient && errors.Is(err, tokens.ErrUnknownSigningKey) {
		return "", "", time.Time{}, errors.New("the signing key of this token is not in this zone (yet): it may not have been synced from the global control plane; retry")
	}
	if errors.Is(err, tokens.ErrInvalid) {
		return "", "", time.Time{}, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if err != nil {
		return "", "", time.Time{}, err
	}
	return c.Mesh, c.Name, c.ExpiresAt, nil
}

// Generation implements GenerationAuthenticator.
func (a TokenAuthenticator) Generation(mesh string) (uint64, bool) {
	return a.Tokens.Generation(mesh)
}

// Changed implements ChangeNotifier.
func (a TokenAuthenticator) Changed() <-chan struct{} { return a.Tokens.Changed() }

// NodeAuthenticator is implemented by authenticators whose credentials do
// not name a dataplane by themselves: a Kubernetes ServiceAccount token
// names a namespace and an account, not a Dataplane. The server then reads
// the node id of the stream's first request before authenticating it (the
// worker waits for that request) and asks whether the credential may act
// for that node; the stream's later requests must carry the same node id,
// as always. VerifyNode's until is when a positive verdict lapses by itself
// (zero: re-verify before every push); if the authenticator is also a
// GenerationAuthenticator its Generation is honoured as for tokens. Errors
// follow Authenticator: wrapping ErrRejected refuses the stream with
// codes.Unauthenticated, anything else is transient (codes.Unavailable).
//
// Verify (of Authenticator) is not called on a server whose authenticator
// is a NodeAuthenticator.
type NodeAuthenticator interface {
	VerifyNode(ctx context.Context, token, node string) (mesh, name string, until time.Time, err error)
}

// SplitNodeID splits a node id `<mesh>.<name>` at its first dot, as Kuma
// reads its proxy ids (a mesh name holding a dot cannot be told apart).
func SplitNodeID(node string) (mesh, name string, ok bool) {
	mesh, name, ok = strings.Cut(node, ".")
	return mesh, name, ok && mesh != "" && name != ""
}
