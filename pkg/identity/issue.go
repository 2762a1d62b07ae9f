package identity

// Issuance: one certificate from a backend, verified, persisted and settled.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/store"
)

// issue obtains a certificate for one data plane from its mesh's enabled backend.
func (m *Manager) issue(ctx context.Context, k dpKey) {
	m.mu.Lock()
	st := m.dps[k]
	ms := m.meshes[k.mesh]
	if st == nil || ms == nil || !ms.mtls || ms.backend == nil || st.dp == nil {
		if st != nil {
			st.inFlight = false
		}
		m.mu.Unlock()
		return
	}
	dp, b, be, gen, svid := st.dp, ms.enabled, ms.backend, ms.rootGen, ms.mesh.SVID()
	var prev record
	if st.cur != nil {
		prev = st.cur.rec
	}
	m.mu.Unlock()

	start := m.opts.Now()
	c, err := m.obtain(ctx, dp, b, be, svid, prev)
	elapsed := m.opts.Now().Sub(start)
	m.m.observe(b.Type, err, elapsed)

	if m.settle(ctx, k, st, ms, b, c, err, elapsed, gen) {
		// The set of backends in use changed: the bundle may shrink now.
		m.refreshBundle(ctx, k.mesh)
	}
}

// settle records the outcome of one issuance; it reports whether the mesh's
// trust bundle must be recomputed.
func (m *Manager) settle(ctx context.Context, k dpKey, st *dpState, ms *meshState, b api.MTLSBackend, c *current, err error, elapsed time.Duration, gen uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	st.inFlight = false
	if m.dps[k] != st {
		return false // deleted meanwhile
	}
	now := m.opts.Now()
	if err == nil || ctx.Err() == nil {
		recordHistoryLocked(st, b, c, err, now)
	}
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		st.attempts++
		st.lastErr, st.lastErrAt = err.Error(), now
		wait := Backoff(st.attempts, m.opts.RetryBase, m.opts.RetryMax, m.opts.Jitter())
		m.logger.Warn("certificate issuance failed; the current certificate stays in service",
			"mesh", k.mesh, "dataplane", k.name, "backend", b.Name, "attempt", st.attempts, "retryIn", wait.Round(time.Millisecond), "error", err)
		if c != nil { // a pending request was persisted: keep it for the retry
			if st.cur == nil {
				st.cur = &current{}
			}
			st.cur.rec.Pending = c.rec.Pending
			st.cur.rec.Generation = c.rec.Generation
		}
		m.enqueueLocked(k, st, now.Add(wait))
		return false
	}
	old := st.cur
	var oldBackend string
	if old.issued() {
		oldBackend = old.rec.Backend
		ms.inUse[oldBackend]--
	}
	ms.inUse[c.rec.Backend]++
	st.cur = c
	// The enabled backend's roots changed while this was being issued: it
	// may be signed by the root replaced meanwhile. Issue again.
	if st.stale = ms.rootGen != gen; st.stale {
		st.again = true
	}
	st.attempts, st.lastErr, st.lastErrAt = 0, "", time.Time{}
	st.lastRotated = now
	m.logger.Info("certificate issued", "mesh", k.mesh, "dataplane", k.name, "backend", b.Name,
		"serial", c.serial, "notAfter", c.rec.NotAfter, "duration", elapsed.Round(time.Microsecond))
	if st.again {
		st.again = false
		m.considerLocked(k, st)
	} else {
		m.enqueueLocked(k, st, m.rotateAt(c.rec.IssuedAt, c.rec.NotAfter, c.rec.CertPEM))
	}
	notify(st)
	return inUseFlipped(ms, old.issued(), oldBackend, true, c.rec.Backend)
}

// obtain runs one issuance and persists the result. On error it may return
// a current with only a pending request set.
func (m *Manager) obtain(ctx context.Context, dp *api.Dataplane, b api.MTLSBackend, be ca.Backend, svid string, prev record) (*current, error) {
	id, err := BuildIdentity(dp, cnTemplate(be, b), svid)
	if err != nil {
		return nil, err
	}
	fp := fingerprint(id, b)
	now := m.opts.Now()
	validity := b.CertExpiration()
	keyType := ""
	if b.DpCert != nil {
		keyType = b.DpCert.KeyType
	}
	bundle, err := m.backendBundle(ctx, dp.Mesh, b, be)
	if err != nil {
		return nil, fmt.Errorf("trust bundle of backend %q: %w", b.Name, err)
	}
	gen := prev.Generation + 1
	req := ca.IssueRequest{Identity: id, Validity: validity, RequestedAt: now}
	var key crypto.Signer
	var iss ca.Issued
	if ks, ok := be.(ca.KeySigner); ok {
		key, err = NewKey(m.opts.Rand, keyType)
		if err != nil {
			return nil, err
		}
		iss, err = ks.IssueForKey(ctx, dp.Mesh, b, key.Public(), req)
		if err != nil {
			return nil, err
		}
	} else {
		var pend *pending
		if p := prev.Pending; p != nil && p.Backend == b.Name && p.Fingerprint == fp && now.Sub(p.StartedAt) < pendingReuseWindow {
			pend = p // a restart or retry: send the very same request again
			gen = p.Generation
			req.RequestedAt = p.StartedAt
		}
		if pend != nil {
			key, err = ParseKey([]byte(pend.KeyPEM))
			if err != nil {
				return nil, err
			}
			req.CSRPEM = []byte(pend.CSRPEM)
			req.CSR, err = parseCSR(req.CSRPEM)
			if err != nil {
				return nil, err
			}
		} else {
			key, err = NewKey(m.opts.Rand, keyType)
			if err != nil {
				return nil, err
			}
			req.CSR, req.CSRPEM, err = NewCSR(key, id)
			if err != nil {
				return nil, err
			}
		}
		req.IdempotencyKey = IdempotencyKey(dp.Mesh, dp.Name, gen)
		var pendingCur *current
		if ii, ok := be.(ca.IdempotentIssuer); ok && ii.IdempotentIssue() && pend == nil {
			keyPEM, err := EncodeKey(key)
			if err != nil {
				return nil, err
			}
			rec := prev
			rec.Generation = gen
			rec.Pending = &pending{Generation: gen, Backend: b.Name, Fingerprint: fp, KeyPEM: string(keyPEM), CSRPEM: string(req.CSRPEM), IdempotencyKey: req.IdempotencyKey, StartedAt: now}
			if err := m.persist(ctx, dp, rec); err != nil {
				return nil, err
			}
			pendingCur = &current{rec: rec}
		} else if pend != nil {
			pendingCur = &current{rec: prev}
		}
		iss, err = be.Issue(ctx, dp.Mesh, b, req)
		if err != nil {
			return pendingCur, err
		}
	}
	var certPEM, chainPEM []byte
	var serial *big.Int
	var notAfter time.Time
	keyPEM := iss.KeyPEM
	if _, local := be.(ca.KeySigner); local && iss.Built != nil && len(keyPEM) == 0 {
		// Signed in process for our key: nothing to parse back.
		if err := m.checkLinkage(iss.Built.Issuer.RawSubject, iss.Built.Issuer.SubjectKeyId, bundle, iss.ChainPEM); err != nil {
			return nil, fmt.Errorf("backend %q: %w", b.Name, err)
		}
		certPEM, chainPEM = iss.CertPEM, chainAfterLeaf(nil, iss.ChainPEM)
		serial, notAfter = iss.Built.Serial, iss.Built.NotAfter
	} else {
		certs, err := ca.ParseCertificates(iss.CertPEM)
		if err != nil {
			return nil, fmt.Errorf("backend %q: issued certificate: %w", b.Name, err)
		}
		leaf := certs[0]
		if local {
			err = m.checkLinkage(leaf.RawIssuer, leaf.AuthorityKeyId, bundle, iss.ChainPEM)
		} else {
			_, err = ca.VerifyIssued(iss, bundle, m.opts.Now())
		}
		if err != nil {
			return nil, fmt.Errorf("backend %q: %w", b.Name, err)
		}
		if len(keyPEM) > 0 {
			if err := keyMatches(keyPEM, leaf); err != nil {
				return nil, fmt.Errorf("backend %q: %w", b.Name, err)
			}
		}
		// Re-encoded rather than kept as received: ACM returns PEM without
		// a final newline, which would fuse with the chain appended to it.
		certPEM, chainPEM = ca.EncodeCertificates(leaf), chainAfterLeaf(certs[1:], iss.ChainPEM)
		serial, notAfter = leaf.SerialNumber, leaf.NotAfter
	}
	if len(keyPEM) == 0 {
		if keyPEM, err = EncodeKey(key); err != nil {
			return nil, err
		}
	}
	rec := record{
		Backend: b.Name, BackendType: b.Type,
		CertPEM: string(certPEM), ChainPEM: string(chainPEM), KeyPEM: string(keyPEM),
		Ref: iss.Ref, Generation: gen, Rotations: prev.Rotations, IssuedAt: now, NotAfter: notAfter,
		Fingerprint: fp,
	}
	if prev.CertPEM != "" {
		rec.Rotations++
	}
	if err := m.persist(ctx, dp, rec); err != nil {
		return nil, err
	}
	return &current{rec: rec, serial: serial.Text(16)}, nil
}

// persist stores a data plane's identity record, conditional on its
// Dataplane: an issuance that finishes after the Dataplane (or its Mesh) was
// deleted leaves no record behind, and fails with store.ErrNotFound.
func (m *Manager) persist(ctx context.Context, dp *api.Dataplane, rec record) error {
	spec, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return m.commit(ctx,
		store.Op{Kind: store.OpRequire, Record: store.Record{Key: store.Key{Type: api.TypeDataplane, Mesh: dp.Mesh, Name: dp.Name}}},
		store.Op{Kind: store.OpUpsert, Record: store.Record{Key: store.Key{Type: TypeDataplaneIdentity, Mesh: dp.Mesh, Name: dp.Name}, Spec: spec}})
}

// chainAfterLeaf returns the intermediates of an issued certificate: those
// that came after the leaf, then ChainPEM, without self-signed roots (peers
// take roots from the trust bundle).
func chainAfterLeaf(afterLeaf []*x509.Certificate, chainPEM []byte) []byte {
	all := afterLeaf
	if len(chainPEM) > 0 {
		if more, err := ca.ParseCertificates(chainPEM); err == nil {
			all = append(all[:len(all):len(all)], more...)
		}
	}
	var out []byte
	for _, c := range all {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			continue
		}
		out = append(out, ca.EncodeCertificates(c)...)
	}
	return out
}

// checkLinkage accepts a certificate signed in-process when its issuer is a
// certificate of the chain or bundle, without repeating signature checks.
func (m *Manager) checkLinkage(rawIssuer, authorityKeyID, bundle, chainPEM []byte) error {
	issuers := m.parsedBundle(bundle)
	if len(chainPEM) > 0 {
		if more, err := ca.ParseCertificates(chainPEM); err == nil {
			issuers = append(issuers[:len(issuers):len(issuers)], more...)
		}
	}
	for _, c := range issuers {
		if bytes.Equal(rawIssuer, c.RawSubject) && (len(authorityKeyID) == 0 || bytes.Equal(authorityKeyID, c.SubjectKeyId)) {
			return nil
		}
	}
	return errors.New("issued certificate's issuer is not in the trust bundle")
}

// parsedBundle parses a trust bundle once per distinct content.
func (m *Manager) parsedBundle(bundle []byte) []*x509.Certificate {
	m.bundleMu.Lock()
	defer m.bundleMu.Unlock()
	if certs, ok := m.bundleCerts[string(bundle)]; ok { // no copy of bundle for a lookup
		return certs
	}
	certs, _ := ca.ParseCertificates(bundle)
	if m.bundleCerts == nil || len(m.bundleCerts) >= 64 {
		m.bundleCerts = map[string][]*x509.Certificate{} // CAs changed many times: start over
	}
	m.bundleCerts[string(bundle)] = certs
	return certs
}

func keyMatches(keyPEM []byte, leaf *x509.Certificate) error {
	k, err := ParseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("returned key: %w", err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := k.Public().(equaler); !ok || !e.Equal(leaf.PublicKey) {
		return errors.New("returned key does not match the certificate")
	}
	return nil
}

func parseCSR(p []byte) (*x509.CertificateRequest, error) {
	blocks, err := pemBlock(p, "CERTIFICATE REQUEST")
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificateRequest(blocks)
}
