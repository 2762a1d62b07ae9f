package admission

import (
	"context"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"meshca/pkg/api"
	"meshca/pkg/kube/crd"
)

// Names of the ValidatingWebhookConfiguration and of its two webhooks.
const (
	ConfigurationName = "meshca-validating-webhook-configuration"
	ResourcesWebhook  = "resources.admission.meshca.io"
	SecretsWebhook    = "secrets.admission.meshca.io"
	// FieldManager names Register's writes in managedFields.
	FieldManager = "meshca-cp"
	// timeoutSeconds: a Mesh's validation reads the Secrets its backends
	// use; ten seconds is the API server's default and maximum is 30.
	timeoutSeconds = 10
)

// Target is where the API server sends reviews: URL when set (a control
// plane outside the cluster, tests), else the Service.
type Target struct {
	URL                           string
	ServiceNamespace, ServiceName string
	ServicePort                   int32
}

func (t Target) clientConfig(caBundle []byte) admissionregistrationv1.WebhookClientConfig {
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: caBundle}
	if t.URL != "" {
		u := t.URL + Path
		cc.URL = &u
		return cc
	}
	path, port := Path, t.ServicePort
	cc.Service = &admissionregistrationv1.ServiceReference{Namespace: t.ServiceNamespace, Name: t.ServiceName, Path: &path, Port: &port}
	return cc
}

// secretTypes selects meshca's Secrets by type, which no label selector can
// (the API server evaluates it before calling, so other Secrets of the
// system namespace never depend on the webhook). has(): a condition that
// fails to evaluate would refuse the request under failurePolicy Fail.
var secretTypes = fmt.Sprintf(
	`request.operation == 'DELETE' ? (has(oldObject.type) && oldObject.type in ['%[1]s', '%[2]s']) : (has(object.type) && object.type in ['%[1]s', '%[2]s'])`,
	api.KubeSecretType, api.KubeGlobalSecretType)

// Configuration returns the ValidatingWebhookConfiguration sending meshca
// the kuma.io resources of every namespace and the Secrets of the system
// namespace, with caBundle the CA the webhook's certificate chains to (nil
// in a manifest: the control plane fills it in at start, see Register).
func Configuration(systemNamespace string, t Target, caBundle []byte) *admissionregistrationv1.ValidatingWebhookConfiguration {
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	equivalent := admissionregistrationv1.Equivalent
	timeout := int32(timeoutSeconds)
	ops := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete}
	var plurals []string
	for _, r := range crd.Resources() {
		plurals = append(plurals, r.Plural)
	}
	webhook := func(name string, rule admissionregistrationv1.Rule) admissionregistrationv1.ValidatingWebhook {
		return admissionregistrationv1.ValidatingWebhook{
			Name:                    name,
			ClientConfig:            t.clientConfig(caBundle),
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: ops, Rule: rule}},
			FailurePolicy:           &fail,
			MatchPolicy:             &equivalent,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}
	}
	all := admissionregistrationv1.AllScopes
	namespaced := admissionregistrationv1.NamespacedScope
	resources := webhook(ResourcesWebhook, admissionregistrationv1.Rule{
		APIGroups: []string{crd.Group}, APIVersions: []string{crd.Version}, Resources: plurals, Scope: &all,
	})
	secrets := webhook(SecretsWebhook, admissionregistrationv1.Rule{
		APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}, Scope: &namespaced,
	})
	secrets.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": systemNamespace}}
	secrets.MatchConditions = []admissionregistrationv1.MatchCondition{{Name: "meshca-secret-types", Expression: secretTypes}}
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   ConfigurationName,
			Labels: map[string]string{"app.kubernetes.io/part-of": "meshca"},
		},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{resources, secrets},
	}
}

var vwcResource = schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingwebhookconfigurations"}

// Register makes the configuration vwc: the control plane does so at start
// to point it at itself with its CA in caBundle. An existing configuration
// (installed by `meshctl install control-plane`) is replaced whole, not
// merged: a control plane outside the cluster names a URL where the
// installed one names the Service, and a merge would keep both (which the
// API server refuses). It needs get and update on the one configuration,
// or create when there is none. Several replicas write the same object,
// since they serve certificates of one shared CA.
func Register(ctx context.Context, client dynamic.Interface, vwc *admissionregistrationv1.ValidatingWebhookConfiguration) error {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(vwc)
	if err != nil {
		return fmt.Errorf("ValidatingWebhookConfiguration %s: %w", vwc.Name, err)
	}
	want := &unstructured.Unstructured{Object: obj}
	unstructured.RemoveNestedField(want.Object, "metadata", "creationTimestamp")
	r := client.Resource(vwcResource)
	for attempt := 1; ; attempt++ {
		cur, err := r.Get(ctx, vwc.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = r.Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager})
		case err == nil:
			next := want.DeepCopy()
			next.SetResourceVersion(cur.GetResourceVersion())
			// Keep what others put on it (kubectl's last-applied
			// annotation, labels of the installer).
			next.SetAnnotations(cur.GetAnnotations())
			labels := cur.GetLabels()
			if labels == nil {
				labels = map[string]string{}
			}
			for k, v := range want.GetLabels() {
				labels[k] = v
			}
			next.SetLabels(labels)
			_, err = r.Update(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			if attempt < 5 {
				continue // another replica wrote it meanwhile
			}
		}
		if err != nil {
			return fmt.Errorf("write ValidatingWebhookConfiguration %s: %w", vwc.Name, err)
		}
		return nil
	}
}
