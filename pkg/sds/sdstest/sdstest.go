// Package sdstest provides test doubles for code that serves or consumes SDS:
// an in-memory sds.Source and a generator of valid certificate material.
package sdstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"meshca/pkg/sds"
)

// Source is an in-memory sds.Source whose secrets tests set with Set.
type Source struct {
	mu      sync.Mutex
	secrets map[string]sds.Secrets
	subs    map[string]map[*func()]struct{}
	changed chan struct{} // closed and replaced when subscriptions change
	refuse  map[string]error
	asked   map[string]int // Servable calls
}

var (
	_ sds.Source          = (*Source)(nil)
	_ sds.ServableChecker = (*Source)(nil)
)

// NewSource returns an empty Source.
func NewSource() *Source {
	return &Source{
		secrets: map[string]sds.Secrets{},
		subs:    map[string]map[*func()]struct{}{},
		changed: make(chan struct{}),
		refuse:  map[string]error{},
		asked:   map[string]int{},
	}
}

// Refuse makes Servable return err for mesh/name (nil: servable again).
func (s *Source) Refuse(mesh, name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse[sds.NodeID(mesh, name)] = err
}

// Servable implements sds.ServableChecker with what Refuse set.
func (s *Source) Servable(_ context.Context, mesh, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked[sds.NodeID(mesh, name)]++
	return s.refuse[sds.NodeID(mesh, name)]
}

// ServableCalls returns how many times Servable was asked about mesh/name
// (once per stream opened).
func (s *Source) ServableCalls(mesh, name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[sds.NodeID(mesh, name)]
}

// Set replaces mesh/name's secrets and signals its subscribers.
func (s *Source) Set(mesh, name string, sec sds.Secrets) {
	id := sds.NodeID(mesh, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[id] = sec
	for notify := range s.subs[id] {
		(*notify)()
	}
}

// Delete removes mesh/name's secrets (as when the data plane is deleted)
// and signals its subscribers.
func (s *Source) Delete(mesh, name string) {
	id := sds.NodeID(mesh, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.secrets, id)
	for notify := range s.subs[id] {
		(*notify)()
	}
}

// Current implements sds.Source.
func (s *Source) Current(mesh, name string) (sds.Secrets, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.secrets[sds.NodeID(mesh, name)]
	return sec, ok
}

// Subscribe implements sds.Source: notify is called, with the Source's
// lock held, on every Set or Delete of mesh/name.
func (s *Source) Subscribe(mesh, name string, notify func()) func() {
	id := sds.NodeID(mesh, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[id] == nil {
		s.subs[id] = map[*func()]struct{}{}
	}
	s.subs[id][&notify] = struct{}{}
	s.notifyLocked()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(s.subs[id], &notify)
			s.notifyLocked()
		})
	}
}

func (s *Source) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// AwaitSubscribers waits until mesh/name has exactly n live subscriptions.
func (s *Source) AwaitSubscribers(ctx context.Context, mesh, name string, n int) error {
	id := sds.NodeID(mesh, name)
	for {
		s.mu.Lock()
		got, changed := len(s.subs[id]), s.changed
		s.mu.Unlock()
		if got == n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%d subscribers of %s, want %d: %w", got, id, n, ctx.Err())
		}
	}
}

// Subscribers returns the number of live subscriptions for mesh/name.
func (s *Source) Subscribers(mesh, name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs[sds.NodeID(mesh, name)])
}

// NewSecrets returns valid secrets for mesh/name: a fresh CA (the trust
// bundle) and a leaf certificate with the given serial and a SPIFFE URI SAN,
// valid for a day from now.
func NewSecrets(t testing.TB, mesh, name string, serial int64, now time.Time) sds.Secrets {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1000 + serial),
		Subject:               pkix.Name{CommonName: "test mesh CA " + mesh},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := &url.URL{Scheme: "spiffe", Host: mesh, Path: "/" + name}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return sds.Secrets{
		CertChainPEM:   append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), caPEM...),
		KeyPEM:         pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		TrustBundlePEM: caPEM,
	}
}
