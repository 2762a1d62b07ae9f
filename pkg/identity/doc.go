// Package identity keeps every Dataplane of an mTLS-enabled Mesh supplied
// with a certificate for its service identity: it generates the data-plane
// key and CSR (SPIFFE and kuma:// URI SANs, commonName from the backend's
// template), asks the Mesh's enabled CA backend to issue, verifies the result
// against the mesh trust bundle, persists it so a restart re-issues nothing
// still valid, schedules rotation at ~80% of the lifetime with jitter, retries
// failures with capped exponential backoff while the current certificate stays
// in service, and tells subscribers (the SDS server) about every change.
//
// Identities are validated, not encoded: a data plane's URI SANs are
// spiffe://<mesh>/<service> for each kuma.io/service value and
// kuma://<tag>/<value> for each tag, exactly as written. The API refuses,
// at apply time and naming the field, a Mesh name that is not a SPIFFE
// trust domain (lower-case letters, digits, '.', '_', '-') and a service
// that is not a SPIFFE path segment (letters, digits, '.', '_', '-'; not
// "." or ".."), and holds tags to Kuma's character sets. Here, a data plane
// stored before that rule gets no certificate (the reason is its last
// error), and a tag whose kuma:// URI would not parse back to the same tag
// gets no kuma:// SAN. Encoding was rejected because a peer would then see
// an identity that is not the name the operator wrote.
//
// It never serves private keys to anyone but the subscriber of that data
// plane, and never logs them.
package identity
