// Package zonesync keeps a global control plane and its zone control planes
// in step, the way Kuma's KDS does, with zones that prove who they are.
//
// # Roles
//
// The global control plane owns Meshes and mesh-scoped Secrets (the builtin
// CA roots, created once on global with the Mesh that uses them, and the
// dataplane-token signing keys and revocation lists among them). A zone owns
// its Dataplanes and issues its own data planes' certificates with its own
// backend instances; global never calls a CA for a data plane.
//
// # Wire format
//
// One gRPC service, meshca.zonesync.v1.ZoneSync, over TLS. The zone always
// dials; global never connects out. Two bidirectional streams per zone, each
// carrying Envoy's delta discovery messages
// (envoy.service.discovery.v3.DeltaDiscoveryRequest/Response):
//
//   - GlobalToZone: the zone sends requests, global sends responses. The
//     zone's first request per type (TypeURL "type.meshca.io/Mesh",
//     ".../Secret") lists in initial_resource_versions what it already holds
//     with the version it got, so a reconnect re-sends only what changed.
//   - ZoneToGlobal: the roles are reversed: global sends the requests (its
//     first lists what it holds from that zone), the zone sends its Dataplanes
//     and their certificate insights ("type.meshca.io/Dataplane",
//     ".../DataplaneInsight").
//
// Each resource is a discovery Resource whose name is "<mesh>/<name>" (or
// "<name>" for global types), whose version is a hash of its content (the
// same content has the same version on both sides, whatever the stores'
// own versions), and whose body is an Any holding the record as JSON (spec,
// labels). Every response carries a nonce; the receiver acknowledges it with
// a request naming that nonce, and refuses a resource by setting
// error_detail. Responses carry only what changed (removed_resources for
// deletions), never periodic full dumps.
//
// # Identity
//
// A zone authenticates every stream with a zone token (a JWT bound to the
// zone's name, signed by a GlobalSecret zone-token-signing-key-<serial>) in
// the "authorization: Bearer" metadata. Global refuses a stream without a
// valid token, with a token for another zone name, or with a revoked one
// (GlobalSecret zone-token-revocations), and closes an open stream at once
// when its token is revoked. A zone writes on global only Dataplanes labelled
// with its own name (kuma.io/zone); another zone's records are refused.
//
// # Where records land
//
// On a zone, synced records carry the label kuma.io/origin: global; sync
// creates, updates and deletes only those, never a zone-local record. On
// global, a zone's records carry kuma.io/zone: <zone> and
// kuma.io/display-name: <name as in the zone>, and are stored under
// "<name>.<zone>" so two zones may use the same name.
//
// The package never logs tokens, keys or secret data.
package zonesync
