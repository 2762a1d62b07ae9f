// Package sds serves data-plane mTLS material over Envoy's v3 Secret
// Discovery Service.
//
// # Design
//
// The xDS protocol (SotW and delta, nonces, ACK/NACK, resource
// subscriptions) is implemented here directly on go-control-plane's
// protos, and so is its transport: gRPC over HTTP/2 over TLS (h2conn.go,
// h2stream.go), unchanged on the wire for Envoy and meshca-dp, because
// every proxy holds its own connection and what an idle one costs sizes a
// zone control plane. An idle connection has no goroutine (one epoll
// poller waits for all of them, h2poll_linux.go), an idle stream none
// either: authenticating, answering requests and pushing run on a worker
// goroutine that exists only while there is work. What remains is TLS
// state, an HPACK table, one Source subscription and a few hundred bytes
// of protocol state: about 13 KB per connected proxy. Nothing is cached
// per data plane: responses are built from Source.Current when sent.
// Responsibilities:
//
//   - Authentication. Every stream must carry the dataplane token in gRPC
//     metadata (`authorization: Bearer <token>`, as Kuma's proxies send it).
//     It is verified before the stream is served; a missing or rejected token
//     ends the stream with codes.Unauthenticated. With a NodeAuthenticator
//     (Kubernetes ServiceAccount tokens, pkg/kube/tokenreview) the token is
//     verified once the first request arrived, for the node id it carries
//     (a stream whose first request does not come within 30 s ends with
//     codes.Unauthenticated).
//   - Authorization. The node id must be `<mesh>.<name>` of the token's
//     dataplane (Kuma's convention); any other node id ends the stream with
//     codes.PermissionDenied. The node is checked on every request carrying one.
//   - Servability. After authentication, a Source that is a
//     ServableChecker is asked whether the data plane can be served; if not
//     (not registered: codes.NotFound; its mesh has no mTLS:
//     codes.FailedPrecondition) the stream ends with the reason at once,
//     logged once per stream. A stream that opened is never ended for this.
//   - Content. Two envoy.extensions.transport_sockets.tls.v3.Secret
//     resources: `identity_cert:secret:<mesh>` (certificate chain + private
//     key) and `mesh_ca:secret:<mesh>` (trusted CA bundle), built from
//     Source.Current. Every stream subscribes to its data plane's Source
//     signals and pushes without the client asking when the content changed.
//     Versions are content hashes, so a signal without a change pushes nothing.
//   - Protocol. SotW: a response is sent when the version of the requested
//     resources (both if resource_names is empty or "*") differs from the one
//     last sent on the stream (on a new stream: from the request's
//     version_info); requests with a stale nonce are ignored; a NACK
//     (error_detail) is logged and the NACKed version is not sent again until
//     the content changes. Delta: wildcard or named subscriptions,
//     initial_resource_versions, only changed resources are sent, a NACKed
//     resource version is not resent, and resources sent on the stream that
//     disappear from the source (the data plane was deleted) are removed.
//   - Revocation. A token is re-verified before a response is sent; if it is
//     no longer acceptable (revoked, expired, signing key removed) the stream
//     ends with codes.Unauthenticated instead of receiving the push. When the
//     Authenticator is a GenerationAuthenticator (TokenAuthenticator over
//     Tokens whose Run is watching the store), the re-verification is
//     skipped while the mesh's generation is unchanged and the token is not
//     expired: a revocation or signing-key change then takes effect for
//     pushes as soon as the store delivers its change event (milliseconds;
//     on PostgreSQL also for other control planes' changes). One shared
//     loop also re-verifies open streams, at once on the authenticator's
//     change signal (ChangeNotifier) and every WithReverifyInterval
//     (default one minute), so a revoked dataplane is cut off even when
//     nothing is pushed; with a GenerationAuthenticator it checks only the
//     streams whose verdict went stale (generation moved, token expired). Transient verification failures
//     (store unreachable) are logged and do not end a stream that was
//     already authenticated.
//
// FetchSecrets (REST-style polling) answers codes.Unimplemented.
package sds

import (
	"context"
	"errors"
	"time"
)

// SecretTypeURL is the type URL of the resources this server sends.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// IdentityCertName is the resource name of a dataplane's certificate and key.
func IdentityCertName(mesh string) string { return identityCertPrefix + mesh }

// MeshCAName is the resource name of a mesh's trust bundle.
func MeshCAName(mesh string) string { return meshCAPrefix + mesh }

const (
	identityCertPrefix = "identity_cert:secret:"
	meshCAPrefix       = "mesh_ca:secret:"
)

// NodeID is the xDS node id a dataplane must use: `<mesh>.<name>`.
func NodeID(mesh, name string) string { return mesh + "." + name }

// Secrets is what one data plane receives. The server versions responses
// by a hash of this content itself.
type Secrets struct {
	CertChainPEM, KeyPEM, TrustBundlePEM []byte
}

// Source provides the secrets of data planes.
type Source interface {
	// Current returns the data plane's current secrets; ok=false while none is issued yet.
	Current(mesh, name string) (Secrets, bool)
	// Subscribe calls notify whenever mesh/name's secrets change (a call
	// may also come without a change), until cancel is called. notify must
	// return at once and must not call the Source: it may run with the
	// Source's locks held.
	Subscribe(mesh, name string, notify func()) (cancel func())
}

// ServableChecker is implemented by Sources that can tell, when a stream
// opens, that its data plane will receive nothing until an operator acts:
// it is not registered, or its mesh issues no certificates. The stream then
// ends at once with a status saying why (and the server logs it once)
// instead of staying open and silent.
type ServableChecker interface {
	// Servable returns nil when mesh/name has secrets or will get them by
	// itself. Otherwise its error is the reason sent to the data plane:
	// codes.NotFound if it wraps ErrDataplaneNotFound, else
	// codes.FailedPrecondition. Both tell the data plane to retry later,
	// since the operator may fix it.
	Servable(ctx context.Context, mesh, name string) error
}

// ErrDataplaneNotFound marks a ServableChecker's error as "no such data
// plane" (codes.NotFound).
var ErrDataplaneNotFound = errors.New("dataplane not found")

// Authenticator verifies a dataplane token and returns whom it identifies.
//
// An error wrapping ErrRejected means the token is not acceptable (the stream
// is refused with codes.Unauthenticated and proxies should not retry with it);
// any other error is taken as transient (codes.Unavailable: proxies retry).
type Authenticator interface {
	Verify(ctx context.Context, token string) (mesh, name string, err error)
}

// ChangeNotifier is implemented by authenticators that signal when their
// verdicts may have changed (a revocation, a removed signing key); the server
// then re-verifies every open stream whose verdict is stale at once instead
// of at the next periodic check, so a revocation cuts a stream off even when
// nothing is pushed to it.
type ChangeNotifier interface {
	Changed() <-chan struct{}
}

// GenerationAuthenticator is an Authenticator that can tell when its verdicts
// may have changed, which lets the server skip re-verifying the token of an
// open stream before each push.
type GenerationAuthenticator interface {
	Authenticator
	// VerifyUntil is Verify that also returns when a positive verdict lapses
	// by itself (the token's expiry).
	VerifyUntil(ctx context.Context, token string) (mesh, name string, until time.Time, err error)
	// Generation returns a counter that never decreases and grows past every
	// value returned before whenever the verdict for a token of mesh may
	// have changed other than by time passing (revocation list or signing
	// keys changed); mesh "" stands for all meshes. ok=false means it cannot
	// tell; the server then re-verifies before every push. The server takes
	// it before calling VerifyUntil and trusts the verdict while
	// Generation(mesh) is not larger.
	Generation(mesh string) (gen uint64, ok bool)
}

// ErrRejected marks an Authenticator error as a definitive refusal.
var ErrRejected = errors.New("dataplane token rejected")
