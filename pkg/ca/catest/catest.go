// Package catest holds helpers the CA backends' tests share: a settable
// clock and real CSRs. It is imported by tests only.
package catest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/store"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Clock is a settable time source for ca.Deps.Now.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock forward by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// NewCSR returns a parsed CSR signed by key, with common name cn, DNS name
// backend.default.svc and the given URI SANs.
func NewCSR(t testing.TB, key crypto.Signer, cn string, uris ...string) *x509.CertificateRequest {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{"demo"}}, DNSNames: []string{"backend.default.svc"}}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// Provision readies backend mb of mesh as the control plane does: the CA
// state a ca.Provisioner keeps in the store is committed (a concurrent
// writer's state is taken instead, as store.ErrAlreadyExists says), then
// Ensure runs.
func Provision(ctx context.Context, s store.Store, be ca.Backend, mesh string, mb api.MTLSBackend) error {
	ops, err := ca.Prepare(ctx, be, mesh, mb)
	if err != nil || len(ops) == 0 {
		return err
	}
	if err := s.Commit(ctx, ops...); err != nil && !errors.Is(err, store.ErrAlreadyExists) {
		return err
	}
	return be.Ensure(ctx, mesh, mb)
}
