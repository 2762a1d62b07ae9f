// Package api holds meshca's resource types (Mesh, Secret, GlobalSecret,
// Dataplane and the mTLS configuration they carry), their codecs (Universal
// YAML/JSON and the Kubernetes form, as Kuma and Kong Mesh write them) and
// their structural validation.
//
// Validation errors name the field they concern with a path rooted at the
// Universal resource ("mtls.backends[0].conf.arn"); backend-specific conf is
// validated by the CA backends (package ca), not here. Decoding is strict:
// unknown fields and keys given twice in one object (JSON or YAML, at any
// depth, conf blocks and tags included) are refused with their path. This
// package never
// reads the store, files or the network.
package api
