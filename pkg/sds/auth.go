package sds

import (
	"context"
	"errors"
	"fmt"

	"meshca/pkg/tokens"
)

// TokenAuthenticator adapts dataplane tokens to an Authenticator.
type TokenAuthenticator struct {
	Tokens *tokens.Tokens
}

var _ Authenticator = TokenAuthenticator{}

// Verify implements Authenticator.
func (a TokenAuthenticator) Verify(ctx context.Context, token string) (string, string, error) {
	c, err := a.Tokens.Verify(ctx, token)
	if errors.Is(err, tokens.ErrInvalid) {
		return "", "", fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if err != nil {
		return "", "", err
	}
	return c.Mesh, c.Name, nil
}
