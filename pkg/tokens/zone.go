package tokens

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"meshca/pkg/api"
)

// Zone tokens prove a zone control plane's identity to its global control
// plane (open-source Kuma has none). They are JWTs signed like the others
// (RS256, kid = serial) by keys kept as GlobalSecrets
//
//	zone-token-signing-key-<serial>
//
// revoked by listing their IDs in the GlobalSecret zone-token-revocations,
// bound to one zone name (the Zone claim) and to the issuer ZoneTokenIssuer,
// so no other meshca token passes for one. These keys never leave global.
const (
	ZoneSigningKeyPrefix = "zone-token-signing-key-"
	ZoneRevocationsName  = "zone-token-revocations"
	ZoneTokenIssuer      = "meshca/zone"
)

func zoneKeyring() keyring {
	return keyring{typ: api.TypeGlobalSecret, keyPrefix: ZoneSigningKeyPrefix,
		revocations: ZoneRevocationsName, what: "zone tokens"}
}

// ZoneSigningKeyName is the GlobalSecret name of the zone-token signing key
// with the given serial.
func ZoneSigningKeyName(serial int) string { return zoneKeyring().keyName(serial) }

type zoneJWTClaims struct {
	Zone string `json:"Zone"`
	jwt.RegisteredClaims
}

// GenerateZone issues a token for the zone control plane named zone, valid
// for validFor. The first zone-token signing key is created on demand.
func (t *Tokens) GenerateZone(ctx context.Context, zone string, validFor time.Duration) (string, error) {
	if zone == "" {
		return "", errors.New("generate zone token: zone is required")
	}
	if validFor <= 0 {
		return "", fmt.Errorf("generate zone token: validity must be positive, got %s", validFor)
	}
	claims := &zoneJWTClaims{Zone: zone}
	claims.Issuer = ZoneTokenIssuer
	signed, err := t.sign(ctx, zoneKeyring(), validFor, &claims.RegisteredClaims, claims)
	if err != nil {
		return "", fmt.Errorf("generate zone token: %w", err)
	}
	return signed, nil
}

// VerifyZone checks a zone token's signature, issuer, expiry and revocation
// and returns the zone it is bound to. Errors that mean the token is not
// acceptable wrap ErrInvalid; they never contain the token.
func (t *Tokens) VerifyZone(ctx context.Context, token string) (string, error) {
	parsed, _, err := jwt.NewParser().ParseUnverified(token, &zoneJWTClaims{})
	if err != nil {
		return "", fmt.Errorf("%w: malformed token: %w", ErrInvalid, err)
	}
	ring := zoneKeyring()
	var claims zoneJWTClaims
	if err := t.verifySigned(ctx, ring, token, parsed.Header["kid"], &claims, jwt.WithIssuer(ZoneTokenIssuer)); err != nil {
		if errors.Is(err, ErrInvalid) {
			return "", err
		}
		return "", fmt.Errorf("verify zone token: %w", err)
	}
	if claims.Zone == "" || claims.ID == "" {
		return "", fmt.Errorf("%w: token has no Zone or no ID (jti) claim", ErrInvalid)
	}
	revoked, err := t.isRevoked(ctx, ring, claims.ID)
	if err != nil {
		return "", fmt.Errorf("verify zone token: %w", err)
	}
	if revoked {
		return "", fmt.Errorf("%w: zone token %s of zone %q is revoked", ErrInvalid, claims.ID, claims.Zone)
	}
	return claims.Zone, nil
}

// RotateZoneSigningKey adds a zone-token signing key with the next serial;
// new zone tokens are signed with it.
func (t *Tokens) RotateZoneSigningKey(ctx context.Context) (int, error) {
	return t.rotate(ctx, zoneKeyring())
}
