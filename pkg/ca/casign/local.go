package casign

import (
	"context"
	"crypto"
	"fmt"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/ca"
)

// Local serves TrustBundle, Issue and IssueForKey for a backend that signs
// in process (builtin, provided); the backend embeds it and supplies how its
// CA is found. It implements ca.KeySigner.
type Local struct {
	// Kind names the backend type in errors ("builtin CA of mesh ...").
	Kind string
	// Current returns the backend's CA, cached as the backend sees fit.
	Current func(ctx context.Context, mesh string, mb api.MTLSBackend) (*CA, error)
	Now     func() time.Time
}

// TrustBundle implements ca.Backend: the CA's trust anchors.
func (l Local) TrustBundle(ctx context.Context, mesh string, mb api.MTLSBackend) ([]byte, error) {
	c, err := l.Current(ctx, mesh, mb)
	if err != nil {
		return nil, err
	}
	return c.TrustBundle(), nil
}

// Issue implements ca.Backend: it signs the CSR.
func (l Local) Issue(ctx context.Context, mesh string, mb api.MTLSBackend, req ca.IssueRequest) (ca.Issued, error) {
	return l.issue(ctx, mesh, mb, req, nil)
}

// IssueForKey implements ca.KeySigner: the data-plane key was made in this
// process, so no CSR is built or checked.
func (l Local) IssueForKey(ctx context.Context, mesh string, mb api.MTLSBackend, pub crypto.PublicKey, req ca.IssueRequest) (ca.Issued, error) {
	return l.issue(ctx, mesh, mb, req, pub)
}

func (l Local) issue(ctx context.Context, mesh string, mb api.MTLSBackend, req ca.IssueRequest, pub crypto.PublicKey) (ca.Issued, error) {
	c, err := l.Current(ctx, mesh, mb)
	if err != nil {
		return ca.Issued{}, err
	}
	iss, err := c.IssueFor(ctx, mb, req, pub, l.Now())
	if err != nil {
		return ca.Issued{}, fmt.Errorf("%s CA of mesh %q backend %q: %w", l.Kind, mesh, mb.Name, err)
	}
	return iss, nil
}
