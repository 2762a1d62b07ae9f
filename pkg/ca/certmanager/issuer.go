package certmanager

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// issuerLookupTimeout bounds reading the issuer after a request timed out;
// the caller's context may already be done by then.
const issuerLookupTimeout = 2 * time.Second

// pendingError is a CertificateRequest still not issued when
// dpCert.requestTimeout (or rootChain.requestTimeout) ran out. It wraps
// context.DeadlineExceeded.
type pendingError struct {
	name    string
	timeout time.Duration
	// last is the request's last observed state.
	last string
	// issuer describes the issuer's own readiness when it could be read.
	issuer string
}

func (e *pendingError) Error() string {
	msg := fmt.Sprintf("certificate request %s not issued within %s (last state: %s", e.name, e.timeout, e.last)
	if e.issuer != "" {
		msg += "; " + e.issuer
	}
	return msg + "): " + context.DeadlineExceeded.Error()
}

func (e *pendingError) Unwrap() error { return context.DeadlineExceeded }

// issuerState describes the readiness of a cert-manager.io Issuer (in the
// backend's namespace) or ClusterIssuer, as cert-manager reports it, e.g.
// `ClusterIssuer "x": Ready=False (ErrGetKeyPair): ...`. It is best effort:
// it returns "" for issuers of other groups or when the issuer cannot be read
// (e.g. the control plane was not granted `get` on issuers).
func (b *Backend) issuerState(ctx context.Context, ref IssuerRef) string {
	if ref.Group != DefaultIssuerGroup || (ref.Kind != "Issuer" && ref.Kind != "ClusterIssuer") {
		return ""
	}
	b.mu.Lock()
	client := b.client
	b.mu.Unlock()
	if client == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), issuerLookupTimeout)
	defer cancel()
	var obj *unstructured.Unstructured
	var err error
	what := fmt.Sprintf("%s %q", ref.Kind, ref.Name)
	if ref.Kind == "ClusterIssuer" {
		gvr := schema.GroupVersionResource{Group: ref.Group, Version: "v1", Resource: "clusterissuers"}
		obj, err = client.Resource(gvr).Get(ctx, ref.Name, metav1.GetOptions{})
	} else {
		gvr := schema.GroupVersionResource{Group: ref.Group, Version: "v1", Resource: "issuers"}
		obj, err = client.Resource(gvr).Namespace(b.namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		what += " in namespace " + b.namespace
	}
	switch {
	case apierrors.IsNotFound(err):
		return what + " does not exist"
	case err != nil:
		b.logger.DebugContext(ctx, "cannot read the issuer to explain a pending request", "issuer", what, "error", err)
		return ""
	}
	for _, c := range conditions(obj) {
		if c.Type == "Ready" {
			return what + ": " + c.String()
		}
	}
	return what + ": no Ready condition (is cert-manager running?)"
}
