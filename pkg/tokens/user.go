package tokens

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// User tokens are JWTs for people and tools calling the API, signed like
// dataplane tokens (RS256, kid = serial) by keys kept as GlobalSecrets
//
//	user-token-signing-key-<serial>
//
// and revoked by listing their IDs in the GlobalSecret user-token-revocations.
// They carry the user's Name and Groups (Kuma's claim names) and the issuer
// UserTokenIssuer; a token with another issuer is refused even when its
// signature is good, so that no other JWT signed with the same key could
// pass for a user token.
const (
	UserSigningKeyPrefix = "user-token-signing-key-"
	UserRevocationsName  = "user-token-revocations"
	UserTokenIssuer      = "meshca"
)

// UserSigningKeyName is the GlobalSecret name of the user-token signing key
// with the given serial.
func UserSigningKeyName(serial int) string { return userKeyring().keyName(serial) }

// UserClaims are the verified identity a user token carries.
type UserClaims struct {
	Name      string
	Groups    []string
	ID        string
	ExpiresAt time.Time
}

// userJWTClaims is the wire form (Kuma's UserClaims: Name, Groups).
type userJWTClaims struct {
	Name   string   `json:"Name"`
	Groups []string `json:"Groups,omitempty"`
	jwt.RegisteredClaims
}

// GenerateUser issues a user token for name in groups, valid for validFor
// (which must be positive). The first user-token signing key is created on
// demand.
func (t *Tokens) GenerateUser(ctx context.Context, name string, groups []string, validFor time.Duration) (string, error) {
	if name == "" {
		return "", errors.New("generate user token: name is required")
	}
	if validFor <= 0 {
		return "", fmt.Errorf("generate user token: validity must be positive, got %s", validFor)
	}
	claims := &userJWTClaims{Name: name, Groups: slices.Clone(groups)}
	claims.Issuer = UserTokenIssuer
	signed, err := t.sign(ctx, userKeyring(), validFor, &claims.RegisteredClaims, claims)
	if err != nil {
		return "", fmt.Errorf("generate user token: %w", err)
	}
	return signed, nil
}

// VerifyUser checks a user token's signature, issuer, expiry and revocation
// and returns its claims. Errors that mean the token is not acceptable wrap
// ErrInvalid; they never contain the token.
func (t *Tokens) VerifyUser(ctx context.Context, token string) (UserClaims, error) {
	sum := sha256.Sum256([]byte(token))
	gen, watching := t.users.generation()
	if c, fresh, ok := t.cachedUser(ctx, sum); ok {
		if !t.now().Before(c.ExpiresAt) {
			return UserClaims{}, fmt.Errorf("%w: token has expired", ErrInvalid)
		}
		if fresh {
			c.Groups = slices.Clone(c.Groups)
			return c, nil
		}
		c, err := t.checkUserRevoked(ctx, c)
		if err == nil && watching {
			t.users.checked(sum, gen)
		}
		return c, err
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(token, &userJWTClaims{})
	if err != nil {
		return UserClaims{}, fmt.Errorf("%w: malformed token: %w", ErrInvalid, err)
	}
	ring := userKeyring()
	var claims userJWTClaims
	if err := t.verifySigned(ctx, ring, token, parsed.Header["kid"], &claims, jwt.WithIssuer(UserTokenIssuer)); err != nil {
		if errors.Is(err, ErrInvalid) {
			return UserClaims{}, err
		}
		return UserClaims{}, fmt.Errorf("verify user token: %w", err)
	}
	if claims.Name == "" {
		return UserClaims{}, fmt.Errorf("%w: token has no Name claim", ErrInvalid)
	}
	if claims.ID == "" {
		return UserClaims{}, fmt.Errorf("%w: token has no ID (jti) and could not be revoked", ErrInvalid)
	}
	c := UserClaims{Name: claims.Name, Groups: claims.Groups, ID: claims.ID, ExpiresAt: claims.ExpiresAt.Time}
	if serial, ok := parseSerial(fmt.Sprint(parsed.Header["kid"])); ok {
		t.rememberUser(ctx, sum, serial, c)
	}
	return t.checkUserRevoked(ctx, c)
}

func (t *Tokens) checkUserRevoked(ctx context.Context, c UserClaims) (UserClaims, error) {
	revoked, err := t.isRevoked(ctx, userKeyring(), c.ID)
	if err != nil {
		return UserClaims{}, fmt.Errorf("verify user token: %w", err)
	}
	if revoked {
		return UserClaims{}, fmt.Errorf("%w: user token %s of %q is revoked", ErrInvalid, c.ID, c.Name)
	}
	c.Groups = slices.Clone(c.Groups)
	return c, nil
}

// RotateUserSigningKey adds a user-token signing key with the next serial;
// new user tokens are signed with it.
func (t *Tokens) RotateUserSigningKey(ctx context.Context) (int, error) {
	return t.rotate(ctx, userKeyring())
}
