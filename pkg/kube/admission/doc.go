// Package admission is meshca's validating admission webhook: it lets the
// Kubernetes API refuse an invalid kuma.io resource (Mesh, Dataplane,
// AccessRole, AccessRoleBinding) or meshca Secret (core/v1 Secrets of type
// system.kuma.io/secret and system.kuma.io/global-secret in the system
// namespace) at `kubectl apply`, with the field-path errors the HTTP API
// gives, and refuse deleting a Secret a Mesh's CA backend uses or a Mesh
// that still has Dataplanes, as the API does.
//
// Handler speaks admission.k8s.io/v1 AdmissionReview. It converts the object
// with pkg/api's Kubernetes codec and validates it with the resource
// manager's dry run (pkg/resources), the code path of the API, so the two
// cannot drift. Configuration builds the ValidatingWebhookConfiguration that
// sends it those requests; its failurePolicy is Fail, as Kuma's: while no
// control plane answers, kuma.io resources and meshca Secrets cannot be
// written, so nothing unvalidated gets into the store the control plane
// reads (other Secrets are never sent to the webhook).
package admission
