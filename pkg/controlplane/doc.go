// Package controlplane assembles meshca's control plane from its parts: the
// store, the CA backends, the resource manager, the identity loop, dataplane
// tokens, the SDS server and the HTTP API. cmd/meshca-cp is a thin flag
// parser over Run; tests and the load tools start the same code in-process.
package controlplane
