// Package identity keeps every Dataplane of an mTLS-enabled Mesh supplied
// with a certificate for its service identity: it generates the data-plane
// key and CSR (SPIFFE and kuma:// URI SANs, commonName from the backend's
// template), asks the Mesh's enabled CA backend to issue, verifies the result
// against the mesh trust bundle, persists it so a restart re-issues nothing
// still valid, schedules rotation at ~80% of the lifetime with jitter, retries
// failures with capped exponential backoff while the current certificate stays
// in service, and tells subscribers (the SDS server) about every change.
//
// It never serves private keys to anyone but the subscriber of that data
// plane, and never logs them.
package identity
