package acmpcaemu

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"meshca/pkg/atomicfile"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"golang.org/x/time/rate"
)

// Operation names served by the emulator.
const (
	OpCreateCertificateAuthority            = "CreateCertificateAuthority"
	OpDescribeCertificateAuthority          = "DescribeCertificateAuthority"
	OpListCertificateAuthorities            = "ListCertificateAuthorities"
	OpGetCertificateAuthorityCertificate    = "GetCertificateAuthorityCertificate"
	OpGetCertificateAuthorityCsr            = "GetCertificateAuthorityCsr"
	OpImportCertificateAuthorityCertificate = "ImportCertificateAuthorityCertificate"
	OpUpdateCertificateAuthority            = "UpdateCertificateAuthority"
	OpIssueCertificate                      = "IssueCertificate"
	OpGetCertificate                        = "GetCertificate"
	OpRevokeCertificate                     = "RevokeCertificate"
)

// Default request rates per second, modelled on the ACM PCA quotas.
const (
	DefaultIssueRate = 25
	DefaultGetRate   = 75
	DefaultOtherRate = 50
)

const (
	stateFileName     = "state.json"
	stateVersion      = 1
	idempotencyWindow = 5 * time.Minute
	defaultRegion     = "us-east-1"
	defaultAccount    = "123456789012"
)

// Operations lists the operations the emulator serves.
func Operations() []string {
	return []string{
		OpCreateCertificateAuthority, OpDescribeCertificateAuthority, OpListCertificateAuthorities,
		OpGetCertificateAuthorityCertificate, OpGetCertificateAuthorityCsr,
		OpImportCertificateAuthorityCertificate, OpUpdateCertificateAuthority,
		OpIssueCertificate, OpGetCertificate, OpRevokeCertificate,
	}
}

// DefaultRate is the default request rate of an operation.
func DefaultRate(op string) float64 {
	switch op {
	case OpIssueCertificate:
		return DefaultIssueRate
	case OpGetCertificate:
		return DefaultGetRate
	}
	return DefaultOtherRate
}

// Options configures a [Server]. The zero value is a usable in-memory
// emulator without authentication.
type Options struct {
	// StateDir, when set, makes CAs (with their keys) and issued
	// certificates persist in StateDir/state.json and has each CA's chain
	// written to StateDir/<ca-id>-chain.pem.
	StateDir string
	// Credentials maps access key ids to secret keys. When non-empty every
	// request must carry a valid SigV4 signature by one of them.
	Credentials map[string]string
	// InProgress is how long after issuance GetCertificate answers
	// RequestInProgressException.
	InProgress time.Duration
	// Rates overrides per-operation request rates (requests per second;
	// zero or negative means unlimited). See [DefaultRate].
	Rates map[string]float64
	// Faults are the initial injected faults.
	Faults Faults
	// ActivateCreatedRoots makes CreateCertificateAuthority self-sign ROOT
	// CAs at once (status ACTIVE) instead of leaving them in
	// PENDING_CERTIFICATE for the CSR/issue/import walk-through.
	ActivateCreatedRoots bool
	// Region and Account are used in ARNs of CAs made by
	// CreateCertificateAuthority when the request's signature does not name
	// a region. Defaults us-east-1 and 123456789012.
	Region, Account string
	// Now is the clock; defaults to time.Now. It drives certificate
	// validity, the in-progress window, idempotency, outages and rate
	// limiting (not the injected latency, which really sleeps).
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Faults are injected failures.
type Faults struct {
	// ErrorRate is the probability (0..1) that a request fails with
	// ServiceUnavailable (HTTP 503), which the SDKs retry.
	ErrorRate float64 `json:"errorRate"`
	// Latency is added before every API request is handled.
	Latency time.Duration `json:"latency"`
	// OutageUntil makes every API request fail with HTTP 503 until then.
	OutageUntil time.Time `json:"outageUntil,omitzero"`
}

// Stats are counters for tests and operators.
type Stats struct {
	// Issued counts certificates issued since the server started (an
	// idempotent replay does not count).
	Issued int64 `json:"issued"`
	// IssuedByCA counts issued certificates by CA ARN.
	IssuedByCA map[string]int64 `json:"issuedByCA"`
	// Requests counts API requests by operation and outcome ("ok" or the
	// error code).
	Requests map[string]map[string]int64 `json:"requests"`
	// AccessKeys counts API requests by the access key id of their
	// signature.
	AccessKeys map[string]int64 `json:"accessKeys"`
	// Protocols counts API requests by wire protocol (awsJson1_1,
	// rpcv2Cbor).
	Protocols map[string]int64 `json:"protocols"`
}

// CAInfo describes a CA added with [Server.AddCA].
type CAInfo struct {
	ARN string
	// ID is the last path element of the ARN.
	ID string
	// ChainPEM is the CA certificate followed by its issuers up to the root.
	ChainPEM []byte
	// ChainFile is where ChainPEM was written ("" without a state dir).
	ChainFile string
}

// caState is one CA as kept in memory and persisted.
type caState struct {
	ARN               string
	Type              string
	KeyAlgorithm      string
	SigningAlgorithm  string
	UsageMode         string
	Status            string
	OwnerAccount      string
	Subject           *asn1Subject `json:",omitempty"`
	CreatedAt         time.Time
	LastStateChangeAt time.Time
	KeyPEM            string
	CSRPEM            string `json:",omitempty"`
	CertPEM           string `json:",omitempty"`
	// ChainPEM are the issuers of CertPEM, issuing CA first, root last.
	ChainPEM []string `json:",omitempty"`

	key  crypto.Signer
	cert *x509.Certificate
}

type certState struct {
	ARN              string
	CAArn            string
	Serial           string
	PEM              string
	Chain            string
	Subject          string
	IssuedAt         time.Time
	NotAfter         time.Time
	RevokedAt        time.Time `json:",omitzero"`
	RevocationReason string    `json:",omitempty"`
}

type idemState struct {
	Hash    string
	CertARN string
	At      time.Time
}

type persistedState struct {
	Version             int
	InternalRootKeyPEM  string `json:",omitempty"`
	InternalRootCertPEM string `json:",omitempty"`
	CAs                 []*caState
	Certificates        []*certState
	Idempotency         map[string]idemState `json:",omitempty"`
}

// Server is an ACM PCA emulator. Create it with [New]; it is safe for
// concurrent use.
type Server struct {
	opts     Options
	now      func() time.Time
	log      *slog.Logger
	signer   *v4.Signer
	handlers map[string]opHandler

	// addMu serialises AddCA, so key generation happens outside mu without
	// two callers creating the same CA.
	addMu sync.Mutex

	mu           sync.Mutex
	cas          map[string]*caState
	certs        map[string]*certState
	idem         map[string]idemState
	rootKey      crypto.Signer
	rootCert     *x509.Certificate
	faults       Faults
	limiters     map[string]*rate.Limiter
	rates        map[string]float64
	issued       int64
	issuedByCA   map[string]int64
	requests     map[string]map[string]int64
	accessKeys   map[string]int64
	protocolUses map[string]int64
}

// New creates a server, loading persisted state from opts.StateDir.
func New(opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Region == "" {
		opts.Region = defaultRegion
	}
	if opts.Account == "" {
		opts.Account = defaultAccount
	}
	opts.Credentials = maps.Clone(opts.Credentials)
	s := &Server{
		opts:         opts,
		now:          opts.Now,
		log:          opts.Logger,
		signer:       v4.NewSigner(),
		cas:          map[string]*caState{},
		certs:        map[string]*certState{},
		idem:         map[string]idemState{},
		faults:       opts.Faults,
		limiters:     map[string]*rate.Limiter{},
		rates:        map[string]float64{},
		issuedByCA:   map[string]int64{},
		requests:     map[string]map[string]int64{},
		accessKeys:   map[string]int64{},
		protocolUses: map[string]int64{},
	}
	s.handlers = s.operationHandlers()
	for _, op := range Operations() {
		r := DefaultRate(op)
		if v, ok := opts.Rates[op]; ok {
			r = v
		}
		s.setRateLocked(op, r)
	}
	for op := range opts.Rates {
		if _, ok := s.handlers[op]; !ok {
			return nil, fmt.Errorf("rate for unknown operation %q", op)
		}
	}
	if opts.StateDir != "" {
		if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// setRateLocked installs a limiter; burst equals the rate rounded up (at
// least 1) so a client may spend one second's budget at once, as AWS's
// token buckets allow.
func (s *Server) setRateLocked(op string, perSecond float64) {
	s.rates[op] = perSecond
	if perSecond <= 0 {
		s.limiters[op] = rate.NewLimiter(rate.Inf, 1)
		return
	}
	burst := max(1, int(math.Ceil(perSecond)))
	s.limiters[op] = rate.NewLimiter(rate.Limit(perSecond), burst)
}

// SetRate changes the request rate of an operation (requests per second,
// zero or negative for unlimited).
func (s *Server) SetRate(op string, perSecond float64) error {
	if _, ok := s.handlers[op]; !ok {
		return fmt.Errorf("unknown operation %q", op)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setRateLocked(op, perSecond)
	return nil
}

// Rates returns the current per-operation request rates.
func (s *Server) Rates() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.rates)
}

// SetFaults replaces the injected faults.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the injected faults.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Issued:     s.issued,
		IssuedByCA: maps.Clone(s.issuedByCA),
		Requests:   make(map[string]map[string]int64, len(s.requests)),
		AccessKeys: maps.Clone(s.accessKeys),
		Protocols:  maps.Clone(s.protocolUses),
	}
	for op, m := range s.requests {
		st.Requests[op] = maps.Clone(m)
	}
	return st
}

// SetCAStatus changes the status of a CA, e.g. to DISABLED to exercise
// InvalidStateException.
func (s *Server) SetCAStatus(arn, status string) error {
	if !validStatus(status) {
		return fmt.Errorf("invalid status %q", status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ca, ok := s.cas[arn]
	if !ok {
		return fmt.Errorf("no CA %s", arn)
	}
	if ca.Status != status {
		ca.Status = status
		ca.LastStateChangeAt = s.now()
	}
	return s.saveLocked()
}

// AddCA adds a CA from a spec, generating its key and certificate, and
// writes its chain file. If the CA already exists (e.g. loaded from the
// state dir) its key and certificate are kept and only its status and usage
// mode are updated; a different type or key algorithm is an error.
func (s *Server) AddCA(ctx context.Context, spec CASpec) (CAInfo, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return CAInfo{}, err
	}
	s.addMu.Lock()
	defer s.addMu.Unlock()

	s.mu.Lock()
	if ca, ok := s.cas[spec.ARN]; ok {
		defer s.mu.Unlock()
		if ca.Type != spec.Type || ca.KeyAlgorithm != spec.KeyAlgorithm {
			return CAInfo{}, fmt.Errorf("CA %s exists with type %s and key %s, spec asks for %s and %s",
				spec.ARN, ca.Type, ca.KeyAlgorithm, spec.Type, spec.KeyAlgorithm)
		}
		ca.UsageMode = spec.UsageMode
		if ca.Status != spec.Status {
			ca.Status = spec.Status
			ca.LastStateChangeAt = s.now()
		}
		if err := s.saveLocked(); err != nil {
			return CAInfo{}, err
		}
		return s.writeChainLocked(ca)
	}
	var (
		parentKey   crypto.Signer
		parentCert  *x509.Certificate
		parentChain []string
	)
	if spec.Type == TypeSubordinate {
		if spec.Parent != "" {
			p, ok := s.cas[spec.Parent]
			if !ok || p.cert == nil || p.Type != TypeRoot {
				s.mu.Unlock()
				return CAInfo{}, fmt.Errorf("CA %s: parent %s is not an emulated root CA with a certificate", spec.ARN, spec.Parent)
			}
			parentKey, parentCert = p.key, p.cert
			parentChain = append([]string{p.CertPEM}, p.ChainPEM...)
		} else {
			parentKey, parentCert = s.rootKey, s.rootCert
		}
	}
	s.mu.Unlock()

	now := s.now()
	if spec.Type == TypeSubordinate && parentCert == nil {
		if parentKey, parentCert, err = s.createInternalRoot(ctx, now); err != nil {
			return CAInfo{}, err
		}
	}
	if spec.Type == TypeSubordinate && spec.Parent == "" {
		parentChain = []string{certPEM(parentCert.Raw)}
	}
	key, err := generateKey(spec.KeyAlgorithm)
	if err != nil {
		return CAInfo{}, fmt.Errorf("CA %s: %w", spec.ARN, err)
	}
	p, _ := parseARN(spec.ARN)
	cn := spec.CommonName
	if cn == "" {
		cn = "acmpca-local " + strings.ToLower(spec.Type) + " " + p.CAID
	}
	subject := pkix.Name{CommonName: cn, Organization: []string{"acmpca-local"}}
	notBefore := now.Add(-time.Hour)
	var der []byte
	if spec.Type == TypeRoot {
		der, err = createCACert(key, key.Public(), subject, notBefore, now.AddDate(10, 0, 0), nil, -1)
	} else {
		notAfter := now.AddDate(5, 0, 0)
		if notAfter.After(parentCert.NotAfter) {
			notAfter = parentCert.NotAfter
		}
		der, err = createCACert(parentKey, key.Public(), subject, notBefore, notAfter, parentCert, 0)
	}
	if err != nil {
		return CAInfo{}, fmt.Errorf("CA %s: %w", spec.ARN, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return CAInfo{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return CAInfo{}, fmt.Errorf("parse CA certificate: %w", err)
	}
	ca := &caState{
		ARN:               spec.ARN,
		Type:              spec.Type,
		KeyAlgorithm:      spec.KeyAlgorithm,
		SigningAlgorithm:  defaultSigningAlgorithm(spec.KeyAlgorithm),
		UsageMode:         spec.UsageMode,
		Status:            spec.Status,
		OwnerAccount:      p.Account,
		Subject:           subjectFromName(subject),
		CreatedAt:         now,
		LastStateChangeAt: now,
		KeyPEM:            keyPEM,
		CertPEM:           certPEM(der),
		ChainPEM:          parentChain,
		key:               key,
		cert:              cert,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cas[ca.ARN] = ca
	if err := s.saveLocked(); err != nil {
		return CAInfo{}, err
	}
	s.log.InfoContext(ctx, "certificate authority added", "ca_arn", ca.ARN, "type", ca.Type,
		"key_algorithm", ca.KeyAlgorithm, "usage_mode", ca.UsageMode, "status", ca.Status)
	return s.writeChainLocked(ca)
}

// createInternalRoot makes the emulated root that signs subordinate CAs
// which name no parent. Its key is kept in the state so chains stay stable
// across restarts.
func (s *Server) createInternalRoot(ctx context.Context, now time.Time) (crypto.Signer, *x509.Certificate, error) {
	key, err := generateKey(KeyECPrime256)
	if err != nil {
		return nil, nil, err
	}
	subject := pkix.Name{CommonName: "acmpca-local internal root", Organization: []string{"acmpca-local"}}
	der, err := createCACert(key, key.Public(), subject, now.Add(-time.Hour), now.AddDate(20, 0, 0), nil, -1)
	if err != nil {
		return nil, nil, fmt.Errorf("internal root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse internal root: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rootKey, s.rootCert = key, cert
	if err := s.saveLocked(); err != nil {
		return nil, nil, err
	}
	s.log.InfoContext(ctx, "internal root CA created", "subject", subject.String())
	return key, cert, nil
}

// fullChain is the CA certificate followed by its issuers, as written
// to the chain file.
func (ca *caState) fullChain() []byte {
	parts := append([]string{ca.CertPEM}, ca.ChainPEM...)
	return []byte(strings.Join(parts, "\n") + "\n")
}

func (s *Server) writeChainLocked(ca *caState) (CAInfo, error) {
	p, _ := parseARN(ca.ARN)
	info := CAInfo{ARN: ca.ARN, ID: p.CAID}
	if ca.CertPEM == "" {
		return info, nil
	}
	info.ChainPEM = ca.fullChain()
	if s.opts.StateDir == "" {
		return info, nil
	}
	info.ChainFile = filepath.Join(s.opts.StateDir, p.CAID+"-chain.pem")
	if err := atomicfile.Write(info.ChainFile, info.ChainPEM, 0o644); err != nil {
		return info, err
	}
	return info, nil
}

// saveLocked persists the state; it holds mu so the file always reflects a
// consistent snapshot.
func (s *Server) saveLocked() error {
	if s.opts.StateDir == "" {
		return nil
	}
	st := persistedState{Version: stateVersion, Idempotency: s.idem}
	if s.rootKey != nil {
		k, err := encodeKey(s.rootKey)
		if err != nil {
			return err
		}
		st.InternalRootKeyPEM, st.InternalRootCertPEM = k, certPEM(s.rootCert.Raw)
	}
	for _, arn := range slices.Sorted(maps.Keys(s.cas)) {
		st.CAs = append(st.CAs, s.cas[arn])
	}
	st.Certificates = slices.SortedFunc(maps.Values(s.certs), func(a, b *certState) int {
		return a.IssuedAt.Compare(b.IssuedAt)
	})
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(s.opts.StateDir, stateFileName), data, 0o600); err != nil {
		return err
	}
	// state.json now holds everything the journal did.
	if err := os.Remove(filepath.Join(s.opts.StateDir, journalFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("truncate journal: %w", err)
	}
	return nil
}

// journalFileName holds one JSON line per certificate issued since the last
// full save: appending is O(1) per issuance, where rewriting state.json
// would grow with every certificate ever issued.
const journalFileName = "issued.jsonl"

type journalEntry struct {
	Cert    *certState `json:"cert"`
	IdemKey string     `json:"idemKey,omitempty"`
	Idem    idemState  `json:"idem,omitzero"`
}

// journalLocked appends an issued certificate (and its idempotency entry) to
// the journal.
func (s *Server) journalLocked(rec *certState, idemKey string) error {
	if s.opts.StateDir == "" {
		return nil
	}
	e := journalEntry{Cert: rec, IdemKey: idemKey}
	if idemKey != "" {
		e.Idem = s.idem[idemKey]
	}
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode journal entry: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.opts.StateDir, journalFileName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("journal: %w", err)
	}
	return f.Close()
}

// replayJournal applies the journal written after the last full save.
func (s *Server) replayJournal() error {
	path := filepath.Join(s.opts.StateDir, journalFileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	n := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e journalEntry
		if err := json.Unmarshal(line, &e); err != nil || e.Cert == nil {
			s.log.Warn("ignoring a torn journal line", "path", path)
			continue
		}
		s.certs[e.Cert.ARN] = e.Cert
		if e.IdemKey != "" {
			s.idem[e.IdemKey] = e.Idem
		}
		n++
	}
	if n > 0 {
		s.log.Info("journal replayed", "path", path, "certificates", n)
	}
	return nil
}

func (s *Server) load() error {
	if err := s.loadState(); err != nil {
		return err
	}
	return s.replayJournal()
}

func (s *Server) loadState() error {
	path := filepath.Join(s.opts.StateDir, stateFileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	var st persistedState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("decode state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("state %s: unsupported version %d", path, st.Version)
	}
	if st.InternalRootKeyPEM != "" {
		if s.rootKey, err = decodeKey(st.InternalRootKeyPEM); err != nil {
			return fmt.Errorf("state: internal root: %w", err)
		}
		if s.rootCert, err = parseCertPEM(st.InternalRootCertPEM); err != nil {
			return fmt.Errorf("state: internal root: %w", err)
		}
	}
	for _, ca := range st.CAs {
		if ca.key, err = decodeKey(ca.KeyPEM); err != nil {
			return fmt.Errorf("state: CA %s: %w", ca.ARN, err)
		}
		if ca.CertPEM != "" {
			if ca.cert, err = parseCertPEM(ca.CertPEM); err != nil {
				return fmt.Errorf("state: CA %s: %w", ca.ARN, err)
			}
		}
		s.cas[ca.ARN] = ca
	}
	for _, c := range st.Certificates {
		s.certs[c.ARN] = c
	}
	maps.Copy(s.idem, st.Idempotency)
	s.log.Info("state loaded", "path", path, "cas", len(s.cas), "certificates", len(s.certs))
	return nil
}

// ChainPEM returns the chain of a CA: its certificate followed by its
// issuers up to the root.
func (s *Server) ChainPEM(arn string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ca, ok := s.cas[arn]
	if !ok {
		return nil, fmt.Errorf("no CA %s", arn)
	}
	if ca.CertPEM == "" {
		return nil, fmt.Errorf("CA %s has no certificate yet", arn)
	}
	return ca.fullChain(), nil
}
