// Package tokenreview authenticates data planes on Kubernetes by their
// pod's ServiceAccount token, as Kuma does: the SDS server asks the API
// server (authentication.k8s.io/v1 TokenReview) whom the token presented by
// a data plane authenticates, and serves the stream only if that is a
// ServiceAccount (system:serviceaccount:<namespace>:<name>) of the
// namespace of the stream's Dataplane — the Kubernetes store names a
// Dataplane `<name>.<namespace>`, so the node id is
// `<mesh>.<name>.<namespace>`. A token bound to a pod (the one kubelet
// projects into it) serves only the Dataplane named after that pod,
// `<pod>.<namespace>`, as Kuma names them, so that another pod of the
// namespace cannot take its identity; Kuma gets there by reading the pod
// and comparing its ServiceAccount. A token bound to no pod (`kubectl
// create token`) is checked by namespace only.
//
// Audiences: by default none are sent, so the API server checks the token
// against its own audiences — the token kubelet mounts at
// /var/run/secrets/kubernetes.io/serviceaccount/token works as it is, as in
// Kuma. Options.Audiences restricts meshca to tokens made for it (a
// projected token with that audience), which then cannot be replayed
// against the API server.
//
// Positive reviews are cached for Options.CacheTTL (default one minute,
// never past the token's own expiry), keyed by a SHA-256 of the token, at
// most Options.CacheSize of them; refusals are not cached. An open stream's
// verdict lapses with its cache entry, so a token that stopped being valid
// (its pod or ServiceAccount deleted, expired) ends the stream at the next
// re-verification. Neither the token nor its hash is ever logged or put in
// an error.
//
// Dataplane tokens (pkg/tokens) are accepted too when
// Options.DataplaneTokens is set; a token is taken for one when its
// (unverified) claims carry Kuma's Mesh and Name, and is then verified by
// that authenticator alone.
package tokenreview
