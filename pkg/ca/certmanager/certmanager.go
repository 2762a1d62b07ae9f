// Package certmanager is the `certmanager` mTLS backend: data-plane
// certificates are signed by a cert-manager Issuer or ClusterIssuer through
// cert-manager.io/v1 CertificateRequests, as Kong Mesh does.
//
// For every certificate, Issue creates a CertificateRequest in the
// control plane's namespace (setting "k8s-namespace", default
// meshca-system) holding the data plane's CSR, waits (watch, falling back to
// polling) up to dpCert.requestTimeout for it to be issued, denied or failed,
// and deletes it afterwards whatever the outcome. A request an approver
// denies fails at once, naming the approver (the condition's reason, by
// cert-manager's convention) and its message. A request still pending at the
// timeout fails with its last state and, when the control plane may `get`
// the Issuer or ClusterIssuer, the issuer's own Ready condition (a missing
// Secret, an invalid CA, an issuer that does not exist).
//
// RBAC: create, get, list, watch and delete on certificaterequests in that
// namespace; optionally get on issuers there and on clusterissuers.
//
// The trust bundle is conf.caCert when set. Otherwise it is the `status.ca`
// cert-manager reports with the issued certificates: Ensure (and
// TrustBundle, when called first) issues one throwaway "CA probe"
// CertificateRequest — a fresh key, CN "meshca CA probe", URI SAN
// spiffe://<mesh>/meshca-ca-probe, one hour of validity, bounded by
// rootChain.requestTimeout — only to learn that CA; the probe certificate is
// discarded and the request deleted. Later issuances refresh the learned CA.
// Issuers that report no status.ca (e.g. some external issuers, ACME) need
// conf.caCert.
//
// The Kubernetes client is built on first use, so a control plane that runs
// without a cluster only fails when a certmanager backend is used.
package certmanager

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"meshca/pkg/api"
	"meshca/pkg/ca"
)

// Type is the backend type name in a Mesh.
const Type = "certmanager"

// Control-plane settings read from ca.Deps.Settings.
const (
	// SettingKubeconfig is the path of a kubeconfig file; empty means the
	// in-cluster configuration, then the default kubeconfig loading rules
	// ($KUBECONFIG, ~/.kube/config).
	SettingKubeconfig = "kubeconfig"
	// SettingNamespace is the namespace CertificateRequests are created in
	// (and where namespaced Issuers must live).
	SettingNamespace = "k8s-namespace"
	// DefaultNamespace is used when SettingNamespace is empty.
	DefaultNamespace = "meshca-system"
)

// ErrNoCluster is returned by every operation when no Kubernetes cluster is
// configured.
var ErrNoCluster = errors.New("no Kubernetes cluster configured: set --kubeconfig or run in a cluster")

const (
	defaultPollInterval = time.Second
	// cleanupTimeout bounds deleting a CertificateRequest after use, which
	// happens even when the caller's context is done.
	cleanupTimeout = 5 * time.Second
	// probeValidity is the lifetime asked for the CA probe certificate
	// (cert-manager's minimum duration).
	probeValidity = time.Hour
)

// Backend is the certmanager CA backend.
type Backend struct {
	logger       *slog.Logger
	now          func() time.Time
	sources      sourceResolver
	namespace    string
	newClient    func() (dynamic.Interface, error)
	pollInterval time.Duration

	mu     sync.Mutex
	client dynamic.Interface
	// learned holds the status.ca last reported per (mesh, backend, issuer).
	learned map[stateKey][]byte
	// probing serialises CA probes per key.
	probing map[stateKey]*sync.Mutex
}

// sourceResolver is the part of *datasource.Resolver the backend uses.
type sourceResolver interface {
	Resolve(ctx context.Context, mesh string, ds *api.DataSource, field string) ([]byte, error)
}

type stateKey struct {
	mesh, backend string
	issuer        IssuerRef
}

var (
	_ ca.Backend     = (*Backend)(nil)
	_ ca.SecretUser  = (*Backend)(nil)
	_ ca.CommonNamer = (*Backend)(nil)
)

// New is the ca.Constructor of the certmanager backend. The Kubernetes
// client is built on first use from deps.Settings (SettingKubeconfig,
// SettingNamespace).
func New(deps ca.Deps) (ca.Backend, error) {
	b, err := newBackend(deps)
	if err != nil {
		return nil, err
	}
	kubeconfig := deps.Settings[SettingKubeconfig]
	b.newClient = func() (dynamic.Interface, error) {
		cfg, err := restConfig(kubeconfig)
		if err != nil {
			return nil, err
		}
		cfg.UserAgent = "meshca-certmanager"
		c, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client: %w", err)
		}
		return c, nil
	}
	return b, nil
}

// NewWithClient returns a backend that uses client (tests, or a control
// plane that already has one). The namespace still comes from deps.Settings.
// It panics if deps.Settings holds an invalid namespace.
func NewWithClient(deps ca.Deps, client dynamic.Interface) ca.Backend {
	b, err := newBackend(deps)
	if err != nil {
		panic(err)
	}
	b.client = client
	b.newClient = func() (dynamic.Interface, error) { return client, nil }
	return b
}

func newBackend(deps ca.Deps) (*Backend, error) {
	ns := deps.Settings[SettingNamespace]
	if ns == "" {
		ns = DefaultNamespace
	}
	if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		return nil, fmt.Errorf("setting %s: %q is not a valid namespace: %s", SettingNamespace, ns, strings.Join(msgs, "; "))
	}
	b := &Backend{
		logger:       deps.Logger,
		now:          deps.Now,
		namespace:    ns,
		pollInterval: defaultPollInterval,
		learned:      map[stateKey][]byte{},
		probing:      map[stateKey]*sync.Mutex{},
	}
	if deps.Sources != nil {
		b.sources = deps.Sources
	}
	if b.logger == nil {
		b.logger = slog.New(slog.DiscardHandler)
	}
	b.logger = b.logger.With("ca", Type)
	if b.now == nil {
		b.now = time.Now
	}
	return b, nil
}

// restConfig finds the cluster: the kubeconfig file when given, else the
// in-cluster configuration, else the default loading rules.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %q: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	if cfg, err := rest.InClusterConfig(); err == nil {
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, ErrNoCluster
		}
		return nil, fmt.Errorf("%w (default kubeconfig: %v)", ErrNoCluster, err)
	}
	return cfg, nil
}

// requests returns the CertificateRequest client, building the Kubernetes
// client on first success.
func (b *Backend) requests() (dynamic.ResourceInterface, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.client == nil {
		c, err := b.newClient()
		if err != nil {
			return nil, err
		}
		b.client = c
	}
	return b.client.Resource(CertificateRequestResource()).Namespace(b.namespace), nil
}

// UsedSecrets implements ca.SecretUser.
func (b *Backend) UsedSecrets(mb api.MTLSBackend) []string {
	c, err := parseConf(mb.Conf)
	if err != nil || c.CACert == nil || c.CACert.Secret == "" {
		return nil
	}
	return []string{c.CACert.Secret}
}

// CommonNameTemplate implements ca.CommonNamer.
func (b *Backend) CommonNameTemplate(mb api.MTLSBackend) string {
	c, err := parseConf(mb.Conf)
	if err != nil {
		return ""
	}
	return c.CommonName
}

// Validate implements ca.Backend: conf syntax, conf.caCert resolving to a CA
// certificate, and a Kubernetes cluster being configured. It does not
// contact the cluster.
func (b *Backend) Validate(ctx context.Context, mesh string, mb api.MTLSBackend) error {
	c, err := parseConf(mb.Conf)
	if err != nil || ca.SyntaxOnly(ctx) {
		return err
	}
	if c.CACert != nil {
		if _, err := b.caCert(ctx, mesh, c); err != nil {
			return err
		}
	}
	// A cluster is needed only once the backend is enabled (Ensure, Issue):
	// a Mesh may list a certmanager backend on a control plane with none.
	return nil
}

// caCert resolves conf.caCert and checks it holds CA certificates. It
// returns them re-encoded as PEM.
func (b *Backend) caCert(ctx context.Context, mesh string, c Conf) ([]byte, error) {
	if b.sources == nil {
		return nil, api.FieldErr("conf.caCert", "cannot be resolved: no data source resolver configured")
	}
	data, err := b.sources.Resolve(ctx, mesh, c.CACert, "conf.caCert")
	if err != nil {
		return nil, err
	}
	certs, err := ca.ParseCertificates(data)
	if err != nil {
		return nil, api.FieldErr("conf.caCert", "not a PEM certificate: %v", err)
	}
	for i, cert := range certs {
		if !cert.BasicConstraintsValid || !cert.IsCA {
			return nil, api.FieldErr("conf.caCert", "certificate %d (subject %q) is not a CA certificate", i+1, cert.Subject.String())
		}
	}
	return ca.EncodeCertificates(certs...), nil
}

func key(mesh string, mb api.MTLSBackend, c Conf) stateKey {
	return stateKey{mesh: mesh, backend: mb.Name, issuer: c.IssuerRef}
}

// Ensure implements ca.Backend. With conf.caCert it checks the certificate;
// without, it learns the issuer's CA with one CA probe request unless it
// already knows it.
func (b *Backend) Ensure(ctx context.Context, mesh string, mb api.MTLSBackend) error {
	_, err := b.TrustBundle(ctx, mesh, mb)
	return err
}

// TrustBundle implements ca.Backend: conf.caCert, else the status.ca of the
// latest issuance (probing the issuer once if none happened yet).
func (b *Backend) TrustBundle(ctx context.Context, mesh string, mb api.MTLSBackend) ([]byte, error) {
	c, err := parseConf(mb.Conf)
	if err != nil {
		return nil, err
	}
	if c.CACert != nil {
		return b.caCert(ctx, mesh, c)
	}
	k := key(mesh, mb, c)
	if pemCA := b.learnedCA(k); pemCA != nil {
		return pemCA, nil
	}

	b.mu.Lock()
	pm, ok := b.probing[k]
	if !ok {
		pm = &sync.Mutex{}
		b.probing[k] = pm
	}
	b.mu.Unlock()
	pm.Lock()
	defer pm.Unlock()
	if pemCA := b.learnedCA(k); pemCA != nil {
		return pemCA, nil
	}
	if err := b.probe(ctx, mesh, mb, c); err != nil {
		return nil, err
	}
	if pemCA := b.learnedCA(k); pemCA != nil {
		return pemCA, nil
	}
	return nil, fmt.Errorf("issuer %s: %w", issuerString(c.IssuerRef), errNoStatusCA)
}

var errNoStatusCA = errors.New("issuer returned no status.ca: set conf.caCert")

func (b *Backend) learnedCA(k stateKey) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.learned[k]
}

func (b *Backend) learn(k stateKey, caPEM []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.learned[k] = caPEM
}

// probe issues a throwaway certificate to learn the issuer's CA.
func (b *Backend) probe(ctx context.Context, mesh string, mb api.MTLSBackend, c Conf) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("CA probe key: %w", err)
	}
	u := &url.URL{Scheme: "spiffe", Host: mesh, Path: "/meshca-ca-probe"}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "meshca CA probe"},
		URIs:    []*url.URL{u},
	}, k)
	if err != nil {
		return fmt.Errorf("CA probe CSR: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return fmt.Errorf("CA probe CSR: %w", err)
	}
	b.logger.InfoContext(ctx, "learning the issuer's CA with a probe certificate request",
		"mesh", mesh, "backend", mb.Name, "issuer", issuerString(c.IssuerRef))
	_, err = b.request(ctx, mesh, mb, c, mb.RootChainRequestTimeout(), requestSpec{
		mesh:     mesh,
		purpose:  PurposeCAProbe,
		csr:      csr,
		csrPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		validity: probeValidity,
		issuer:   c.IssuerRef,
	})
	if err != nil {
		return fmt.Errorf("learning the CA of issuer %s: %w", issuerString(c.IssuerRef), err)
	}
	return nil
}

// Issue implements ca.Backend.
func (b *Backend) Issue(ctx context.Context, mesh string, mb api.MTLSBackend, req ca.IssueRequest) (ca.Issued, error) {
	c, err := parseConf(mb.Conf)
	if err != nil {
		return ca.Issued{}, err
	}
	if req.CSR == nil || len(req.CSRPEM) == 0 {
		return ca.Issued{}, errors.New("issue request carries no CSR")
	}
	return b.request(ctx, mesh, mb, c, mb.CertRequestTimeout(), requestSpec{
		mesh:           mesh,
		dataplane:      req.Identity.Dataplane,
		purpose:        PurposeDataplane,
		idempotencyKey: req.IdempotencyKey,
		csr:            req.CSR,
		csrPEM:         req.CSRPEM,
		validity:       req.Validity,
		issuer:         c.IssuerRef,
	})
}

// request creates one CertificateRequest, waits up to timeout for its
// outcome, deletes it, and returns the certificate. A status.ca it carries
// becomes the learned CA of the backend.
func (b *Backend) request(ctx context.Context, mesh string, mb api.MTLSBackend, c Conf, timeout time.Duration, s requestSpec) (ca.Issued, error) {
	crs, err := b.requests()
	if err != nil {
		return ca.Issued{}, err
	}
	if s.validity <= 0 {
		s.validity = mb.CertExpiration()
	}
	log := b.logger.With("mesh", mesh, "backend", mb.Name, "namespace", b.namespace)
	if s.dataplane != "" {
		log = log.With("dataplane", s.dataplane)
	}

	created, err := crs.Create(ctx, newCertificateRequest(b.namespace, s), metav1.CreateOptions{})
	if err != nil {
		return ca.Issued{}, fmt.Errorf("create CertificateRequest in namespace %s: %w", b.namespace, err)
	}
	name := created.GetName()
	log = log.With("certificateRequest", name)
	log.DebugContext(ctx, "created certificate request", "issuer", issuerString(s.issuer), "duration", s.validity)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err := crs.Delete(dctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			log.WarnContext(ctx, "cannot delete certificate request", "error", err)
		}
	}()

	start := b.now()
	st, err := b.await(ctx, crs, name, timeout)
	if pe := (*pendingError)(nil); errors.As(err, &pe) {
		// Why it is still pending is often the issuer's own condition
		// (its Secret missing, its CA invalid): say so with the timeout.
		pe.issuer = b.issuerState(ctx, s.issuer)
	}
	if err != nil {
		log.InfoContext(ctx, "certificate request not issued", "error", err)
		return ca.Issued{}, err
	}
	certs, err := ca.ParseCertificates(st.certPEM)
	if err != nil {
		return ca.Issued{}, fmt.Errorf("certificate request %s: status.certificate: %w", name, err)
	}
	leaf := certs[0]
	if pk, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(s.csr.PublicKey) {
		return ca.Issued{}, fmt.Errorf("certificate request %s: issued certificate is not for the requested key", name)
	}

	k := key(mesh, mb, c)
	if len(st.caPEM) > 0 {
		roots, err := ca.ParseCertificates(st.caPEM)
		if err != nil {
			return ca.Issued{}, fmt.Errorf("certificate request %s: status.ca: %w", name, err)
		}
		b.learn(k, ca.EncodeCertificates(roots...))
	} else if c.CACert == nil {
		return ca.Issued{}, fmt.Errorf("certificate request %s: %w", name, errNoStatusCA)
	}
	log.DebugContext(ctx, "certificate issued", "serial", leaf.SerialNumber.Text(16),
		"notAfter", leaf.NotAfter, "took", b.now().Sub(start))
	return ca.Issued{
		CertPEM:  ca.EncodeCertificates(leaf),
		ChainPEM: ca.EncodeCertificates(certs[1:]...),
		Ref:      b.namespace + "/" + name,
	}, nil
}

// await waits for the final state of CertificateRequest name: it watches
// the request and falls back to polling when the watch is refused or ends.
func (b *Backend) await(ctx context.Context, crs dynamic.ResourceInterface, name string, timeout time.Duration) (requestState, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "no status yet"

	timedOut := func() (requestState, error) {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return requestState{}, &pendingError{name: name, timeout: timeout, last: last}
		}
		return requestState{}, fmt.Errorf("certificate request %s: %w", name, ctx.Err())
	}
	// check folds an observed object into the wait; done reports a final state.
	check := func(obj *unstructured.Unstructured) (requestState, bool) {
		st := evaluate(obj)
		if st.done {
			return st, true
		}
		last = st.pending
		return st, false
	}
	get := func() (requestState, bool, error) {
		obj, err := crs.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return requestState{}, true, fmt.Errorf("certificate request %s was deleted before it was issued", name)
		case err != nil:
			if ctx.Err() != nil {
				return requestState{}, false, nil
			}
			last = "cannot read it: " + err.Error()
			return requestState{}, false, nil
		}
		st, done := check(obj)
		return st, done, nil
	}

	var events <-chan watch.Event
	w, err := crs.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		b.logger.DebugContext(ctx, "cannot watch certificate requests, polling", "error", err)
	} else {
		defer w.Stop()
		events = w.ResultChan()
	}
	// One read covers a watch that does not replay the current state.
	if st, done, err := get(); err != nil || done {
		return finish(st, err)
	}

	ticker := time.NewTicker(b.pollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return timedOut()
		case ev, ok := <-events:
			if !ok {
				events = nil // watch ended: poll from now on
				continue
			}
			obj, isObj := ev.Object.(*unstructured.Unstructured)
			switch {
			case ev.Type == watch.Error:
				b.logger.DebugContext(ctx, "certificate request watch failed, polling", "error", apierrors.FromObject(ev.Object))
				events = nil
			case !isObj || obj.GetName() != name:
			case ev.Type == watch.Deleted:
				return requestState{}, fmt.Errorf("certificate request %s was deleted before it was issued", name)
			default:
				if st, done := check(obj); done {
					return finish(st, nil)
				}
			}
		case <-ticker.C:
			// Polled even while watching: a safety net for lost events.
			if st, done, err := get(); err != nil || done {
				return finish(st, err)
			}
		}
	}
}

func finish(st requestState, err error) (requestState, error) {
	if err != nil {
		return requestState{}, err
	}
	if st.err != nil {
		return requestState{}, st.err
	}
	return st, nil
}

func issuerString(r IssuerRef) string {
	return fmt.Sprintf("%s %q (%s)", r.Kind, r.Name, r.Group)
}
