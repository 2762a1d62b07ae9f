// Package certmanagertest fakes the part of cert-manager the certmanager
// backend talks to: a Signer that watches cert-manager.io/v1
// CertificateRequests through a dynamic client and approves and signs them
// the way cert-manager's CA issuer does (or denies, fails, or ignores them),
// and a fake dynamic client that knows CertificateRequests and, like the API
// server, fills in metadata.name from metadata.generateName.
package certmanagertest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

// CertificateRequests is the cert-manager CertificateRequest resource.
func CertificateRequests() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificaterequests"}
}

// NewFakeClient returns a fake dynamic client that lists and watches
// CertificateRequests and, like the API server, names objects created with
// only a generateName (suffixes 00001, 00002, ...).
func NewFakeClient(objects ...runtime.Object) *fake.FakeDynamicClient {
	c := fake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{CertificateRequests(): "CertificateRequestList"}, objects...)
	var n atomic.Int64
	c.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca, ok := a.(k8stesting.CreateAction)
		if !ok {
			return false, nil, nil
		}
		m, err := meta.Accessor(ca.GetObject())
		if err != nil {
			return false, nil, nil
		}
		if m.GetName() == "" && m.GetGenerateName() != "" {
			m.SetName(fmt.Sprintf("%s%05d", m.GetGenerateName(), n.Add(1)))
		}
		return false, nil, nil
	})
	return c
}

// Behavior is how the Signer answers a CertificateRequest.
type Behavior int

const (
	// Issue approves and signs, setting status.certificate and status.ca.
	Issue Behavior = iota
	// IssueWithoutCA signs but leaves status.ca empty, as some external
	// issuers do.
	IssueWithoutCA
	// Deny sets Denied=True, as an approver refusing the request.
	Deny
	// Fail approves, then sets Ready=False with reason Failed.
	Fail
	// Invalid sets InvalidRequest=True.
	Invalid
	// Ignore never answers (no cert-manager, or a stuck issuer).
	Ignore
)

// Request is what the Signer saw in one CertificateRequest.
type Request struct {
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	IssuerRef   map[string]string
	Duration    string
	IsCA        bool
	Usages      []string
	// CSR is the decoded spec.request, nil if it did not decode.
	CSR *x509.CertificateRequest
}

// Signer answers CertificateRequests in one namespace.
type Signer struct {
	client    dynamic.Interface
	namespace string
	caCert    *x509.Certificate
	caKey     crypto.Signer
	caPEM     []byte
	now       func() time.Time

	mu       sync.Mutex
	behavior Behavior
	message  string
	seen     []Request
	errs     []error
	done     chan struct{}
}

// Option configures a Signer.
type Option func(*Signer)

// WithCA makes the Signer sign with cert and key instead of a CA of its own.
func WithCA(cert *x509.Certificate, key crypto.Signer) Option {
	return func(s *Signer) { s.caCert, s.caKey = cert, key }
}

// WithClock sets the clock used for validity periods and conditions.
func WithClock(now func() time.Time) Option { return func(s *Signer) { s.now = now } }

// WithBehavior sets the initial Behavior (default Issue).
func WithBehavior(b Behavior) Option { return func(s *Signer) { s.behavior = b } }

// NewSigner returns a Signer for CertificateRequests of namespace. Unless
// WithCA is given it generates a self-signed ECDSA CA.
func NewSigner(client dynamic.Interface, namespace string, opts ...Option) (*Signer, error) {
	s := &Signer{client: client, namespace: namespace, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if s.caCert == nil {
		cert, key, err := NewCA("certmanagertest CA", s.now())
		if err != nil {
			return nil, err
		}
		s.caCert, s.caKey = cert, key
	}
	s.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.caCert.Raw})
	return s, nil
}

// NewCA generates a self-signed ECDSA P-256 CA valid for a year from now.
func NewCA(commonName string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// CA returns the signing CA certificate.
func (s *Signer) CA() *x509.Certificate { return s.caCert }

// CAPEM returns the signing CA certificate in PEM form.
func (s *Signer) CAPEM() []byte { return append([]byte(nil), s.caPEM...) }

// SetBehavior changes how the following requests are answered; message is
// the condition message of Deny, Fail and Invalid.
func (s *Signer) SetBehavior(b Behavior, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behavior, s.message = b, message
}

// Requests returns the requests seen so far, in order.
func (s *Signer) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.seen...)
}

// Errors returns the failures of the Signer itself (not the outcomes it
// chose), such as a status update the API refused.
func (s *Signer) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// Start watches CertificateRequests and answers them until ctx is done.
// The watch is open when Start returns. Wait waits for the Signer to stop.
func (s *Signer) Start(ctx context.Context) error {
	w, err := s.client.Resource(CertificateRequests()).Namespace(s.namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("watch certificate requests: %w", err)
	}
	s.mu.Lock()
	s.done = make(chan struct{})
	done := s.done
	s.mu.Unlock()
	go func() {
		defer close(done)
		defer w.Stop()
		handled := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				obj, isObj := ev.Object.(*unstructured.Unstructured)
				if !isObj || (ev.Type != watch.Added && ev.Type != watch.Modified) || handled[obj.GetName()] {
					continue
				}
				handled[obj.GetName()] = true
				s.answer(ctx, obj.DeepCopy())
			}
		}
	}()
	return nil
}

// Wait blocks until the goroutine of Start has returned.
func (s *Signer) Wait() {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (s *Signer) answer(ctx context.Context, obj *unstructured.Unstructured) {
	req := s.record(obj)
	s.mu.Lock()
	behavior, message := s.behavior, s.message
	s.mu.Unlock()

	now := s.now()
	var conds []any
	switch behavior {
	case Ignore:
		return
	case Deny:
		conds = append(conds,
			cond("Denied", "True", "policy.cert-manager.io", orDefault(message, "request denied by policy"), now),
			cond("Ready", "False", "Denied", "The CertificateRequest was denied by an approval controller", now))
	case Invalid:
		conds = append(conds, cond("InvalidRequest", "True", "RequestParsingError", orDefault(message, "failed to decode CSR"), now))
	case Fail:
		conds = append(conds, approved(now),
			cond("Ready", "False", "Failed", orDefault(message, "issuer failed to sign"), now))
	default:
		certPEM, err := s.sign(req, now)
		if err != nil {
			conds = append(conds, approved(now), cond("Ready", "False", "Failed", "Error signing certificate: "+err.Error(), now))
			break
		}
		_ = unstructured.SetNestedField(obj.Object, base64.StdEncoding.EncodeToString(certPEM), "status", "certificate")
		if behavior != IssueWithoutCA {
			_ = unstructured.SetNestedField(obj.Object, base64.StdEncoding.EncodeToString(s.caPEM), "status", "ca")
		}
		conds = append(conds, approved(now), cond("Ready", "True", "Issued", "Certificate fetched from issuer successfully", now))
	}
	_ = unstructured.SetNestedSlice(obj.Object, conds, "status", "conditions")
	_, err := s.client.Resource(CertificateRequests()).Namespace(s.namespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	if err != nil && !apierrors.IsNotFound(err) && !errors.Is(err, context.Canceled) {
		// The requester may have given up and deleted the request; anything
		// else is a problem of the test setup, reported by Errors.
		s.mu.Lock()
		s.errs = append(s.errs, fmt.Errorf("update status of %s: %w", obj.GetName(), err))
		s.mu.Unlock()
	}
}

func (s *Signer) record(obj *unstructured.Unstructured) Request {
	req := Request{Name: obj.GetName(), Labels: obj.GetLabels(), Annotations: obj.GetAnnotations()}
	req.IssuerRef, _, _ = unstructured.NestedStringMap(obj.Object, "spec", "issuerRef")
	req.Duration, _, _ = unstructured.NestedString(obj.Object, "spec", "duration")
	req.IsCA, _, _ = unstructured.NestedBool(obj.Object, "spec", "isCA")
	req.Usages, _, _ = unstructured.NestedStringSlice(obj.Object, "spec", "usages")
	if b64, _, _ := unstructured.NestedString(obj.Object, "spec", "request"); b64 != "" {
		if p, err := base64.StdEncoding.DecodeString(b64); err == nil {
			if block, _ := pem.Decode(p); block != nil && block.Type == "CERTIFICATE REQUEST" {
				if csr, err := x509.ParseCertificateRequest(block.Bytes); err == nil && csr.CheckSignature() == nil {
					req.CSR = csr
				}
			}
		}
	}
	s.mu.Lock()
	s.seen = append(s.seen, req)
	s.mu.Unlock()
	return req
}

// sign issues the certificate of req as cert-manager's CA issuer does:
// subject and SANs from the CSR, validity from spec.duration (default 90
// days), usages from spec.usages.
func (s *Signer) sign(req Request, now time.Time) ([]byte, error) {
	if req.CSR == nil {
		return nil, errors.New("spec.request holds no valid PEM CSR")
	}
	validity := 90 * 24 * time.Hour
	if req.Duration != "" {
		d, err := time.ParseDuration(req.Duration)
		if err != nil {
			return nil, fmt.Errorf("spec.duration: %w", err)
		}
		validity = d
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	ku, eku := usages(req.Usages)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               req.CSR.Subject,
		URIs:                  req.CSR.URIs,
		DNSNames:              req.CSR.DNSNames,
		IPAddresses:           req.CSR.IPAddresses,
		EmailAddresses:        req.CSR.EmailAddresses,
		NotBefore:             now,
		NotAfter:              now.Add(validity),
		KeyUsage:              ku,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IsCA:                  req.IsCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.caCert, req.CSR.PublicKey, s.caKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func usages(names []string) (x509.KeyUsage, []x509.ExtKeyUsage) {
	if len(names) == 0 {
		names = []string{"digital signature", "key encipherment"}
	}
	var ku x509.KeyUsage
	var eku []x509.ExtKeyUsage
	for _, n := range names {
		switch n {
		case "digital signature":
			ku |= x509.KeyUsageDigitalSignature
		case "content commitment":
			ku |= x509.KeyUsageContentCommitment
		case "key encipherment":
			ku |= x509.KeyUsageKeyEncipherment
		case "data encipherment":
			ku |= x509.KeyUsageDataEncipherment
		case "key agreement":
			ku |= x509.KeyUsageKeyAgreement
		case "cert sign":
			ku |= x509.KeyUsageCertSign
		case "crl sign":
			ku |= x509.KeyUsageCRLSign
		case "server auth":
			eku = append(eku, x509.ExtKeyUsageServerAuth)
		case "client auth":
			eku = append(eku, x509.ExtKeyUsageClientAuth)
		case "code signing":
			eku = append(eku, x509.ExtKeyUsageCodeSigning)
		case "any":
			eku = append(eku, x509.ExtKeyUsageAny)
		}
	}
	return ku, eku
}

func cond(typ, status, reason, message string, now time.Time) any {
	return map[string]any{
		"type":               typ,
		"status":             status,
		"reason":             reason,
		"message":            message,
		"lastTransitionTime": now.UTC().Format(time.RFC3339),
	}
}

func approved(now time.Time) any {
	return cond("Approved", "True", "cert-manager.io", "Certificate request has been approved by cert-manager.io", now)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
