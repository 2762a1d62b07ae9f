// Package provided is Kuma's provided CA: the user supplies a CA certificate
// (optionally with its chain) and its key as DataSources, and meshca signs
// data-plane certificates with it in process.
//
// Trust anchor: the top-most certificate of conf.cert (its last one) is the
// trust bundle, whether it is a self-signed root or an intermediate the user
// chose to anchor trust at. Every certificate below it, starting with the
// signing CA itself, is sent as the chain of each issued certificate. When
// conf.cert holds a single certificate it is both signer and anchor and the
// chain is empty.
package provided

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/casign"
	"meshca/pkg/datasource"
)

// Type is the backend type this package implements.
const Type = "provided"

// revalidateAfter bounds how long Issue and TrustBundle use the cached CA
// without resolving conf.cert and conf.key again. Ensure always resolves.
const revalidateAfter = 10 * time.Second

// Conf is the provided backend's conf.
type Conf struct {
	Cert *api.DataSource `json:"cert,omitempty"`
	Key  *api.DataSource `json:"key,omitempty"`
}

// ParseConf decodes a provided conf strictly and checks that both
// DataSources are well formed. Errors are *api.ValidationError with fields
// under "conf".
func ParseConf(raw json.RawMessage) (Conf, error) {
	var top struct {
		Cert json.RawMessage `json:"cert"`
		Key  json.RawMessage `json:"key"`
	}
	if err := api.DecodeStrict(raw, &top, "conf"); err != nil {
		return Conf{}, err
	}
	var c Conf
	v := &api.ValidationError{}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		into **api.DataSource
	}{{"conf.cert", top.Cert, &c.Cert}, {"conf.key", top.Key, &c.Key}} {
		if len(f.raw) == 0 || string(f.raw) == "null" {
			api.ValidateDataSource(v, f.name, nil, true)
			continue
		}
		ds := &api.DataSource{}
		if err := api.DecodeStrict(f.raw, ds, f.name); err != nil {
			v.AddErr("", err)
			continue
		}
		api.ValidateDataSource(v, f.name, ds, true)
		*f.into = ds
	}
	return c, v.OrNil()
}

type caKey struct{ mesh, backend string }

// entry is one cached CA; it is replaced, never modified.
type entry struct {
	conf    string   // the raw conf the CA was resolved from
	hash    [32]byte // of the resolved certificate and key bytes
	ca      *casign.CA
	checked time.Time
}

// Backend implements ca.Backend and ca.SecretUser for the provided CA.
type Backend struct {
	// Local serves TrustBundle, Issue and IssueForKey from current.
	casign.Local

	sources *datasource.Resolver
	log     *slog.Logger
	now     func() time.Time

	mu    sync.RWMutex
	cache map[caKey]*entry
}

var (
	_ ca.Backend    = (*Backend)(nil)
	_ ca.SecretUser = (*Backend)(nil)
)

// New returns the provided backend. It is a ca.Constructor.
func New(deps ca.Deps) (ca.Backend, error) {
	if deps.Sources == nil {
		return nil, errors.New("provided CA: a DataSource resolver is required")
	}
	b := &Backend{sources: deps.Sources, log: deps.Logger, now: deps.Now, cache: map[caKey]*entry{}}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.Local = casign.Local{Kind: "provided", Now: b.now, Current: func(ctx context.Context, mesh string, mb api.MTLSBackend) (*casign.CA, error) {
		return b.current(ctx, mesh, mb, false)
	}}
	return b, nil
}

// Validate implements ca.Backend: both DataSources resolve, conf.cert is a
// currently valid CA chain and conf.key is its key.
func (b *Backend) Validate(ctx context.Context, mesh string, mb api.MTLSBackend) error {
	conf, err := ParseConf(mb.Conf)
	if err != nil || ca.SyntaxOnly(ctx) {
		return err
	}
	certPEM, keyPEM, err := b.resolve(ctx, mesh, conf)
	if err != nil {
		return err
	}
	if _, err = ParseCA(certPEM, keyPEM, b.now()); err != nil {
		return err
	}
	if conf.Key.IsInline() {
		b.log.Warn("provided CA: the CA private key is written inline in the Mesh; prefer a Secret or a file",
			"mesh", mesh, "backend", mb.Name, "field", "conf.key")
	}
	return nil
}

// Ensure implements ca.Backend: it resolves the CA and parses it again only
// if its bytes changed.
func (b *Backend) Ensure(ctx context.Context, mesh string, mb api.MTLSBackend) error {
	_, err := b.current(ctx, mesh, mb, true)
	return err
}

// UsedSecrets implements ca.SecretUser: the Secrets conf.cert and conf.key
// name. An undecodable conf names none.
func (b *Backend) UsedSecrets(mb api.MTLSBackend) []string {
	var c Conf
	if len(mb.Conf) == 0 || json.Unmarshal(mb.Conf, &c) != nil {
		return nil
	}
	var out []string
	for _, ds := range []*api.DataSource{c.Cert, c.Key} {
		if ds != nil && ds.Secret != "" && (len(out) == 0 || out[0] != ds.Secret) {
			out = append(out, ds.Secret)
		}
	}
	return out
}

// current returns the CA for (mesh, backend). Unless force is set, a cached
// CA checked less than revalidateAfter ago with the same conf is used as is;
// otherwise the DataSources are resolved and parsed only if their bytes
// changed.
func (b *Backend) current(ctx context.Context, mesh string, mb api.MTLSBackend, force bool) (*casign.CA, error) {
	k := caKey{mesh, mb.Name}
	now := b.now()
	b.mu.RLock()
	e := b.cache[k]
	b.mu.RUnlock()
	if !force && e != nil && e.conf == string(mb.Conf) && now.Sub(e.checked) < revalidateAfter {
		return e.ca, nil
	}

	conf, err := ParseConf(mb.Conf)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := b.resolve(ctx, mesh, conf)
	if err != nil {
		return nil, err
	}
	h := hashPair(certPEM, keyPEM)
	if e != nil && e.hash == h {
		b.store(k, &entry{conf: string(mb.Conf), hash: h, ca: e.ca, checked: now})
		return e.ca, nil
	}
	c, err := ParseCA(certPEM, keyPEM, now)
	if err != nil {
		return nil, err
	}
	b.store(k, &entry{conf: string(mb.Conf), hash: h, ca: c, checked: now})
	cert := c.Certificate()
	b.log.InfoContext(ctx, "loaded provided CA", "mesh", mesh, "backend", mb.Name,
		"subject", cert.Subject.String(), "notAfter", cert.NotAfter)
	return c, nil
}

func (b *Backend) store(k caKey, e *entry) {
	b.mu.Lock()
	b.cache[k] = e
	b.mu.Unlock()
}

// resolve reads both DataSources, reporting every failure at once.
func (b *Backend) resolve(ctx context.Context, mesh string, conf Conf) (certPEM, keyPEM []byte, err error) {
	v := &api.ValidationError{}
	certPEM, err = b.sources.Resolve(ctx, mesh, conf.Cert, "conf.cert")
	if err != nil {
		if !isValidation(err) {
			return nil, nil, fmt.Errorf("provided CA: resolve conf.cert: %w", err)
		}
		v.AddErr("", err)
	}
	keyPEM, err = b.sources.Resolve(ctx, mesh, conf.Key, "conf.key")
	if err != nil {
		if !isValidation(err) {
			return nil, nil, fmt.Errorf("provided CA: resolve conf.key: %w", err)
		}
		v.AddErr("", err)
	}
	if err := v.OrNil(); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

func isValidation(err error) bool {
	var ve *api.ValidationError
	return errors.As(err, &ve)
}

// hashPair hashes the certificate and key bytes, length-prefixed so the
// boundary between them is unambiguous.
func hashPair(certPEM, keyPEM []byte) [32]byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(certPEM)))
	h.Write(n[:])
	h.Write(certPEM)
	h.Write(keyPEM)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// ParseCA checks a provided CA at time now and builds its signer. certPEM
// runs from the signing CA up (intermediates, optionally the root); keyPEM
// is the signing CA's key in PKCS#1, PKCS#8 or SEC 1 form. Errors are
// *api.ValidationError naming conf.cert or conf.key; they never include key
// material.
func ParseCA(certPEM, keyPEM []byte, now time.Time) (*casign.CA, error) {
	v := &api.ValidationError{}
	certs, err := ca.ParseCertificates(certPEM)
	if err != nil {
		v.Addf("conf.cert", "%v", err)
	}
	key, keyErr := casign.ParsePrivateKey(keyPEM)
	if keyErr != nil {
		v.Addf("conf.key", "%v", keyErr)
	}
	if len(certs) == 0 {
		return nil, v.OrNil()
	}
	signer := certs[0]
	if !casign.IsCA(signer) {
		v.Addf("conf.cert", "certificate is not a CA (basicConstraints CA:FALSE or no keyCertSign usage)")
	}
	for i, c := range certs {
		which := describe(i, c)
		switch {
		case now.Before(c.NotBefore):
			v.Addf("conf.cert", "%s is not valid before %s", which, c.NotBefore.UTC().Format(time.RFC3339))
		case now.After(c.NotAfter):
			v.Addf("conf.cert", "%s expired at %s", which, c.NotAfter.UTC().Format(time.RFC3339))
		}
		if i+1 < len(certs) {
			if err := c.CheckSignatureFrom(certs[i+1]); err != nil {
				v.Addf("conf.cert", "%s is not signed by %s: the chain must run from the signing CA up to the root (%v)",
					which, describe(i+1, certs[i+1]), err)
			}
		}
	}
	if key != nil && !casign.KeyMatches(signer.PublicKey, key) {
		v.Addf("conf.key", "does not match the public key of the first certificate of conf.cert")
	}
	if err := v.OrNil(); err != nil {
		return nil, err
	}
	anchor := certs[len(certs)-1]
	return casign.New(signer, key, certs[:len(certs)-1], []*x509.Certificate{anchor})
}

func describe(i int, c *x509.Certificate) string {
	return fmt.Sprintf("certificate %d (%q)", i+1, c.Subject.String())
}
