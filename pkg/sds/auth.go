package sds

import (
	"context"
	"errors"
	"fmt"
	"time"

	"meshca/pkg/tokens"
)

// TokenAuthenticator adapts dataplane tokens to an Authenticator. Its
// Generation is only meaningful while Tokens.Run is watching the store;
// otherwise every push re-verifies the token.
type TokenAuthenticator struct {
	Tokens *tokens.Tokens
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
