// Package crd provides the CustomResourceDefinitions of the kuma.io/v1alpha1
// resources meshca stores (Mesh, Dataplane, AccessRole, AccessRoleBinding),
// in the shape Kuma gives them: `spec` holds the resource as the API serves
// it and is validated by meshca, not by the CRD schema; a Dataplane is
// namespaced and carries its mesh in a top-level `mesh` field, beside spec.
// Secrets and global secrets are core/v1 Secrets (types
// system.kuma.io/secret and system.kuma.io/global-secret), so they have no
// CRD. `meshctl install crds` prints Manifest.
package crd
