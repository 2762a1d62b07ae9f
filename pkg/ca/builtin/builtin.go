// Package builtin is Kuma's builtin CA: meshca generates a self-signed root
// per (mesh, backend) when the Mesh that enables it is stored (in the same
// commit, see ca.Provisioner), keeps it as two mesh-scoped Secrets with
// Kuma's names, and signs data-plane certificates with it in process.
package builtin

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/casign"
	"meshca/pkg/store"
)

// Type is the backend type this package implements.
const Type = "builtin"

// DefaultCAExpiration is the root's lifetime when caCert.expiration is unset.
const DefaultCAExpiration = 10 * 365 * 24 * time.Hour

// revalidateAfter bounds how long Issue and TrustBundle trust the cached
// root without checking the stored Secrets' versions. Ensure always checks.
const revalidateAfter = 10 * time.Second

// maxCommonName is the X.520 upper bound of a common name (ub-common-name).
const maxCommonName = 64

// Conf is the builtin backend's conf.
type Conf struct {
	CACert CACertConf `json:"caCert,omitzero"`
}

// CACertConf configures the generated root.
type CACertConf struct {
	// RSABits switches the root to an RSA key of that size (2048, 3072 or
	// 4096). Unset means ECDSA P-256.
	RSABits int `json:"RSAbits,omitempty"`
	// Expiration is the root's lifetime: a Go duration ("87600h"), days
	// ("3650d") or years ("10y", a year being 365 days). Default 10y.
	Expiration string `json:"expiration,omitempty"`
}

// CertSecretName is the name of the Secret holding the root certificate.
func CertSecretName(mesh, backend string) string { return mesh + ".ca-builtin-cert-" + backend }

// KeySecretName is the name of the Secret holding the root's private key.
func KeySecretName(mesh, backend string) string { return mesh + ".ca-builtin-key-" + backend }

// ParseConf decodes and checks a builtin conf strictly. Errors are
// *api.ValidationError with fields under "conf".
func ParseConf(raw json.RawMessage) (Conf, error) {
	var top struct {
		CACert json.RawMessage `json:"caCert"`
	}
	if err := api.DecodeStrict(raw, &top, "conf"); err != nil {
		return Conf{}, err
	}
	var c Conf
	if err := api.DecodeStrict(top.CACert, &c.CACert, "conf.caCert"); err != nil {
		return Conf{}, err
	}
	v := &api.ValidationError{}
	switch c.CACert.RSABits {
	case 0, 2048, 3072, 4096:
	default:
		v.Addf("conf.caCert.RSAbits", "must be 2048, 3072 or 4096, got %d", c.CACert.RSABits)
	}
	if c.CACert.Expiration != "" {
		if _, err := ParseExpiration(c.CACert.Expiration); err != nil {
			v.AddErr("conf.caCert.expiration", err)
		}
	}
	return c, v.OrNil()
}

// CAExpiration is the root's lifetime.
func (c Conf) CAExpiration() time.Duration {
	if c.CACert.Expiration == "" {
		return DefaultCAExpiration
	}
	d, err := ParseExpiration(c.CACert.Expiration)
	if err != nil {
		return DefaultCAExpiration
	}
	return d
}

// ParseExpiration parses a root lifetime: an optional leading years
// component ("10y", a year being 365 days) followed by what
// api.ParseDuration accepts ("3650d", "87600h", "1y12h").
func ParseExpiration(s string) (time.Duration, error) {
	const year = 365 * 24 * time.Hour
	const maxYears = 200
	orig := s
	s = strings.TrimSpace(s)
	var years time.Duration
	if i := strings.IndexByte(s, 'y'); i >= 0 {
		n, err := strconv.ParseUint(s[:i], 10, 32)
		if err != nil || n > maxYears {
			return 0, fmt.Errorf("invalid duration %q: want years such as 10y (at most %dy), days such as 3650d, or a Go duration such as 87600h", orig, maxYears)
		}
		years = time.Duration(n) * year
		s = s[i+1:]
		if s == "" {
			if years <= 0 {
				return 0, fmt.Errorf("invalid duration %q: must be positive", orig)
			}
			return years, nil
		}
	}
	rest, err := api.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	return years + rest, nil
}

type caKey struct{ mesh, backend string }

// entry is one cached root; it is replaced, never modified.
type entry struct {
	ca *casign.CA
	// The stored records the root was parsed from. A version alone does not
	// tell a deleted and re-created Secret (version 1 again) from the
	// original, so the specs are compared too: a byte comparison, no parsing.
	cert, key store.Record
	checked   time.Time
	// seq orders loads: an entry read from the store earlier never replaces
	// one read later, so a slow load cannot bring back a root that a
	// concurrent load already saw replaced.
	seq uint64
}

func (e *entry) matches(cert, key store.Record) bool {
	return e.cert.Version == cert.Version && e.key.Version == key.Version &&
		bytes.Equal(e.cert.Spec, cert.Spec) && bytes.Equal(e.key.Spec, key.Spec)
}

// Backend implements ca.Backend, ca.Cleaner for the builtin CA.
type Backend struct {
	// Local serves TrustBundle, Issue and IssueForKey from current.
	casign.Local

	store store.Store
	log   *slog.Logger
	now   func() time.Time

	mu    sync.RWMutex
	cache map[caKey]*entry
	seq   atomic.Uint64
}

var (
	_ ca.Backend     = (*Backend)(nil)
	_ ca.Cleaner     = (*Backend)(nil)
	_ ca.Provisioner = (*Backend)(nil)
)

// New returns the builtin backend. It is a ca.Constructor.
func New(deps ca.Deps) (ca.Backend, error) {
	if deps.Store == nil {
		return nil, errors.New("builtin CA: a store is required")
	}
	b := &Backend{
		store: deps.Store,
		log:   deps.Logger,
		now:   deps.Now,
		cache: map[caKey]*entry{},
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.Local = casign.Local{Kind: "builtin", Now: b.now, Current: func(ctx context.Context, mesh string, mb api.MTLSBackend) (*casign.CA, error) {
		return b.current(ctx, caKey{mesh, mb.Name})
	}}
	return b, nil
}

// Validate implements ca.Backend.
func (b *Backend) Validate(_ context.Context, _ string, mb api.MTLSBackend) error {
	_, err := ParseConf(mb.Conf)
	return err
}

// Ensure implements ca.Backend: it loads the root, parsing it again only
// when its stored Secrets changed. It never creates one (see ProvisionOps):
// when the root does not exist it answers an error wrapping
// store.ErrNotFound.
func (b *Backend) Ensure(ctx context.Context, mesh string, mb api.MTLSBackend) error {
	if _, err := ParseConf(mb.Conf); err != nil {
		return err
	}
	_, err := b.load(ctx, caKey{mesh, mb.Name})
	return err
}

// ProvisionOps implements ca.Provisioner: when the root does not exist, it
// generates one and returns the two OpCreate ops that store it (the caller
// commits them with the Mesh that enables this backend); when it exists, it
// returns none. An incomplete root (one Secret of the pair) is an error
// naming both Secrets: replacing it silently would break every certificate
// it signed.
func (b *Backend) ProvisionOps(ctx context.Context, mesh string, mb api.MTLSBackend) ([]store.Op, error) {
	conf, err := ParseConf(mb.Conf)
	if err != nil {
		return nil, err
	}
	k := caKey{mesh, mb.Name}
	if _, err := b.load(ctx, k); !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	certRec, keyRec, err := b.generate(k, conf)
	if err != nil {
		return nil, err
	}
	return []store.Op{
		{Kind: store.OpCreate, Record: certRec},
		{Kind: store.OpCreate, Record: keyRec},
	}, nil
}

// CleanupOps implements ca.Cleaner: delete ops for the root's Secrets that
// exist, each checked against the version seen now.
func (b *Backend) CleanupOps(ctx context.Context, mesh string, mb api.MTLSBackend) ([]store.Op, error) {
	var ops []store.Op
	for _, name := range []string{CertSecretName(mesh, mb.Name), KeySecretName(mesh, mb.Name)} {
		key := store.Key{Type: api.TypeSecret, Mesh: mesh, Name: name}
		rec, err := b.store.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("builtin CA cleanup: %w", err)
		}
		ops = append(ops, store.Op{Kind: store.OpDelete, Record: store.Record{Key: key, Version: rec.Version}})
	}
	// Forget the cached root: a later Ensure reloads whatever is stored.
	k := caKey{mesh, mb.Name}
	b.mu.Lock()
	delete(b.cache, k)
	b.mu.Unlock()
	return ops, nil
}

// current returns the cached root, revalidating it against the store when
// the last check is older than revalidateAfter.
func (b *Backend) current(ctx context.Context, k caKey) (*casign.CA, error) {
	b.mu.RLock()
	e := b.cache[k]
	b.mu.RUnlock()
	if e != nil && b.now().Sub(e.checked) < revalidateAfter {
		return e.ca, nil
	}
	c, err := b.load(ctx, k)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("builtin CA of mesh %q backend %q does not exist (it is created with the Mesh that enables it): %w", k.mesh, k.backend, err)
	}
	return c, err
}

// load reads the root's Secrets and parses them only when their versions or
// specs differ from the cached ones. It returns an error wrapping
// store.ErrNotFound when neither Secret exists.
func (b *Backend) load(ctx context.Context, k caKey) (*casign.CA, error) {
	certKey := store.Key{Type: api.TypeSecret, Mesh: k.mesh, Name: CertSecretName(k.mesh, k.backend)}
	keyKey := store.Key{Type: api.TypeSecret, Mesh: k.mesh, Name: KeySecretName(k.mesh, k.backend)}
	// The pair is created and deleted in one commit, but read with two Gets
	// that can straddle such a commit: read again before calling it broken.
	seq := b.seq.Add(1)
	var certRec, keyRec store.Record
	var certErr, keyErr error
	for range 3 {
		certRec, certErr = b.store.Get(ctx, certKey)
		keyRec, keyErr = b.store.Get(ctx, keyKey)
		if errors.Is(certErr, store.ErrNotFound) == errors.Is(keyErr, store.ErrNotFound) {
			break
		}
	}
	switch {
	case errors.Is(certErr, store.ErrNotFound) && errors.Is(keyErr, store.ErrNotFound):
		b.forget(k)
		return nil, fmt.Errorf("builtin CA root: %w", store.ErrNotFound)
	case errors.Is(certErr, store.ErrNotFound) || errors.Is(keyErr, store.ErrNotFound):
		b.forget(k)
		return nil, fmt.Errorf("builtin CA of mesh %q backend %q is incomplete: secrets %q and %q must both exist (delete the remaining one to generate a new root)",
			k.mesh, k.backend, certKey.Name, keyKey.Name)
	case certErr != nil:
		return nil, fmt.Errorf("builtin CA: read %s: %w", certKey, certErr)
	case keyErr != nil:
		return nil, fmt.Errorf("builtin CA: read %s: %w", keyKey, keyErr)
	}
	now := b.now()

	b.mu.Lock()
	if e := b.cache[k]; e != nil && e.matches(certRec, keyRec) {
		b.cache[k] = &entry{ca: e.ca, cert: e.cert, key: e.key, checked: now, seq: max(seq, e.seq)}
		b.mu.Unlock()
		return e.ca, nil
	}
	b.mu.Unlock()

	c, err := parseRoot(certRec, keyRec)
	if err != nil {
		return nil, fmt.Errorf("builtin CA of mesh %q backend %q: %w", k.mesh, k.backend, err)
	}
	b.mu.Lock()
	if e := b.cache[k]; e == nil || e.seq < seq {
		b.cache[k] = &entry{ca: c, cert: certRec, key: keyRec, checked: now, seq: seq}
	}
	b.mu.Unlock()
	return c, nil
}

func (b *Backend) forget(k caKey) {
	b.mu.Lock()
	delete(b.cache, k)
	b.mu.Unlock()
}

// generate makes a new root and the two Secret records that hold it.
func (b *Backend) generate(k caKey, conf Conf) (certRec, keyRec store.Record, err error) {
	certPEM, keyPEM, _, err := newRoot(k.mesh, conf, b.now())
	if err != nil {
		return certRec, keyRec, fmt.Errorf("builtin CA of mesh %q backend %q: %w", k.mesh, k.backend, err)
	}
	if certRec, err = secretRecord(k.mesh, CertSecretName(k.mesh, k.backend), certPEM); err != nil {
		return certRec, keyRec, err
	}
	keyRec, err = secretRecord(k.mesh, KeySecretName(k.mesh, k.backend), keyPEM)
	return certRec, keyRec, err
}

func newRoot(mesh string, conf Conf, now time.Time) (certPEM, keyPEM []byte, notAfter time.Time, err error) {
	var key crypto.Signer
	if bits := conf.CACert.RSABits; bits != 0 {
		key, err = rsa.GenerateKey(rand.Reader, bits)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := casign.SerialNumber(rand.Reader)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	cn := "meshca builtin CA " + mesh
	if len(cn) > maxCommonName {
		cn = cn[:maxCommonName] // mesh names are ASCII; the URI SAN keeps the full name
	}
	notAfter = now.Add(conf.CAExpiration())
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"meshca"}},
		NotBefore:             now.Add(-casign.ClockSkew),
		NotAfter:              notAfter,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: mesh}},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("self-sign root: %w", err)
	}
	keyPEM, err = casign.MarshalPrivateKey(key)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	return ca.EncodeCertificates(&x509.Certificate{Raw: der}), keyPEM, notAfter, nil
}

func secretRecord(mesh, name string, data []byte) (store.Record, error) {
	s := &api.Secret{
		Meta: api.Meta{Type: api.TypeSecret, Mesh: mesh, Name: name},
		Data: base64.StdEncoding.EncodeToString(data),
	}
	spec, err := api.MarshalSpec(s)
	if err != nil {
		return store.Record{}, fmt.Errorf("builtin CA: encode secret %q: %w", name, err)
	}
	return store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: mesh, Name: name}, Spec: spec}, nil
}

func secretData(rec store.Record) ([]byte, error) {
	r, err := api.UnmarshalSpec(api.Meta{Type: api.TypeSecret, Mesh: rec.Mesh, Name: rec.Name}, rec.Spec)
	if err != nil {
		return nil, err
	}
	s, ok := r.(*api.Secret)
	if !ok {
		return nil, fmt.Errorf("secret %q: unexpected stored type %T", rec.Name, r)
	}
	data, err := base64.StdEncoding.DecodeString(s.Data)
	if err != nil {
		return nil, fmt.Errorf("secret %q holds invalid base64", rec.Name)
	}
	return data, nil
}

func parseRoot(certRec, keyRec store.Record) (*casign.CA, error) {
	certPEM, err := secretData(certRec)
	if err != nil {
		return nil, err
	}
	keyPEM, err := secretData(keyRec)
	if err != nil {
		return nil, err
	}
	certs, err := ca.ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", certRec.Name, err)
	}
	key, err := casign.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", keyRec.Name, err)
	}
	root := certs[0]
	if !casign.IsCA(root) {
		return nil, fmt.Errorf("secret %q: certificate is not a CA", certRec.Name)
	}
	c, err := casign.New(root, key, nil, []*x509.Certificate{root})
	if err != nil {
		return nil, fmt.Errorf("secrets %q and %q: %w", certRec.Name, keyRec.Name, err)
	}
	return c, nil
}
