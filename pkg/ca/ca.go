// Package ca defines the Backend interface that every mTLS certificate
// authority of a Mesh implements, and the registry that maps a backend type
// (`builtin`, `provided`, `vault`, `acmpca`, `certmanager`) to its
// constructor. Each backend lives in its own folder under pkg/ca; nothing
// outside that folder knows about AWS, Vault or Kubernetes.
//
// A Backend never sees data-plane tokens and must never log key material,
// credentials or secret data.
package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"log/slog"
	"math/big"
	"net/url"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/datasource"
	"meshca/pkg/store"
)

// Identity is who a data-plane certificate is for.
type Identity struct {
	Mesh      string
	Dataplane string
	// Services are the kuma.io/service values of the data plane; one SPIFFE
	// URI SAN (spiffe://<mesh>/<service>) is issued for each.
	Services []string
	// Tags are all tags of the data plane with their distinct values.
	Tags map[string][]string
	// URIs are the URI SANs to put in the certificate (SPIFFE and kuma://).
	URIs []*url.URL
	// CommonName is the rendered commonName template, or "" when unset.
	CommonName string
}

// IssueRequest asks for one data-plane certificate.
type IssueRequest struct {
	// CSR is signed by the data-plane key meshca generated; its subject and
	// SANs already reflect Identity.
	CSR *x509.CertificateRequest
	// CSRPEM is CSR in PEM form, for backends that forward it as is.
	CSRPEM   []byte
	Identity Identity
	// Validity is the wanted lifetime (dpCert.rotation.expiration).
	Validity time.Duration
	// IdempotencyKey is stable for one (mesh, dataplane, rotation generation):
	// a backend that bills per certificate uses it so a retried or restarted
	// request issues nothing twice.
	IdempotencyKey string
	// RequestedAt is when this request was first made. It is persisted with
	// the request, so a backend whose arguments depend on time (an absolute
	// validity) re-sends identical ones after a retry or a restart.
	RequestedAt time.Time
}

// Issued is what a backend returns for one request.
type Issued struct {
	// CertPEM is the leaf certificate.
	CertPEM []byte
	// ChainPEM holds intermediates from the issuer up, excluding roots the
	// trust bundle already has (roots are tolerated; the caller verifies).
	ChainPEM []byte
	// KeyPEM is set only by a backend that generated the key itself (Vault's
	// issue path); otherwise the caller's CSR key is used.
	KeyPEM []byte
	// Ref identifies the certificate at the CA (e.g. an ACM certificate ARN).
	Ref string
	// Built is set by in-process signers (ca.KeySigner): what they know of
	// the leaf they just built, so that the caller need not parse it back.
	// Others leave it nil; the caller then parses CertPEM.
	Built *BuiltLeaf
}

// BuiltLeaf describes a certificate an in-process signer built.
type BuiltLeaf struct {
	Serial   *big.Int
	NotAfter time.Time // as encoded: UTC, whole seconds
	// Issuer is the CA certificate that signed it.
	Issuer *x509.Certificate
}

// Backend is one CA type. Methods may be called concurrently for different
// meshes and backends; implementations keep per-(mesh, backend) state behind
// their own locks.
type Backend interface {
	// Validate checks the backend's conf before a Mesh is stored: syntax,
	// DataSources that must resolve, and reachability where it is cheap.
	// Errors are *api.ValidationError with fields relative to the backend
	// (e.g. "conf.arn"), or plain errors that concern the whole backend.
	// Validate has no side effects.
	Validate(ctx context.Context, mesh string, b api.MTLSBackend) error
	// Ensure prepares the CA so TrustBundle and Issue can work: loads stored
	// CA state, fetches and checks an external CA's chain. It is idempotent
	// (calling it again when the CA is ready is a cheap no-op) and it never
	// writes to the store: state a backend keeps there is created through
	// Provisioner, committed with the Mesh that uses it. A Provisioner whose
	// state does not exist yet answers an error wrapping store.ErrNotFound.
	Ensure(ctx context.Context, mesh string, b api.MTLSBackend) error
	// TrustBundle returns the PEM roots that peers of this mesh must trust
	// for certificates of this backend.
	TrustBundle(ctx context.Context, mesh string, b api.MTLSBackend) ([]byte, error)
	// Issue returns one data-plane certificate for the request. It may block
	// for the backend's request timeout; it honours ctx.
	Issue(ctx context.Context, mesh string, b api.MTLSBackend, req IssueRequest) (Issued, error)
}

// Cleaner is implemented by backends that own stored state (the builtin
// root); Clean is called when the backend is removed from its Mesh or the
// Mesh is deleted, and returns the store ops that delete that state so the
// caller can commit them with the Mesh change.
type Cleaner interface {
	CleanupOps(ctx context.Context, mesh string, b api.MTLSBackend) ([]store.Op, error)
}

// Provisioner is implemented by backends that keep CA state in the store
// (the builtin root). That state must exist exactly when a Mesh that uses it
// is stored, whatever requests race: a request that fails must never remove
// what a request that succeeded relies on. So a backend never commits such
// state itself. ProvisionOps returns the ops that create it when it is absent
// (none when it exists), generating it has no other side effect, and the
// caller commits the ops in the same commit as the Mesh write (or with an
// OpRequire of the Mesh it saw). The ops are OpCreate, so of two writers that
// race, one commit fails with store.ErrAlreadyExists and leaves nothing
// behind; the caller then reads again and finds the winner's state.
type Provisioner interface {
	ProvisionOps(ctx context.Context, mesh string, b api.MTLSBackend) ([]store.Op, error)
}

// SecretUser is implemented by backends that reference mesh Secrets in their
// conf, so the API can refuse deleting a Secret in use.
type SecretUser interface {
	UsedSecrets(b api.MTLSBackend) []string
}

// CommonNamer is implemented by backends whose conf carries a commonName
// template; the identity layer renders it with the data plane's tags.
type CommonNamer interface {
	CommonNameTemplate(b api.MTLSBackend) string
}

// Deps are what backends may need; constructors take what they use.
type Deps struct {
	Store    store.Store
	Sources  *datasource.Resolver
	Logger   *slog.Logger
	Now      func() time.Time
	Settings map[string]string // control-plane settings (e.g. k8s namespace)
}

// KeySigner is implemented by backends that sign in-process (builtin,
// provided). The identity layer then skips building and checking a CSR: it
// hands over the public key, which keeps one issuance close to the cost of
// one key generation plus one signature. Such a certificate is trusted by
// construction, so only its issuer linkage is checked, not its signature.
type KeySigner interface {
	IssueForKey(ctx context.Context, mesh string, b api.MTLSBackend, pub crypto.PublicKey, req IssueRequest) (Issued, error)
}

// IdempotentIssuer is implemented by backends whose Issue is idempotent on
// IssueRequest.IdempotencyKey and that charge per certificate (acmpca). The
// caller then persists the key, CSR and idempotency key before calling Issue,
// so that a restart in the middle re-sends the same request instead of
// buying a second certificate.
type IdempotentIssuer interface {
	IdempotentIssue() bool
}

// Prepare readies backend b of mesh for use. For a Provisioner whose state
// does not exist yet it returns the ops that create it, to be committed with
// (or conditional on) the Mesh; otherwise it runs Ensure and returns none.
func Prepare(ctx context.Context, be Backend, mesh string, b api.MTLSBackend) ([]store.Op, error) {
	if p, ok := be.(Provisioner); ok {
		ops, err := p.ProvisionOps(ctx, mesh, b)
		if err != nil || len(ops) > 0 {
			return ops, err
		}
	}
	return nil, be.Ensure(ctx, mesh, b)
}

type syntaxOnlyKey struct{}

// WithSyntaxOnly marks ctx for a Validate that checks a backend's conf as
// written (its syntax and the shape of its DataSources) without resolving
// the DataSources or reaching the CA. A global control plane validates so:
// the zones, not global, read those files and call that CA.
func WithSyntaxOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, syntaxOnlyKey{}, true)
}

// SyntaxOnly reports whether ctx asks Validate for syntax only.
func SyntaxOnly(ctx context.Context) bool {
	v, _ := ctx.Value(syntaxOnlyKey{}).(bool)
	return v
}
