package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
)

// TypeDataplaneIdentity is the internal store type holding a data plane's
// issued certificate. It is never served by the HTTP API.
const TypeDataplaneIdentity = "DataplaneIdentity"

// record is the persisted state of one data plane's identity.
type record struct {
	Backend     string    `json:"backend"`
	BackendType string    `json:"backendType"`
	CertPEM     string    `json:"certPEM"`
	ChainPEM    string    `json:"chainPEM,omitempty"`
	KeyPEM      string    `json:"keyPEM"`
	Ref         string    `json:"ref,omitempty"`
	Generation  int64     `json:"generation"`
	Rotations   int64     `json:"rotations"`
	IssuedAt    time.Time `json:"issuedAt"`
	NotAfter    time.Time `json:"notAfter"`
	// Fingerprint summarises what the certificate was issued for; a change
	// (new tags, new backend conf) means it must be re-issued.
	Fingerprint string   `json:"fingerprint"`
	Pending     *pending `json:"pending,omitempty"`
}

// pending is an issuance in progress at an IdempotentIssuer: persisted
// before the request so a restart re-sends the very same request.
type pending struct {
	Generation     int64     `json:"generation"`
	Backend        string    `json:"backend"`
	Fingerprint    string    `json:"fingerprint"`
	KeyPEM         string    `json:"keyPEM"`
	CSRPEM         string    `json:"csrPEM"`
	IdempotencyKey string    `json:"idempotencyKey"`
	StartedAt      time.Time `json:"startedAt"`
}

// pendingReuseWindow is how long a persisted request is re-sent as is; ACM
// PCA honours an idempotency token for 5 minutes, so stay inside that.
const pendingReuseWindow = 4 * time.Minute

// fingerprint covers everything that, when changed, needs a new certificate.
func fingerprint(id ca.Identity, b api.MTLSBackend) string {
	h := sha256.New()
	uris := make([]string, len(id.URIs))
	for i, u := range id.URIs {
		uris[i] = u.String()
	}
	sort.Strings(uris)
	h.Write([]byte(strings.Join(uris, "\n")))
	h.Write([]byte{0})
	h.Write([]byte(id.CommonName))
	h.Write([]byte{0})
	h.Write([]byte(b.Name + "\x00" + b.Type + "\x00" + string(b.Conf) + "\x00" + b.CertExpiration().String()))
	if b.DpCert != nil {
		h.Write([]byte(b.DpCert.KeyType))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// IdempotencyKey derives a stable token (at most 36 characters, as ACM PCA
// requires) for one (mesh, dataplane, generation).
func IdempotencyKey(mesh, name string, generation int64) string {
	h := sha256.Sum256([]byte(mesh + "\x00" + name + "\x00" + strconv.FormatInt(generation, 10)))
	return hex.EncodeToString(h[:])[:32]
}
