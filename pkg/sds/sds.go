// Package sds serves data-plane mTLS material over Envoy's v3 Secret
// Discovery Service.
//
// # Design
//
// The xDS protocol machinery (SotW and delta streams, nonces, ACK/NACK,
// per-resource versions) is go-control-plane's sotw/v3 and delta/v3 servers
// on a SnapshotCache keyed by node id (one snapshot per connected dataplane).
// (server/v3, which only bundles them, is not used: it imports the ratelimit
// module, which go.mod does not carry.) This package adds what
// go-control-plane leaves to its users:
//
//   - Authentication. Every stream must carry the dataplane token in gRPC
//     metadata (`authorization: Bearer <token>`, as Kuma's proxies send it).
//     It is verified before the stream is served; a missing or rejected token
//     ends the stream with codes.Unauthenticated.
//   - Authorization. The node id must be `<mesh>.<name>` of the token's
//     dataplane (Kuma's convention); any other node id ends the stream with
//     codes.PermissionDenied. The node is checked on every request carrying one.
//   - Content. One snapshot per connected dataplane holds two
//     envoy.extensions.transport_sockets.tls.v3.Secret resources:
//     `identity_cert:secret:<mesh>` (certificate chain + private key) and
//     `mesh_ca:secret:<mesh>` (trusted CA bundle). The snapshot is built from
//     Source.Current when the first stream of a dataplane opens, and rebuilt
//     on every Source.Subscribe signal; the cache then pushes to open streams
//     without the client asking. Snapshot versions are content hashes, so a
//     signal without a change pushes nothing.
//   - Revocation. A token is re-verified before every response is sent; if
//     it is no longer acceptable (revoked, expired, signing key removed) the
//     stream ends with codes.Unauthenticated instead of receiving the push.
//     Open streams are also re-verified periodically (WithReverifyInterval,
//     default one minute) so a revoked dataplane is cut off even when nothing
//     is pushed. Transient verification failures (store unreachable) are
//     logged and do not end a stream that was already authenticated.
//
// FetchSecrets (REST-style polling) answers codes.Unimplemented.
package sds

import (
	"context"
	"errors"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// SecretTypeURL is the type URL of the resources this server sends.
const SecretTypeURL = resource.SecretType

// IdentityCertName is the resource name of a dataplane's certificate and key.
func IdentityCertName(mesh string) string { return "identity_cert:secret:" + mesh }

// MeshCAName is the resource name of a mesh's trust bundle.
func MeshCAName(mesh string) string { return "mesh_ca:secret:" + mesh }

// NodeID is the xDS node id a dataplane must use: `<mesh>.<name>`.
func NodeID(mesh, name string) string { return mesh + "." + name }

// Secrets is what one data plane receives.
type Secrets struct {
	CertChainPEM, KeyPEM, TrustBundlePEM []byte
	Version                              string
}

// Source provides the secrets of data planes.
type Source interface {
	// Current returns the data plane's current secrets; ok=false while none is issued yet.
	Current(mesh, name string) (Secrets, bool)
	// Subscribe signals (coalescing, non-blocking) whenever mesh/name's secrets change. cancel stops it.
	Subscribe(mesh, name string) (ch <-chan struct{}, cancel func())
}

// Authenticator verifies a dataplane token and returns whom it identifies.
//
// An error wrapping ErrRejected means the token is not acceptable (the stream
// is refused with codes.Unauthenticated and proxies should not retry with it);
// any other error is taken as transient (codes.Unavailable: proxies retry).
type Authenticator interface {
	Verify(ctx context.Context, token string) (mesh, name string, err error)
}

// ErrRejected marks an Authenticator error as a definitive refusal.
var ErrRejected = errors.New("dataplane token rejected")
