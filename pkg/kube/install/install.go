package install

import (
	"bytes"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"meshca/pkg/kube/admission"
	"meshca/pkg/kube/crd"
)

// Names of what Manifest creates (Kuma's, with meshca for kuma).
const (
	DefaultNamespace = "meshca-system"
	// Name is the ServiceAccount's, the RBAC objects', the Deployment's and
	// the Service's.
	Name = "meshca-control-plane"
	// DefaultImageRepository is the image's repository; its tag is the
	// version.
	DefaultImageRepository = "docker.io/meshca/meshca-cp"
	dataDir                = "/var/lib/meshca"
)

// Ports of the control plane, as Kuma's: the HTTP API and its HTTPS
// listener, the data-plane (SDS) server, and the admission webhook (served
// on 5443 in the pod, 443 on the Service).
const (
	PortAPI         = 5681
	PortAPITLS      = 5682
	PortDPServer    = 5678
	PortWebhook     = 5443
	ServicePortHook = 443
)

// Options shape the manifests.
type Options struct {
	// Namespace is the system namespace (default meshca-system).
	Namespace string
	// Image is the control plane's image (default
	// DefaultImageRepository:Version).
	Image   string
	Version string
	// Replicas of the Deployment (default 1); more elect a leader with a
	// Lease and serve the API and data planes alike.
	Replicas int32
}

func (o Options) withDefaults() (Options, error) {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return o, fmt.Errorf("--namespace %q: %s", o.Namespace, errs[0])
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Image == "" {
		o.Image = DefaultImageRepository + ":" + o.Version
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas < 0 {
		return o, fmt.Errorf("--replicas %d: must be at least 1", o.Replicas)
	}
	return o, nil
}

// Objects returns every object of the installation, in the order kubectl
// should apply them (the Namespace and the CRDs first).
func Objects(o Options) ([]any, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	objs := []any{namespace(o)}
	for _, r := range crd.Resources() {
		objs = append(objs, r.Definition())
	}
	meta := func(namespaced bool) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Name: Name, Labels: labels()}
		if namespaced {
			m.Namespace = o.Namespace
		}
		return m
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: Name, Namespace: o.Namespace}}
	objs = append(objs,
		&corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(true)},
		&rbacv1.ClusterRole{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: meta(false), Rules: ClusterRules()},
		&rbacv1.ClusterRoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: meta(false),
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: Name}, Subjects: subject},
		&rbacv1.Role{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: meta(true), Rules: NamespaceRules()},
		&rbacv1.RoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: meta(true),
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: Name}, Subjects: subject},
		service(o, meta(true)),
		deployment(o, meta(true)),
		// No caBundle: the control plane puts its CA there at start.
		admission.Configuration(o.Namespace, admission.Target{ServiceNamespace: o.Namespace, ServiceName: Name, ServicePort: ServicePortHook}, nil),
	)
	return objs, nil
}

// Manifest returns Objects as one multi-document YAML for `kubectl apply -f -`.
func Manifest(o Options) ([]byte, error) {
	objs, err := Objects(o)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for _, obj := range objs {
		m, ok := obj.(map[string]any)
		if !ok {
			if m, err = runtime.DefaultUnstructuredConverter.ToUnstructured(obj); err != nil {
				return nil, fmt.Errorf("%T: %w", obj, err)
			}
		}
		b, err := yaml.Marshal(prune(m))
		if err != nil {
			return nil, fmt.Errorf("%T: %w", obj, err)
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

// prune drops what typed objects carry unset: nulls (creationTimestamp)
// and empty objects (status, strategy), which only clutter the manifest. An
// emptyDir is kept: empty is what it means.
func prune(m map[string]any) map[string]any {
	for k, v := range m {
		switch vv := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			prune(vv)
			if len(vv) == 0 && k != "emptyDir" {
				delete(m, k)
			}
		case []any:
			for _, it := range vv {
				if im, ok := it.(map[string]any); ok {
					prune(im)
				}
			}
		}
	}
	return m
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func labels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": Name, "app.kubernetes.io/part-of": "meshca"}
}

func namespace(o Options) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: typeMeta("v1", "Namespace"),
		ObjectMeta: metav1.ObjectMeta{Name: o.Namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "meshca"}}}
}

func service(o Options, meta metav1.ObjectMeta) *corev1.Service {
	// Each targets the container port of its name.
	port := func(name string, port int) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: int32(port), TargetPort: intstr.FromString(name), Protocol: corev1.ProtocolTCP}
	}
	return &corev1.Service{TypeMeta: typeMeta("v1", "Service"), ObjectMeta: meta, Spec: corev1.ServiceSpec{
		Type:     corev1.ServiceTypeClusterIP,
		Selector: map[string]string{"app.kubernetes.io/name": Name},
		Ports: []corev1.ServicePort{
			port("http-api", PortAPI),
			port("https-api", PortAPITLS),
			port("dp-server", PortDPServer),
			port("webhook", ServicePortHook),
		},
	}}
}

func deployment(o Options, meta metav1.ObjectMeta) *appsv1.Deployment {
	listen := func(p int) string { return "0.0.0.0:" + strconv.Itoa(p) }
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http-api")}},
			PeriodSeconds:    period,
			TimeoutSeconds:   3,
			FailureThreshold: failures,
		}
	}
	containerPort := func(name string, p int) corev1.ContainerPort {
		return corev1.ContainerPort{Name: name, ContainerPort: int32(p), Protocol: corev1.ProtocolTCP}
	}
	nonRoot := int64(65532)
	container := corev1.Container{
		Name:  "control-plane",
		Image: o.Image,
		Args: []string{
			"run",
			"--environment", "kubernetes",
			"--system-namespace", o.Namespace,
			"--data-dir", dataDir,
			// Remote clients of the plain listener are anonymous; only
			// loopback ones (kubectl port-forward) are admin, as in Kuma.
			"--api-address", listen(PortAPI),
			"--api-allow-insecure-remote",
			"--api-tls-address", listen(PortAPITLS),
			"--dp-server-address", listen(PortDPServer),
			"--webhook-address", listen(PortWebhook),
			"--log-format", "json",
		},
		Ports: []corev1.ContainerPort{
			containerPort("http-api", PortAPI),
			containerPort("https-api", PortAPITLS),
			containerPort("dp-server", PortDPServer),
			containerPort("webhook", PortWebhook),
		},
		// /readyz answers 503 until the identities are loaded; /healthz
		// while the process serves at all.
		ReadinessProbe: probe("/readyz", 5, 3),
		LivenessProbe:  probe("/healthz", 10, 6),
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			// --memory-limit auto reads this limit and keeps the Go heap
			// under it.
			Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr(true),
			RunAsUser:                &nonRoot,
			RunAsGroup:               &nonRoot,
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: dataDir}},
	}
	selector := map[string]string{"app.kubernetes.io/name": Name}
	return &appsv1.Deployment{TypeMeta: typeMeta("apps/v1", "Deployment"), ObjectMeta: meta, Spec: appsv1.DeploymentSpec{
		Replicas: &o.Replicas,
		Selector: &metav1.LabelSelector{MatchLabels: selector},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels()},
			Spec: corev1.PodSpec{
				ServiceAccountName: Name,
				SecurityContext: &corev1.PodSecurityContext{
					RunAsNonRoot:   ptr(true),
					FSGroup:        &nonRoot,
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				Containers: []corev1.Container{container},
				// The data directory holds the server certificates issued
				// from the CAs kept in the store: nothing to keep across pods.
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			},
		},
	}}
}

func ptr[T any](v T) *T { return &v }
