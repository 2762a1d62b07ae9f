// Package acmpca is the `acmpca` mTLS backend: data-plane certificates are
// issued by an AWS Certificate Manager Private CA, configured as Kong Mesh
// documents it (conf.arn, conf.commonName, conf.caCert,
// conf.auth.awsCredentials). The CA private key never leaves AWS: the
// backend only sends CSRs (IssueCertificate) and fetches the result
// (GetCertificate).
//
// Behaviour:
//   - Validate is offline: conf syntax (unknown fields refused with their
//     path), ARN syntax, caCert resolves and holds only CA certificates,
//     credentials resolve (both or neither) and have the shape of AWS
//     credentials, dpCert.rotation.expiration.
//   - Ensure calls DescribeCertificateAuthority (the CA must be ACTIVE; a
//     SHORT_LIVED_CERTIFICATE CA refuses expirations over 7 days) and
//     GetCertificateAuthorityCertificate, and checks that the CA's chain ends
//     in a certificate of caCert. The result is cached per (mesh, backend,
//     hash of the resolved conf and credentials), so later calls are cheap;
//     a changed Secret yields a new hash, a new client and a new check.
//   - TrustBundle is the certificate of caCert that anchors the CA's chain
//     (the topmost: a self-signed root when caCert has it). Other
//     certificates of caCert are not trusted for this backend.
//   - Issue sends the CSR with Validity ABSOLUTE (now + lifetime, in seconds
//     since the epoch, so sub-day lifetimes work) and the request's
//     idempotency key as IdempotencyToken, then polls GetCertificate while
//     ACM answers RequestInProgressException (never re-issuing). The chain
//     returned is verified against the trust bundle.
//   - Budget: per (mesh, backend), IssueCertificate attempts (SDK retries
//     included) are paced at conf.maxRequestsPerSecond (burst 1), and every
//     other call (GetCertificate polling, Describe...) by a second bucket at
//     three times that rate, as ACM's default quotas are (25/s and 75/s).
//     conf.maxConcurrentIssues bounds issuances in
//     flight. Time waiting for the bucket or a concurrency slot is not
//     counted against dpCert.requestTimeout / rootChain.requestTimeout.
//   - Throttling and 5xx are retried by the SDK's standard retryer with
//     jittered backoff, more attempts and no retry quota.
//   - Credentials: the default AWS chain when conf.auth is unset; static
//     credentials from the DataSources otherwise (inline ones are accepted
//     with a warning). Surrounding whitespace of a credential is trimmed
//     (a key file or Secret ending in a newline works, as with the AWS
//     CLI); a control character or space left inside, or an accessKey that
//     is not letters, digits and underscores (at most 128), is refused by
//     Validate and by every Issue before any request, naming
//     conf.auth.awsCredentials.accessKey or .accessKeySecret and never
//     quoting the value. The region comes from the AWS configuration
//     (AWS_REGION, shared config), else from the ARN. The standard AWS
//     variables are honoured, including AWS_ENDPOINT_URL_ACM_PCA.
//   - Metrics: see [CollectorsProvider].
package acmpca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awspca "github.com/aws/aws-sdk-go-v2/service/acmpca"
	pcatypes "github.com/aws/aws-sdk-go-v2/service/acmpca/types"
	"github.com/prometheus/client_golang/prometheus"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/datasource"
	"meshca/pkg/store"
)

// Type is the backend type this package implements.
const Type = "acmpca"

// CollectorsProvider is implemented by the backend New returns. The
// collectors are created by New (nothing is registered globally); register
// them once on the control plane's registry:
//
//	if cp, ok := be.(acmpca.CollectorsProvider); ok {
//		reg.MustRegister(cp.Collectors()...)
//	}
//
// They are meshca_acmpca_requests_total{operation,outcome} (every SDK
// attempt), meshca_acmpca_throttles_total{operation},
// meshca_acmpca_issue_duration_seconds{outcome},
// meshca_acmpca_rate_limit_wait_seconds,
// meshca_acmpca_certificates_issued_total (billable issuances) and
// meshca_acmpca_issues_in_flight.
type CollectorsProvider interface {
	Collectors() []prometheus.Collector
}

var (
	_ ca.Backend          = (*backend)(nil)
	_ ca.SecretUser       = (*backend)(nil)
	_ ca.CommonNamer      = (*backend)(nil)
	_ ca.IdempotentIssuer = (*backend)(nil)
	_ ca.Cleaner          = (*backend)(nil)
	_ CollectorsProvider  = (*backend)(nil)
)

type stateKey struct{ mesh, name string }

type backend struct {
	sources *datasource.Resolver
	store   store.Store // billing counts (nil: kept in memory only)
	log     *slog.Logger
	hooks   hooks
	m       *metrics

	mu     sync.Mutex
	states map[stateKey]*state
}

// state is what the backend keeps for one (mesh, backend).
type state struct {
	// budget paces the backend's ACM PCA requests; it survives client
	// rebuilds so a changed Secret does not reset it.
	budget budget

	// ensureMu serialises the network part of Ensure.
	ensureMu sync.Mutex

	mu       sync.Mutex
	hash     string
	client   pcaClient
	sem      chan struct{}
	verified *verified
	// seen are certificate ARNs already counted as issued.
	seen map[string]time.Time
}

// memoTTL (how long issued ARNs are remembered) outlives ACM PCA's 5-minute idempotency window.
const memoTTL = 10 * time.Minute

// verified is the outcome of a successful Ensure for one conf hash.
type verified struct {
	hash       string
	bundle     []byte
	signingAlg pcatypes.SigningAlgorithm
	usageMode  pcatypes.CertificateAuthorityUsageMode
}

// resolved is a conf with its DataSources read.
type resolved struct {
	conf                 *parsedConf
	caCerts              []*x509.Certificate
	accessKey, secretKey string
	hash                 string
}

// New returns the acmpca backend. It uses deps.Sources (or a resolver over
// deps.Store), deps.Logger and deps.Now. The value also implements
// ca.SecretUser, ca.CommonNamer, ca.IdempotentIssuer, ca.Cleaner and
// CollectorsProvider.
func New(deps ca.Deps) (ca.Backend, error) {
	return newBackend(deps, defaultHooks())
}

func newBackend(deps ca.Deps, h hooks) (*backend, error) {
	if deps.Sources == nil {
		if deps.Store == nil {
			return nil, errors.New("acmpca backend needs Deps.Sources or Deps.Store")
		}
		deps.Sources = datasource.New(deps.Store)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now != nil {
		h.now = deps.Now
	}
	return &backend{
		sources: deps.Sources,
		store:   deps.Store,
		log:     deps.Logger.With("backendType", Type),
		hooks:   h,
		m:       newMetrics(),
		states:  map[stateKey]*state{},
	}, nil
}

// Collectors returns the backend's Prometheus collectors.
func (b *backend) Collectors() []prometheus.Collector { return b.m.collectors() }

// IdempotentIssue reports that Issue is idempotent on the idempotency key
// (it becomes ACM PCA's IdempotencyToken).
func (b *backend) IdempotentIssue() bool { return true }

// CommonNameTemplate returns conf.commonName.
func (b *backend) CommonNameTemplate(mb api.MTLSBackend) string {
	var c Conf
	if err := json.Unmarshal(mb.Conf, &c); err != nil {
		return ""
	}
	return c.CommonName
}

// UsedSecrets lists the mesh Secrets the conf references.
func (b *backend) UsedSecrets(mb api.MTLSBackend) []string {
	var c Conf
	if err := json.Unmarshal(mb.Conf, &c); err != nil {
		return nil
	}
	var out []string
	add := func(ds *api.DataSource) {
		if ds != nil && ds.Secret != "" {
			out = append(out, ds.Secret)
		}
	}
	add(c.CaCert)
	if c.Auth != nil && c.Auth.AWSCredentials != nil {
		add(c.Auth.AWSCredentials.AccessKey)
		add(c.Auth.AWSCredentials.AccessKeySecret)
	}
	return out
}

// CleanupOps forgets the backend's client and cached chain; the backend
// stores nothing, so there are no ops.
func (b *backend) CleanupOps(_ context.Context, mesh string, mb api.MTLSBackend) ([]store.Op, error) {
	b.mu.Lock()
	delete(b.states, stateKey{mesh, mb.Name})
	b.mu.Unlock()
	return nil, nil
}

// Validate checks the conf, that its DataSources resolve, that caCert holds
// CA certificates and dpCert.rotation.expiration. It does not contact AWS.
func (b *backend) Validate(ctx context.Context, mesh string, mb api.MTLSBackend) error {
	v := &api.ValidationError{}
	v.AddErr("", validateExpiration(mb))
	p, err := parseConf(mb.Conf)
	if err != nil {
		v.AddErr("", err)
		return v.OrNil()
	}
	if ca.SyntaxOnly(ctx) {
		return v.OrNil()
	}
	if _, err := b.resolve(ctx, mesh, p); err != nil {
		v.AddErr("", err)
	}
	if err := v.OrNil(); err != nil {
		return err
	}
	b.warnInline(mesh, mb.Name, p)
	return nil
}

// warnInline warns, without the values, about credentials written in the
// conf itself.
func (b *backend) warnInline(mesh, name string, p *parsedConf) {
	if !p.staticCredentials() {
		return
	}
	var fields []string
	if p.Auth.AWSCredentials.AccessKey.IsInline() {
		fields = append(fields, fAccessKey)
	}
	if p.Auth.AWSCredentials.AccessKeySecret.IsInline() {
		fields = append(fields, fAccessKeySecret)
	}
	if len(fields) > 0 {
		b.log.Warn("AWS credentials are written inline in the Mesh; inline credentials are meant for testing only, use a secret or a file",
			"mesh", mesh, "backend", name, "fields", fields)
	}
}

// resolve reads caCert and the credentials and hashes everything that
// determines the client and the verified chain.
func (b *backend) resolve(ctx context.Context, mesh string, p *parsedConf) (*resolved, error) {
	v := &api.ValidationError{}
	rc := &resolved{conf: p}
	caPEM, err := b.sources.Resolve(ctx, mesh, p.CaCert, fCaCert)
	if err != nil {
		v.AddErr("", err)
	} else if certs, err := ca.ParseCertificates(caPEM); err != nil {
		v.Addf(fCaCert, "must hold the PEM certificate chain of the private CA: %v", err)
	} else {
		for i, c := range certs {
			if !c.BasicConstraintsValid || !c.IsCA {
				v.Addf(fCaCert, "certificate %d (subject %q) is not a CA certificate", i+1, c.Subject.String())
			}
		}
		rc.caCerts = certs
	}
	if p.staticCredentials() {
		read := func(ds *api.DataSource, field string) string {
			data, err := b.sources.Resolve(ctx, mesh, ds, field)
			if err != nil {
				v.AddErr("", err)
				return ""
			}
			s, err := cleanCredential(data, field == fAccessKey)
			if err != nil {
				v.AddErr(field, err)
			}
			return s
		}
		rc.accessKey = read(p.Auth.AWSCredentials.AccessKey, fAccessKey)
		rc.secretKey = read(p.Auth.AWSCredentials.AccessKeySecret, fAccessKeySecret)
	}
	if err := v.OrNil(); err != nil {
		return nil, err
	}
	h := sha256.New()
	confJSON, err := json.Marshal(p.Conf)
	if err != nil {
		return nil, fmt.Errorf("hash conf: %w", err)
	}
	for _, part := range [][]byte{confJSON, caPEM, []byte(rc.accessKey), []byte(rc.secretKey), []byte(b.hooks.endpoint)} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	rc.hash = hex.EncodeToString(h.Sum(nil))
	return rc, nil
}

// prepare parses and resolves the conf and returns the backend's state
// with a client for the resolved conf (built when the conf or its data
// changed). It makes no ACM PCA request.
func (b *backend) prepare(ctx context.Context, mesh string, mb api.MTLSBackend) (*state, *resolved, pcaClient, error) {
	p, err := parseConf(mb.Conf)
	if err != nil {
		return nil, nil, nil, err
	}
	rc, err := b.resolve(ctx, mesh, p)
	if err != nil {
		return nil, nil, nil, err
	}
	key := stateKey{mesh, mb.Name}
	b.mu.Lock()
	st := b.states[key]
	if st == nil {
		st = &state{
			budget: newBudget(p.rps),
			sem:    make(chan struct{}, p.concurrency),
			seen:   map[string]time.Time{},
		}
		st.budget.use.now = b.hooks.now
		b.states[key] = st
	}
	b.mu.Unlock()

	st.mu.Lock()
	defer st.mu.Unlock()
	if st.client != nil && st.hash == rc.hash {
		return st, rc, st.client, nil
	}
	client, err := b.buildClient(ctx, st, rc)
	if err != nil {
		return nil, nil, nil, err
	}
	st.budget.setRate(p.rps)
	if cap(st.sem) != p.concurrency {
		st.sem = make(chan struct{}, p.concurrency)
	}
	st.client, st.hash, st.verified = client, rc.hash, nil
	creds := "default AWS credential chain"
	if p.staticCredentials() {
		creds = "static credentials from conf.auth.awsCredentials"
		b.warnInline(mesh, mb.Name, p)
	}
	b.log.Info("ACM PCA client configured", "mesh", mesh, "backend", mb.Name, "arn", p.Arn,
		"credentials", creds, "maxRequestsPerSecond", p.rps, "maxConcurrentIssues", p.concurrency)
	return st, rc, client, nil
}

// buildClient makes an ACM PCA client for rc whose requests draw from
// st.limiter.
func (b *backend) buildClient(ctx context.Context, st *state, rc *resolved) (pcaClient, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(b.hooks.newRetryer),
	}
	if rc.conf.staticCredentials() {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(rc.accessKey, rc.secretKey, "")))
	}
	cfg, err := b.hooks.loadConfig(ctx, opts...)
	if err != nil {
		return nil, api.FieldErr(fAuth, "loading the AWS configuration failed: %v", err)
	}
	if cfg.Region == "" {
		cfg.Region = rc.conf.arn.Region
	}
	if cfg.Credentials != nil {
		cfg.Credentials = markedProvider{cfg.Credentials}
	}
	return b.hooks.newClient(cfg, func(o *awspca.Options) {
		o.Retryer = b.hooks.newRetryer()
		o.APIOptions = append(o.APIOptions, addBudgetMiddleware(st.budget, b.m))
		if b.hooks.endpoint != "" {
			o.BaseEndpoint = aws.String(b.hooks.endpoint)
		}
	}), nil
}

func (st *state) getVerified(hash string) *verified {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.verified != nil && st.verified.hash == hash {
		return st.verified
	}
	return nil
}

// forget drops the verified chain so the next Ensure checks the CA again
// (after ACM said the CA is gone, disabled, or the credentials fail).
func (st *state) forget(err error) {
	var oe *OpError
	if errors.As(err, &oe) && (oe.Field == fArn || oe.Field == fAuth) && oe.Code != "" {
		st.mu.Lock()
		st.verified = nil
		st.mu.Unlock()
	}
}

// Ensure checks the private CA (ACTIVE, usage mode) and that its chain ends
// in caCert. After a success it is a cheap check of the cache.
func (b *backend) Ensure(ctx context.Context, mesh string, mb api.MTLSBackend) error {
	if err := validateExpiration(mb); err != nil {
		return err
	}
	st, rc, client, err := b.prepare(ctx, mesh, mb)
	if err != nil {
		return err
	}
	_, err = b.ensure(ctx, st, rc, client, mesh, mb)
	return asValidation(err)
}

// asValidation turns an *OpError naming a field into an
// *api.ValidationError, which the API renders per field.
func asValidation(err error) error {
	var oe *OpError
	if err == nil || !errors.As(err, &oe) || oe.Field == "" {
		return err
	}
	field := oe.Field
	cp := *oe
	cp.Field = ""
	msg := cp.Error()
	msg, _ = strings.CutPrefix(msg, "ACM PCA: ")
	return api.FieldErr(field, "%s", msg)
}

func (b *backend) ensure(ctx context.Context, st *state, rc *resolved, client pcaClient, mesh string, mb api.MTLSBackend) (*verified, error) {
	if v := st.getVerified(rc.hash); v != nil {
		return v, checkUsage(v, mb.CertExpiration())
	}
	st.ensureMu.Lock()
	defer st.ensureMu.Unlock()
	if v := st.getVerified(rc.hash); v != nil {
		return v, checkUsage(v, mb.CertExpiration())
	}
	limit := mb.RootChainRequestTimeout()
	rctx, _, stop := withRequestTimer(ctx, limit)
	defer stop()
	arn := rc.conf.Arn

	d, err := client.DescribeCertificateAuthority(rctx, &awspca.DescribeCertificateAuthorityInput{CertificateAuthorityArn: aws.String(arn)})
	if err != nil {
		return nil, classify(rctx, "DescribeCertificateAuthority", err, limit)
	}
	pcaCA := d.CertificateAuthority
	if pcaCA == nil {
		return nil, &OpError{Field: fArn, Operation: "DescribeCertificateAuthority", Message: "ACM PCA described no certificate authority"}
	}
	if pcaCA.Status != pcatypes.CertificateAuthorityStatusActive {
		return nil, &OpError{Field: fArn, Operation: "DescribeCertificateAuthority",
			Message: fmt.Sprintf("the private CA is in status %s, not ACTIVE: it cannot issue certificates", pcaCA.Status)}
	}
	v := &verified{hash: rc.hash, usageMode: pcaCA.UsageMode, signingAlg: pcatypes.SigningAlgorithm(rc.conf.SigningAlgorithm)}
	if v.signingAlg == "" {
		var keyAlg pcatypes.KeyAlgorithm
		if cfg := pcaCA.CertificateAuthorityConfiguration; cfg != nil {
			keyAlg = cfg.KeyAlgorithm
		}
		if v.signingAlg = signingAlgorithmFor(keyAlg); v.signingAlg == "" {
			return nil, api.FieldErr(fSigningAlg, "must be set: no default signing algorithm for the private CA's key algorithm %q", keyAlg)
		}
	}
	if err := checkUsage(v, mb.CertExpiration()); err != nil {
		return nil, err
	}

	g, err := client.GetCertificateAuthorityCertificate(rctx, &awspca.GetCertificateAuthorityCertificateInput{CertificateAuthorityArn: aws.String(arn)})
	if err != nil {
		return nil, classify(rctx, "GetCertificateAuthorityCertificate", err, limit)
	}
	chain, err := ca.ParseCertificates([]byte(aws.ToString(g.Certificate) + "\n" + aws.ToString(g.CertificateChain)))
	if err != nil {
		return nil, &OpError{Field: fArn, Operation: "GetCertificateAuthorityCertificate", Message: "ACM PCA returned no readable CA certificate: " + err.Error(), Err: err}
	}
	anchor, err := anchorOf(chain, rc.caCerts, b.hooks.now())
	if err != nil {
		return nil, err
	}
	v.bundle = ca.EncodeCertificates(anchor)

	st.mu.Lock()
	if st.hash == rc.hash {
		st.verified = v
	}
	st.mu.Unlock()
	b.log.Info("ACM PCA private CA verified", "mesh", mesh, "backend", mb.Name, "arn", arn,
		"caType", pcaCA.Type, "usageMode", pcaCA.UsageMode, "signingAlgorithm", v.signingAlg,
		"caSubject", chain[0].Subject.String(), "trustAnchor", anchor.Subject.String())
	return v, nil
}

// signingAlgorithmFor is the default signing algorithm for a CA key.
func signingAlgorithmFor(k pcatypes.KeyAlgorithm) pcatypes.SigningAlgorithm {
	switch k {
	case pcatypes.KeyAlgorithmEcPrime256v1, pcatypes.KeyAlgorithmEcSecp384r1, pcatypes.KeyAlgorithmEcSecp521r1:
		return pcatypes.SigningAlgorithmSha256withecdsa
	case pcatypes.KeyAlgorithmRsa2048, pcatypes.KeyAlgorithmRsa3072, pcatypes.KeyAlgorithmRsa4096:
		return pcatypes.SigningAlgorithmSha256withrsa
	case pcatypes.KeyAlgorithmSm2:
		return pcatypes.SigningAlgorithmSm3withsm2
	}
	return ""
}

// checkUsage refuses lifetimes a SHORT_LIVED_CERTIFICATE CA cannot issue.
func checkUsage(v *verified, validity time.Duration) error {
	if v.usageMode == pcatypes.CertificateAuthorityUsageModeShortLivedCertificate && validity > MaxShortLivedValidity {
		return api.FieldErr(fExpiration, "%s exceeds 7 days, the longest lifetime a private CA in SHORT_LIVED_CERTIFICATE usage mode issues", validity)
	}
	return nil
}

// anchorOf verifies the CA's chain (its certificate first) against caCert
// and returns the topmost certificate of caCert it ends in.
func anchorOf(chain, caCerts []*x509.Certificate, now time.Time) (*x509.Certificate, error) {
	roots := x509.NewCertPool()
	for _, c := range caCerts {
		roots.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	paths, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, api.FieldErr(fCaCert, "the private CA's chain does not end in a certificate of caCert (CA certificate %q issued by %q): %v",
			chain[0].Subject.String(), chain[0].Issuer.String(), err)
	}
	best := paths[0]
	for _, p := range paths[1:] {
		if len(p) > len(best) {
			best = p
		}
	}
	anchor := best[len(best)-1]
	// Go stops at the first certificate found in the pool; climb to the
	// topmost certificate of caCert (its root) when caCert has it.
	for range caCerts {
		if anchor.CheckSignatureFrom(anchor) == nil {
			break
		}
		var up *x509.Certificate
		for _, c := range caCerts {
			if !c.Equal(anchor) && bytes.Equal(anchor.RawIssuer, c.RawSubject) && anchor.CheckSignatureFrom(c) == nil {
				up = c
				break
			}
		}
		if up == nil {
			break
		}
		anchor = up
	}
	return anchor, nil
}

// TrustBundle returns the certificate of caCert that anchors the private
// CA's chain.
func (b *backend) TrustBundle(ctx context.Context, mesh string, mb api.MTLSBackend) ([]byte, error) {
	st, rc, client, err := b.prepare(ctx, mesh, mb)
	if err != nil {
		return nil, err
	}
	v, err := b.ensure(ctx, st, rc, client, mesh, mb)
	if v == nil {
		return nil, asValidation(err)
	}
	return bytes.Clone(v.bundle), nil
}

// Issue obtains one certificate from ACM PCA for the CSR.
func (b *backend) Issue(ctx context.Context, mesh string, mb api.MTLSBackend, req ca.IssueRequest) (ca.Issued, error) {
	start := time.Now()
	iss, err := b.issue(ctx, mesh, mb, req)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	b.m.issueDuration.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	return iss, err
}

func (b *backend) issue(ctx context.Context, mesh string, mb api.MTLSBackend, req ca.IssueRequest) (ca.Issued, error) {
	csrPEM := req.CSRPEM
	if len(csrPEM) == 0 && req.CSR != nil {
		csrPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR.Raw})
	}
	if len(csrPEM) == 0 {
		return ca.Issued{}, errors.New("acmpca: the issue request carries no CSR")
	}
	csr := req.CSR
	if csr == nil {
		blk, _ := pem.Decode(csrPEM)
		if blk == nil {
			return ca.Issued{}, errors.New("acmpca: the issue request's CSR is not PEM")
		}
		var err error
		if csr, err = x509.ParseCertificateRequest(blk.Bytes); err != nil {
			return ca.Issued{}, fmt.Errorf("acmpca: the issue request's CSR: %w", err)
		}
	}
	validity := req.Validity
	if validity <= 0 {
		validity = mb.CertExpiration()
	}

	st, rc, client, err := b.prepare(ctx, mesh, mb)
	if err != nil {
		return ca.Issued{}, err
	}
	v, err := b.ensure(ctx, st, rc, client, mesh, mb)
	if err != nil {
		return ca.Issued{}, err
	}
	if err := checkUsage(v, validity); err != nil {
		return ca.Issued{}, err
	}

	release, err := st.acquire(ctx)
	if err != nil {
		return ca.Issued{}, fmt.Errorf("acmpca: waiting for an issuance slot (conf.maxConcurrentIssues): %w", err)
	}
	defer release()
	b.m.inFlight.Inc()
	defer b.m.inFlight.Dec()

	limit := mb.CertRequestTimeout()
	rctx, _, stop := withRequestTimer(ctx, limit)
	defer stop()

	token := idempotencyToken(req.IdempotencyKey)
	// The validity derives from when the request was first made, so a request
	// re-sent after a retry or restart carries identical arguments (ACM
	// refuses an idempotency token reused with different ones).
	requestedAt := req.RequestedAt
	if requestedAt.IsZero() {
		requestedAt = b.hooks.now()
	}
	notAfter := requestedAt.Add(validity)
	in := &awspca.IssueCertificateInput{
		CertificateAuthorityArn: aws.String(rc.conf.Arn),
		Csr:                     csrPEM,
		SigningAlgorithm:        v.signingAlg,
		TemplateArn:             aws.String(rc.conf.templateArn),
		Validity: &pcatypes.Validity{
			Type:  pcatypes.ValidityPeriodTypeAbsolute,
			Value: aws.Int64(notAfter.Unix()),
		},
	}
	if token != "" {
		in.IdempotencyToken = aws.String(token)
	}
	out, err := client.IssueCertificate(rctx, in)
	if err != nil {
		err = classify(rctx, "IssueCertificate", err, limit)
		st.forget(err)
		return ca.Issued{}, err
	}
	certARN := aws.ToString(out.CertificateArn)
	if st.firstSeen(certARN, b.hooks.now()) {
		b.m.issued.Inc()
		st.budget.use.issued()
		if err := b.countBillable(ctx, mesh, mb.Name); err != nil {
			b.log.Warn("could not record a billable certificate in the store; the counts shown may be low", "mesh", mesh, "backend", mb.Name, "error", err)
		}
	}

	got, err := b.poll(rctx, client, rc.conf.Arn, certARN, limit)
	if err != nil {
		st.forget(err)
		return ca.Issued{}, fmt.Errorf("certificate %s: %w", certARN, err)
	}
	iss := ca.Issued{
		CertPEM:  []byte(aws.ToString(got.Certificate)),
		ChainPEM: []byte(aws.ToString(got.CertificateChain)),
		Ref:      certARN,
	}
	leaf, err := ca.VerifyIssued(iss, v.bundle, b.hooks.now())
	if err != nil {
		return ca.Issued{}, fmt.Errorf("%s: certificate %s from ACM PCA: %w", fCaCert, certARN, err)
	}
	if pk, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(csr.PublicKey) {
		return ca.Issued{}, fmt.Errorf("acmpca: certificate %s does not carry the CSR's public key", certARN)
	}
	b.log.Debug("certificate issued by ACM PCA", "mesh", mesh, "backend", mb.Name, "dataplane", req.Identity.Dataplane,
		"certificateArn", certARN, "serial", leaf.SerialNumber.Text(16), "notAfter", leaf.NotAfter)
	return iss, nil
}

// poll fetches an issued certificate, waiting while ACM PCA answers
// RequestInProgressException. It never re-issues.
func (b *backend) poll(ctx context.Context, client pcaClient, caARN, certARN string, limit time.Duration) (*awspca.GetCertificateOutput, error) {
	in := &awspca.GetCertificateInput{CertificateAuthorityArn: aws.String(caARN), CertificateArn: aws.String(certARN)}
	delay := b.hooks.pollMinDelay
	for {
		out, err := client.GetCertificate(ctx, in)
		if err == nil {
			return out, nil
		}
		var inProgress *pcatypes.RequestInProgressException
		if !errors.As(err, &inProgress) {
			return nil, classify(ctx, "GetCertificate", err, limit)
		}
		if rt := timerFrom(ctx); rt != nil {
			rt.setLastErr(err)
		}
		select {
		case <-ctx.Done():
			return nil, classify(ctx, "GetCertificate", ctx.Err(), limit)
		case <-b.hooks.after(delay):
		}
		delay = min(2*delay, b.hooks.pollMaxDelay)
	}
}

// acquire takes an issuance slot (conf.maxConcurrentIssues).
func (st *state) acquire(ctx context.Context) (func(), error) {
	st.mu.Lock()
	sem := st.sem
	st.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// firstSeen records a certificate ARN and reports whether it is new (an
// idempotent replay returns an ARN already seen and is not billed).
func (st *state) firstSeen(arn string, now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, at := range st.seen {
		if now.Sub(at) > memoTTL {
			delete(st.seen, k)
		}
	}
	if _, ok := st.seen[arn]; ok {
		return false
	}
	st.seen[arn] = now
	return true
}

// idempotencyToken fits an idempotency key into ACM PCA's 36 characters.
func idempotencyToken(key string) string {
	if len(key) <= maxIdempotencyToken {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])[:32]
}
