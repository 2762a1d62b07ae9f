package authn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Listener says on which listener a request arrived.
type Listener int

const (
	// Plain is the plain-HTTP listener, normally bound to loopback.
	Plain Listener = iota + 1
	// HTTPS is the TLS listener.
	HTTPS
)

func (l Listener) String() string {
	switch l {
	case Plain:
		return "http"
	case HTTPS:
		return "https"
	}
	return "unknown"
}

// ErrUnauthenticated is wrapped by every error that means the credentials
// presented are not acceptable (malformed, bad signature, expired, revoked).
// Other errors (the store is unreachable) are transient.
var ErrUnauthenticated = errors.New("unauthenticated")

// UserTokenVerifier verifies a user token and returns who it names. Errors
// meaning "not acceptable" must wrap ErrUnauthenticated.
type UserTokenVerifier func(ctx context.Context, token string) (Identity, error)

// Authenticator establishes the identity of API requests.
type Authenticator struct {
	// LocalhostIsAdmin makes a loopback client of the Plain listener that
	// sends no credentials an admin (Kuma's default).
	LocalhostIsAdmin bool
	// VerifyUserToken verifies bearer tokens; nil refuses every token.
	VerifyUserToken UserTokenVerifier
}

// Authenticate returns the identity of r, which arrived on listener l.
// A request that presents credentials is that identity or an error
// (never silently anonymous); one that presents none is admin (loopback
// client of the plain listener, when allowed) or Anonymous.
func (a *Authenticator) Authenticate(r *http.Request, l Listener) (Identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, _ := strings.Cut(h, " ")
		token = strings.TrimSpace(token)
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			return Identity{}, fmt.Errorf("%w: the Authorization header must be \"Bearer <user token>\"", ErrUnauthenticated)
		}
		if a.VerifyUserToken == nil {
			return Identity{}, fmt.Errorf("%w: user tokens are not enabled", ErrUnauthenticated)
		}
		return a.VerifyUserToken(r.Context(), token)
	}
	if l == Plain && a.LocalhostIsAdmin && IsLoopbackAddr(r.RemoteAddr) {
		return Admin(), nil
	}
	return Anonymous(), nil
}
