package install

import (
	rbacv1 "k8s.io/api/rbac/v1"

	"meshca/pkg/kube/admission"
	"meshca/pkg/kube/crd"
)

// ClusterRules are the control plane's cluster-wide permissions, each for
// what uses it:
//   - kuma.io resources: the Kubernetes store (pkg/store/kube) reads and
//     watches them with informers and creates, updates and deletes what the
//     HTTP API applies (it never patches);
//   - tokenreviews: data planes authenticate with their pod's projected
//     ServiceAccount token;
//   - its ValidatingWebhookConfiguration, by name: the control plane puts
//     its CA into caBundle at start (read, then replaced: admission.Register);
//   - cert-manager ClusterIssuers: the certmanager backend reads a
//     ClusterIssuer's Ready condition to explain a request that stays
//     pending.
//   - pods, services, namespaces (read and watch only): the leader
//     generates the Dataplanes of pods with sidecar injection from them
//     (pkg/kube/podgen), writing through the kuma.io rule above.
func ClusterRules() []rbacv1.PolicyRule {
	var plurals []string
	for _, r := range crd.Resources() {
		plurals = append(plurals, r.Plural)
	}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{crd.Group}, Resources: plurals, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"validatingwebhookconfigurations"},
			ResourceNames: []string{admission.ConfigurationName}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{"cert-manager.io"}, Resources: []string{"clusterissuers"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "services", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
	}
}

// NamespaceRules are the control plane's permissions in the system
// namespace only (a Role, so that it can read no Secret elsewhere):
//   - Secrets: meshca's Secrets (system.kuma.io/secret and global-secret)
//     and its own state (type meshca.io/state), read with informers and
//     written by the store (create, update, delete: it never patches);
//   - Leases: the leader election (pkg/leader: meshca-cp-leader, created and
//     updated) and each instance's heartbeat Lease (server-side applied, a
//     patch), listed for /control-planes and deleted when stale;
//   - cert-manager CertificateRequests and Issuers: the certmanager backend
//     creates a request, watches it until it is signed, deletes it, and
//     reads an Issuer's Ready condition.
func NamespaceRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "create", "update", "patch", "delete"}},
		{APIGroups: []string{"cert-manager.io"}, Resources: []string{"certificaterequests"}, Verbs: []string{"get", "watch", "create", "delete"}},
		{APIGroups: []string{"cert-manager.io"}, Resources: []string{"issuers"}, Verbs: []string{"get"}},
	}
}
