package acmpcaemu

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	shortLivedMaxValidity = 7 * 24 * time.Hour
	backdate              = time.Hour
	maxListResults        = 1000
)

func (s *Server) operationHandlers() map[string]opHandler {
	return map[string]opHandler{
		OpCreateCertificateAuthority:            s.createCertificateAuthority,
		OpDescribeCertificateAuthority:          s.describeCertificateAuthority,
		OpListCertificateAuthorities:            s.listCertificateAuthorities,
		OpGetCertificateAuthorityCertificate:    s.getCertificateAuthorityCertificate,
		OpGetCertificateAuthorityCsr:            s.getCertificateAuthorityCsr,
		OpImportCertificateAuthorityCertificate: s.importCertificateAuthorityCertificate,
		OpUpdateCertificateAuthority:            s.updateCertificateAuthority,
		OpIssueCertificate:                      s.issueCertificate,
		OpGetCertificate:                        s.getCertificate,
		OpRevokeCertificate:                     s.revokeCertificate,
	}
}

func required(name, v string) error {
	if v == "" {
		return newAPIError(codeValidation,
			"1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", name)
	}
	return nil
}

// lookupCALocked validates a CA ARN and finds the CA.
func (s *Server) lookupCALocked(arn string) (*caState, error) {
	if err := required("certificateAuthorityArn", arn); err != nil {
		return nil, err
	}
	p, err := parseARN(arn)
	if err != nil {
		return nil, err
	}
	if p.CertID != "" {
		return nil, newAPIError(codeInvalidArn, "The ARN %q is not a certificate authority ARN.", arn)
	}
	ca, ok := s.cas[arn]
	if !ok || ca.Status == StatusDeleted {
		return nil, newAPIError(codeResourceNotFound, "Could not find certificate authority %s.", arn)
	}
	return ca, nil
}

func (s *Server) describeLocked(ca *caState) *certificateAuthorityShape {
	out := &certificateAuthorityShape{
		Arn:               ca.ARN,
		OwnerAccount:      ca.OwnerAccount,
		CreatedAt:         newEpochTime(ca.CreatedAt),
		LastStateChangeAt: newEpochTime(ca.LastStateChangeAt),
		Type:              ca.Type,
		Status:            ca.Status,
		CertificateAuthorityConfiguration: &caConfiguration{
			KeyAlgorithm:     ca.KeyAlgorithm,
			SigningAlgorithm: ca.SigningAlgorithm,
			Subject:          ca.Subject,
		},
		RevocationConfiguration: &revocationConfiguration{
			CrlConfiguration:  &enabledShape{},
			OcspConfiguration: &enabledShape{},
		},
		KeyStorageSecurityStandard: "FIPS_140_2_LEVEL_3_OR_HIGHER",
		UsageMode:                  ca.UsageMode,
	}
	if ca.cert != nil {
		out.Serial = colonHex(ca.cert.SerialNumber)
		out.NotBefore = newEpochTime(ca.cert.NotBefore)
		out.NotAfter = newEpochTime(ca.cert.NotAfter)
		out.CertificateAuthorityConfiguration.Subject = subjectFromName(ca.cert.Subject)
	}
	return out
}

func (s *Server) describeCertificateAuthority(_ context.Context, c call) (any, error) {
	return s.onCA(c, func(ca *caState) (any, error) {
		return describeCAOutput{CertificateAuthority: s.describeLocked(ca)}, nil
	})
}

// onCA decodes a request that names one CA and runs fn with that CA, under
// the server's lock.
func (s *Server) onCA(c call, fn func(ca *caState) (any, error)) (any, error) {
	var in caArnInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ca, err := s.lookupCALocked(in.CertificateAuthorityArn)
	if err != nil {
		return nil, err
	}
	return fn(ca)
}

func (s *Server) listCertificateAuthorities(_ context.Context, c call) (any, error) {
	var in listCAsInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	limit := maxListResults
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > maxListResults {
			return nil, newAPIError(codeValidation,
				"1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 1000", *in.MaxResults)
		}
		limit = int(*in.MaxResults)
	}
	start := 0
	if in.NextToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(in.NextToken)
		n, err2 := strconv.Atoi(string(raw))
		if err != nil || err2 != nil || n < 0 {
			return nil, newAPIError(codeInvalidNextToken, "The token %q is not valid.", in.NextToken)
		}
		start = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	arns := slices.Sorted(maps.Keys(s.cas))
	arns = slices.DeleteFunc(arns, func(a string) bool { return s.cas[a].Status == StatusDeleted })
	out := listCAsOutput{CertificateAuthorities: []*certificateAuthorityShape{}}
	for i := start; i < len(arns) && i < start+limit; i++ {
		out.CertificateAuthorities = append(out.CertificateAuthorities, s.describeLocked(s.cas[arns[i]]))
	}
	if start+limit < len(arns) {
		out.NextToken = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(start + limit)))
	}
	return out, nil
}

func (s *Server) getCertificateAuthorityCertificate(_ context.Context, c call) (any, error) {
	return s.onCA(c, func(ca *caState) (any, error) {
		if ca.CertPEM == "" {
			return nil, newAPIError(codeInvalidState, "The certificate authority %s is in the %s state and has no certificate.", ca.ARN, ca.Status)
		}
		return getCACertificateOutput{Certificate: ca.CertPEM, CertificateChain: strings.Join(ca.ChainPEM, "\n")}, nil
	})
}

func (s *Server) getCertificateAuthorityCsr(_ context.Context, c call) (any, error) {
	return s.onCA(c, func(ca *caState) (any, error) {
		if ca.CSRPEM == "" {
			// CAs from specs have no stored CSR; make one on demand so the
			// operation behaves for every CA.
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: nameFromSubject(ca.Subject)}, ca.key)
			if err != nil {
				return nil, fmt.Errorf("create CSR: %w", err)
			}
			ca.CSRPEM = strings.TrimRight(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), "\n")
		}
		return getCACsrOutput{Csr: ca.CSRPEM}, nil
	})
}

func (s *Server) updateCertificateAuthority(_ context.Context, c call) (any, error) {
	var in updateCAInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ca, err := s.lookupCALocked(in.CertificateAuthorityArn)
	if err != nil {
		return nil, err
	}
	if in.Status != "" {
		if in.Status != StatusActive && in.Status != StatusDisabled {
			return nil, newAPIError(codeInvalidArgs, "Status can only be updated to ACTIVE or DISABLED.")
		}
		if ca.Status != StatusActive && ca.Status != StatusDisabled {
			return nil, newAPIError(codeInvalidState, "The certificate authority %s is in the %s state.", ca.ARN, ca.Status)
		}
		if ca.Status != in.Status {
			ca.Status = in.Status
			ca.LastStateChangeAt = s.now()
		}
	}
	if err := s.saveLocked(); err != nil {
		return nil, err
	}
	return emptyOutput{}, nil
}

func (s *Server) createCertificateAuthority(ctx context.Context, c call) (any, error) {
	var in createCAInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if in.CertificateAuthorityConfiguration == nil {
		return nil, required("certificateAuthorityConfiguration", "")
	}
	cfg := *in.CertificateAuthorityConfiguration
	if err := required("certificateAuthorityType", in.CertificateAuthorityType); err != nil {
		return nil, err
	}
	if in.CertificateAuthorityType != TypeRoot && in.CertificateAuthorityType != TypeSubordinate {
		return nil, newAPIError(codeInvalidArgs, "Invalid certificate authority type %q.", in.CertificateAuthorityType)
	}
	if !validKeyAlgorithm(cfg.KeyAlgorithm) {
		return nil, newAPIError(codeInvalidArgs, "Key algorithm %q is not supported.", cfg.KeyAlgorithm)
	}
	if cfg.Subject == nil || *cfg.Subject == (asn1Subject{}) {
		return nil, newAPIError(codeInvalidArgs, "The certificate authority subject must not be empty.")
	}
	if _, err := signingAlgorithm(cfg.SigningAlgorithm, cfg.KeyAlgorithm); err != nil {
		return nil, err
	}
	mode := in.UsageMode
	if mode == "" {
		mode = ModeGeneralPurpose
	}
	if mode != ModeGeneralPurpose && mode != ModeShortLived {
		return nil, newAPIError(codeInvalidArgs, "Invalid usage mode %q.", mode)
	}
	key, err := generateKey(cfg.KeyAlgorithm)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	subject := nameFromSubject(cfg.Subject)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	region := c.region
	if region == "" {
		region = s.opts.Region
	}
	now := s.now()
	ca := &caState{
		ARN: fmt.Sprintf("arn:aws:acm-pca:%s:%s:%s%s", region, s.opts.Account,
			certificateAuthorityPrefix, newRequestID()),
		Type:              in.CertificateAuthorityType,
		KeyAlgorithm:      cfg.KeyAlgorithm,
		SigningAlgorithm:  cfg.SigningAlgorithm,
		UsageMode:         mode,
		Status:            StatusPendingCertificate,
		OwnerAccount:      s.opts.Account,
		Subject:           cfg.Subject,
		CreatedAt:         now,
		LastStateChangeAt: now,
		KeyPEM:            keyPEM,
		CSRPEM:            strings.TrimRight(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})), "\n"),
		key:               key,
	}
	if s.opts.ActivateCreatedRoots && ca.Type == TypeRoot {
		der, err := createCACert(key, key.Public(), subject, now.Add(-backdate), now.AddDate(10, 0, 0), nil, -1)
		if err != nil {
			return nil, err
		}
		if ca.cert, err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("parse CA certificate: %w", err)
		}
		ca.CertPEM, ca.Status = certPEM(der), StatusActive
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cas[ca.ARN] = ca
	if err := s.saveLocked(); err != nil {
		return nil, err
	}
	if _, err := s.writeChainLocked(ca); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "certificate authority created", "ca_arn", ca.ARN, "type", ca.Type,
		"key_algorithm", ca.KeyAlgorithm, "status", ca.Status)
	return createCAOutput{CertificateAuthorityArn: ca.ARN}, nil
}

func (s *Server) importCertificateAuthorityCertificate(ctx context.Context, c call) (any, error) {
	var in importCACertificateInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if len(in.Certificate) == 0 {
		return nil, required("certificate", "")
	}
	certPEMs, certs, err := splitPEMCerts(in.Certificate)
	if err != nil || len(certs) != 1 {
		return nil, newAPIError(codeMalformedCertificate, "The certificate is not a single valid PEM certificate.")
	}
	var chainPEMs []string
	var chain []*x509.Certificate
	if len(in.CertificateChain) > 0 {
		if chainPEMs, chain, err = splitPEMCerts(in.CertificateChain); err != nil {
			return nil, newAPIError(codeMalformedCertificate, "The certificate chain is malformed: %v", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ca, err := s.lookupCALocked(in.CertificateAuthorityArn)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if !publicKeysEqual(cert.PublicKey, ca.key.Public()) {
		return nil, newAPIError(codeCertificateMismatch, "The certificate does not match the certificate authority's key.")
	}
	if !cert.IsCA {
		return nil, newAPIError(codeInvalidRequest, "The certificate is not a CA certificate.")
	}
	// Verify that the chain really leads to a self-signed root, as AWS does.
	if ca.Type == TypeRoot {
		if len(chain) != 0 {
			return nil, newAPIError(codeInvalidRequest, "A root CA certificate must be imported without a chain.")
		}
		if err := cert.CheckSignatureFrom(cert); err != nil {
			return nil, newAPIError(codeInvalidRequest, "The root CA certificate is not self-signed: %v", err)
		}
	} else {
		if len(chain) == 0 {
			return nil, newAPIError(codeInvalidRequest, "A subordinate CA certificate must be imported with its chain.")
		}
		issuer := cert
		for _, c := range chain {
			if err := issuer.CheckSignatureFrom(c); err != nil {
				return nil, newAPIError(codeInvalidRequest, "The certificate chain is not valid: %v", err)
			}
			issuer = c
		}
		if err := issuer.CheckSignatureFrom(issuer); err != nil {
			return nil, newAPIError(codeInvalidRequest, "The certificate chain does not end in a self-signed root.")
		}
	}
	ca.cert, ca.CertPEM, ca.ChainPEM = cert, certPEMs[0], chainPEMs
	if ca.Status == StatusPendingCertificate {
		ca.Status = StatusActive
		ca.LastStateChangeAt = s.now()
	}
	if err := s.saveLocked(); err != nil {
		return nil, err
	}
	if _, err := s.writeChainLocked(ca); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "certificate authority certificate imported", "ca_arn", ca.ARN, "subject", cert.Subject.String())
	return emptyOutput{}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

// certificateValidity computes notBefore/notAfter per the ACM PCA Validity
// rules.
func certificateValidity(now time.Time, v, nb *validityShape) (time.Time, time.Time, error) {
	if v == nil || v.Type == "" || v.Value == nil {
		return time.Time{}, time.Time{}, required("validity", "")
	}
	val := *v.Value
	var notAfter time.Time
	switch v.Type {
	case "ABSOLUTE":
		notAfter = time.Unix(val, 0)
	case "END_DATE":
		t, err := parseEndDate(val)
		if err != nil {
			return time.Time{}, time.Time{}, err
		}
		notAfter = t
	case "DAYS", "MONTHS", "YEARS":
		if val < 1 {
			return time.Time{}, time.Time{}, newAPIError(codeValidation, "Validity value must be at least 1 for type %s.", v.Type)
		}
		if val > 1000 {
			return time.Time{}, time.Time{}, newAPIError(codeValidation, "Validity value %d is too large.", val)
		}
		switch v.Type {
		case "DAYS":
			notAfter = now.AddDate(0, 0, int(val))
		case "MONTHS":
			notAfter = now.AddDate(0, int(val), 0)
		default:
			notAfter = now.AddDate(int(val), 0, 0)
		}
	default:
		return time.Time{}, time.Time{}, newAPIError(codeValidation,
			"1 validation error detected: Value '%s' at 'validity.type' failed to satisfy constraint: Member must satisfy enum value set: [END_DATE, ABSOLUTE, DAYS, MONTHS, YEARS]", v.Type)
	}
	notBefore := now.Add(-backdate)
	if nb != nil {
		if nb.Value == nil {
			return time.Time{}, time.Time{}, required("validityNotBefore.value", "")
		}
		switch nb.Type {
		case "ABSOLUTE":
			notBefore = time.Unix(*nb.Value, 0)
		case "END_DATE":
			t, err := parseEndDate(*nb.Value)
			if err != nil {
				return time.Time{}, time.Time{}, err
			}
			notBefore = t
		default:
			return time.Time{}, time.Time{}, newAPIError(codeValidation, "ValidityNotBefore type must be ABSOLUTE or END_DATE.")
		}
	}
	if !notAfter.After(now) {
		return time.Time{}, time.Time{}, newAPIError(codeValidation, "The certificate validity end %s is in the past.", notAfter.UTC().Format(time.RFC3339))
	}
	if !notAfter.After(notBefore) {
		return time.Time{}, time.Time{}, newAPIError(codeValidation, "The certificate validity end must be after its start.")
	}
	return notBefore.UTC(), notAfter.UTC(), nil
}

// parseEndDate reads YYYYMMDDHHMMSS (GeneralizedTime) or YYMMDDHHMMSS
// (UTCTime, with the RFC 5280 century rule) given as a number.
func parseEndDate(v int64) (time.Time, error) {
	s := strconv.FormatInt(v, 10)
	var (
		t   time.Time
		err error
	)
	switch len(s) {
	case 14:
		t, err = time.Parse("20060102150405", s)
	case 12, 11:
		s = fmt.Sprintf("%012d", v)
		t, err = time.Parse("060102150405", s)
		if err == nil {
			// Go maps YY 69-99 to 19YY; RFC 5280 says 50-99.
			if yy := v / 1e10; yy < 50 && t.Year() < 2000 {
				t = t.AddDate(100, 0, 0)
			} else if yy >= 50 && t.Year() >= 2000 {
				t = t.AddDate(-100, 0, 0)
			}
		}
	default:
		err = fmt.Errorf("wrong length")
	}
	if err != nil {
		return time.Time{}, newAPIError(codeValidation, "Validity value %d is not a valid END_DATE (YYYYMMDDHHMMSS).", v)
	}
	return t, nil
}

// issueHash identifies the arguments of an IssueCertificate request for
// idempotency checks.
func issueHash(in issueCertificateInput) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", in.CertificateAuthorityArn, in.SigningAlgorithm, in.TemplateArn)
	for _, v := range []*validityShape{in.Validity, in.ValidityNotBefore} {
		if v != nil && v.Value != nil {
			fmt.Fprintf(h, "%s:%d\x00", v.Type, *v.Value)
		} else {
			h.Write([]byte("-\x00"))
		}
	}
	h.Write(bytes.TrimSpace(in.Csr))
	return hex.EncodeToString(h.Sum(nil))
}

// templateKind returns the path length for CA templates (-2 for end-entity
// templates, -1 for the root template).
func templateKind(arn string) (int, error) {
	switch arn {
	case TemplateEndEntity, TemplateEndEntityClient, TemplateEndEntityServer:
		return -2, nil
	case TemplateRootCA:
		return -1, nil
	}
	if rest, ok := strings.CutPrefix(arn, templateSubordinatePfx); ok {
		if n, ok := strings.CutSuffix(rest, "/V1"); ok {
			if p, err := strconv.Atoi(n); err == nil && p >= 0 && p <= 3 {
				return p, nil
			}
		}
	}
	return 0, newAPIError(codeInvalidArgs, "The template ARN %q is not supported.", arn)
}

func (s *Server) issueCertificate(ctx context.Context, c call) (any, error) {
	var in issueCertificateInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if err := required("certificateAuthorityArn", in.CertificateAuthorityArn); err != nil {
		return nil, err
	}
	if len(in.Csr) == 0 {
		return nil, required("csr", "")
	}
	if err := required("signingAlgorithm", in.SigningAlgorithm); err != nil {
		return nil, err
	}
	if in.TemplateArn == "" {
		in.TemplateArn = TemplateEndEntity
	}
	pathLen, err := templateKind(in.TemplateArn)
	if err != nil {
		return nil, err
	}
	csr, err := parseCSR(in.Csr)
	if err != nil {
		return nil, err
	}
	now := s.now()
	notBefore, notAfter, err := certificateValidity(now, in.Validity, in.ValidityNotBefore)
	if err != nil {
		return nil, err
	}

	// The lock is held through signing so that idempotent retries and
	// concurrent requests observe one consistent outcome.
	s.mu.Lock()
	defer s.mu.Unlock()
	ca, err := s.lookupCALocked(in.CertificateAuthorityArn)
	if err != nil {
		return nil, err
	}
	sigAlg, err := signingAlgorithm(in.SigningAlgorithm, ca.KeyAlgorithm)
	if err != nil {
		return nil, err
	}
	var idemKey, hash string
	if in.IdempotencyToken != "" {
		idemKey, hash = ca.ARN+"\x00"+in.IdempotencyToken, issueHash(in)
		if rec, ok := s.idem[idemKey]; ok && now.Sub(rec.At) < idempotencyWindow {
			if rec.Hash != hash {
				return nil, newAPIError(codeIdempotency,
					"The idempotency token %q was already used with different arguments.", in.IdempotencyToken)
			}
			return issueCertificateOutput{CertificateArn: rec.CertARN}, nil
		}
	}

	parent, signer := ca.cert, ca.key
	switch {
	case pathLen == -1:
		if ca.Type != TypeRoot {
			return nil, newAPIError(codeInvalidArgs, "The RootCACertificate template can only be used by a ROOT certificate authority.")
		}
		if ca.Status != StatusPendingCertificate && ca.Status != StatusActive {
			return nil, newAPIError(codeInvalidState, "The certificate authority %s is in the %s state.", ca.ARN, ca.Status)
		}
		if !publicKeysEqual(csr.PublicKey, ca.key.Public()) {
			return nil, newAPIError(codeInvalidArgs, "The RootCACertificate template requires the certificate authority's own CSR.")
		}
		parent = nil
	case ca.Status != StatusActive:
		return nil, newAPIError(codeInvalidState, "The certificate authority %s is in the %s state and cannot issue certificates.", ca.ARN, ca.Status)
	}
	if ca.UsageMode == ModeShortLived && notAfter.Sub(later(notBefore, now)) > shortLivedMaxValidity {
		return nil, newAPIError(codeValidation,
			"Certificate authorities with usage mode SHORT_LIVED_CERTIFICATE can only issue certificates valid for 7 days or less.")
	}
	if parent != nil && notAfter.After(parent.NotAfter) {
		return nil, newAPIError(codeValidation,
			"The certificate validity end %s is after the certificate authority's validity end %s.",
			notAfter.Format(time.RFC3339), parent.NotAfter.UTC().Format(time.RFC3339))
	}

	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		RawSubject:            csr.RawSubject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		SignatureAlgorithm:    sigAlg,
		BasicConstraintsValid: true,
	}
	if tmpl.SubjectKeyId, err = subjectKeyID(csr.PublicKey); err != nil {
		return nil, err
	}
	applyTemplate(tmpl, in.TemplateArn, pathLen, csr)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, csr.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	chain := ca.ChainPEM
	if ca.CertPEM != "" {
		chain = append([]string{ca.CertPEM}, ca.ChainPEM...)
	}
	if pathLen == -1 {
		chain = nil
	}
	rec := &certState{
		ARN:      ca.ARN + "/certificate/" + serialHex(serial),
		CAArn:    ca.ARN,
		Serial:   serialHex(serial),
		PEM:      certPEM(der),
		Chain:    strings.Join(chain, "\n"),
		Subject:  csr.Subject.String(),
		IssuedAt: now,
		NotAfter: notAfter,
	}
	s.certs[rec.ARN] = rec
	if idemKey != "" {
		s.idem[idemKey] = idemState{Hash: hash, CertARN: rec.ARN, At: now}
	}
	for k, v := range s.idem {
		if now.Sub(v.At) >= idempotencyWindow {
			delete(s.idem, k)
		}
	}
	s.issued++
	s.issuedByCA[ca.ARN]++
	if err := s.journalLocked(rec, idemKey); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "certificate issued", "ca_arn", ca.ARN, "serial", rec.Serial,
		"subject", rec.Subject, "not_after", notAfter, "template", in.TemplateArn)
	return issueCertificateOutput{CertificateArn: rec.ARN}, nil
}

// applyTemplate sets extensions as the ACM PCA base templates do.
func applyTemplate(tmpl *x509.Certificate, templateARN string, pathLen int, csr *x509.CertificateRequest) {
	if pathLen >= -1 {
		tmpl.IsCA = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		tmpl.MaxPathLen = pathLen
		tmpl.MaxPathLenZero = pathLen == 0
		return
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	switch templateARN {
	case TemplateEndEntityClient:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case TemplateEndEntityServer:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl.DNSNames = csr.DNSNames
	tmpl.EmailAddresses = csr.EmailAddresses
	tmpl.IPAddresses = csr.IPAddresses
	tmpl.URIs = csr.URIs
}

// parseCSR accepts the PEM CSR of the API (or, leniently, DER) and checks
// its self-signature.
func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	der := data
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
			return nil, newAPIError(codeMalformedCSR, "The CSR PEM block has type %q.", b.Type)
		}
		der = b.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, newAPIError(codeMalformedCSR, "The certificate signing request is malformed: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, newAPIError(codeMalformedCSR, "The certificate signing request signature is invalid: %v", err)
	}
	return csr, nil
}

// lookupCertLocked resolves a certificate ARN under a CA ARN.
func (s *Server) lookupCertLocked(caARN, certARN string) (*certState, error) {
	if _, err := s.lookupCALocked(caARN); err != nil {
		return nil, err
	}
	if err := required("certificateArn", certARN); err != nil {
		return nil, err
	}
	p, err := parseARN(certARN)
	if err != nil {
		return nil, err
	}
	if p.CertID == "" || p.CAArn() != caARN {
		return nil, newAPIError(codeInvalidArn, "The certificate ARN %q does not belong to certificate authority %s.", certARN, caARN)
	}
	rec, ok := s.certs[certARN]
	if !ok {
		return nil, newAPIError(codeResourceNotFound, "Could not find certificate %s.", certARN)
	}
	return rec, nil
}

func (s *Server) getCertificate(_ context.Context, c call) (any, error) {
	var in getCertificateInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.lookupCertLocked(in.CertificateAuthorityArn, in.CertificateArn)
	if err != nil {
		return nil, err
	}
	if s.now().Before(rec.IssuedAt.Add(s.opts.InProgress)) {
		return nil, newAPIError(codeRequestInProgress, "The certificate %s is not ready yet.", rec.ARN)
	}
	out := getCertificateOutput{Certificate: rec.PEM, CertificateChain: rec.Chain}
	if out.CertificateChain == "" {
		// A self-signed root's chain is the certificate itself.
		out.CertificateChain = rec.PEM
	}
	return out, nil
}

func validRevocationReason(r string) bool {
	switch r {
	case "UNSPECIFIED", "KEY_COMPROMISE", "CERTIFICATE_AUTHORITY_COMPROMISE", "AFFILIATION_CHANGED",
		"SUPERSEDED", "CESSATION_OF_OPERATION", "PRIVILEGE_WITHDRAWN", "A_A_COMPROMISE":
		return true
	}
	return false
}

func (s *Server) revokeCertificate(ctx context.Context, c call) (any, error) {
	var in revokeCertificateInput
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if err := required("certificateSerial", in.CertificateSerial); err != nil {
		return nil, err
	}
	if err := required("revocationReason", in.RevocationReason); err != nil {
		return nil, err
	}
	if !validRevocationReason(in.RevocationReason) {
		return nil, newAPIError(codeValidation, "Invalid revocation reason %q.", in.RevocationReason)
	}
	serial, ok := new(big.Int).SetString(strings.ReplaceAll(in.CertificateSerial, ":", ""), 16)
	if !ok {
		return nil, newAPIError(codeInvalidArgs, "The certificate serial %q is not valid.", in.CertificateSerial)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ca, err := s.lookupCALocked(in.CertificateAuthorityArn)
	if err != nil {
		return nil, err
	}
	if ca.Status != StatusActive && ca.Status != StatusDisabled {
		return nil, newAPIError(codeInvalidState, "The certificate authority %s is in the %s state.", ca.ARN, ca.Status)
	}
	rec, ok := s.certs[ca.ARN+"/certificate/"+serialHex(serial)]
	if !ok {
		return nil, newAPIError(codeResourceNotFound, "Could not find certificate with serial %s.", in.CertificateSerial)
	}
	if !rec.RevokedAt.IsZero() {
		return nil, newAPIError(codeRequestAlreadyDone, "The certificate %s was already revoked.", in.CertificateSerial)
	}
	rec.RevokedAt, rec.RevocationReason = s.now(), in.RevocationReason
	if err := s.saveLocked(); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "certificate revoked", "ca_arn", ca.ARN, "serial", rec.Serial, "reason", in.RevocationReason)
	return emptyOutput{}, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
