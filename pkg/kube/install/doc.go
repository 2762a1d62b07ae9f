// Package install generates the Kubernetes manifests that run meshca's
// control plane in a cluster, as `kumactl install control-plane` does for
// Kuma: the system Namespace, the kuma.io CRDs (pkg/kube/crd), the control
// plane's ServiceAccount and RBAC (only the verbs it uses: see rbac.go), its
// Deployment, the Service of its API, SDS and admission webhook ports, and
// the ValidatingWebhookConfiguration (pkg/kube/admission) whose caBundle
// the control plane fills in at start. `meshctl install control-plane`
// prints Manifest.
package install
