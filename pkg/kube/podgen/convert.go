package podgen

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"meshca/pkg/api"
)

// Kuma's labels, annotations and tags on Kubernetes.
const (
	// InjectionKey, on a Pod or its Namespace (label or annotation),
	// enables ("enabled", "true") or disables ("disabled", "false") the
	// sidecar, and with it the Pod's Dataplane. The Pod's own setting wins
	// over its Namespace's.
	InjectionKey = "kuma.io/sidecar-injection"
	// MeshKey, an annotation (or label) of the Pod or its Namespace, names
	// the Dataplane's mesh.
	MeshKey = "kuma.io/mesh"
	// DefaultMesh is the mesh of a Pod that names none, as Kuma's.
	DefaultMesh = "default"

	TagNamespace   = "k8s.kuma.io/namespace"
	TagServiceName = "k8s.kuma.io/service-name"
	TagServicePort = "k8s.kuma.io/service-port"
	TagProtocol    = "kuma.io/protocol"

	// protocolAnnotationSuffix: a Service annotation
	// "<port>.service.kuma.io/protocol" sets the protocol of that port
	// when it has no appProtocol.
	protocolAnnotationSuffix = ".service.kuma.io/protocol"
	defaultProtocol          = "tcp"
)

// InjectionEnabled tells whether the Pod runs a sidecar: the Pod's label,
// then its annotation, then its Namespace's label and annotation, the
// first one set deciding.
func InjectionEnabled(pod *corev1.Pod, ns *corev1.Namespace) bool {
	sources := []map[string]string{pod.Labels, pod.Annotations}
	if ns != nil {
		sources = append(sources, ns.Labels, ns.Annotations)
	}
	for _, m := range sources {
		switch strings.ToLower(m[InjectionKey]) {
		case "enabled", "true":
			return true
		case "disabled", "false":
			return false
		}
	}
	return false
}

// MeshOf is the Pod's mesh: its kuma.io/mesh annotation or label, else its
// Namespace's, else DefaultMesh.
func MeshOf(pod *corev1.Pod, ns *corev1.Namespace) string {
	sources := []map[string]string{pod.Annotations, pod.Labels}
	if ns != nil {
		sources = append(sources, ns.Annotations, ns.Labels)
	}
	for _, m := range sources {
		if v := m[MeshKey]; v != "" {
			return v
		}
	}
	return DefaultMesh
}

// Selects tells whether the Service sends traffic to the Pod: same
// namespace, a non-empty selector matching the Pod's labels (a Service
// without selector or of type ExternalName selects no Pod).
func Selects(svc *corev1.Service, pod *corev1.Pod) bool {
	if svc.Namespace != pod.Namespace || len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	return labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels))
}

// ServiceTag is the kuma.io/service of a Service's port, as Kuma names it:
// <service>_<namespace>_svc_<port>.
func ServiceTag(svc *corev1.Service, port int32) string {
	return fmt.Sprintf("%s_%s_svc_%d", svc.Name, svc.Namespace, port)
}

// Dataplane is the Dataplane of the Pod: named <pod>.<namespace> (the
// custom resource <pod> in the Pod's namespace), at the Pod's IP, with one
// inbound per TCP port of each of the services that select it (others are
// ignored). It returns nil when the Pod should have none: injection not
// enabled, no IP yet, finished or being deleted, or no Service port to
// serve (a Dataplane needs an inbound). An error says what of the Pod or
// its Services makes an invalid Dataplane, naming the field.
func Dataplane(pod *corev1.Pod, ns *corev1.Namespace, services []*corev1.Service) (*api.Dataplane, error) {
	if !InjectionEnabled(pod, ns) || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil ||
		pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil, nil
	}
	svcs := slices.Clone(services)
	slices.SortFunc(svcs, func(a, b *corev1.Service) int { return cmp.Compare(a.Name, b.Name) })
	var inbounds []api.Inbound
	for _, svc := range svcs {
		if !Selects(svc, pod) {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue // the sidecar proxies TCP only, as Kuma's
			}
			target, ok := containerPort(pod, sp)
			if !ok {
				continue // a named targetPort the Pod does not declare
			}
			tags := podTags(pod)
			tags[api.ServiceTag] = ServiceTag(svc, sp.Port)
			tags[TagNamespace] = pod.Namespace
			tags[TagServiceName] = svc.Name
			tags[TagServicePort] = strconv.Itoa(int(sp.Port))
			tags[TagProtocol] = protocol(svc, sp)
			inbounds = append(inbounds, api.Inbound{Port: uint32(target), Tags: tags})
		}
	}
	if len(inbounds) == 0 {
		return nil, nil
	}
	dp := &api.Dataplane{
		Meta: api.Meta{Type: api.TypeDataplane, Mesh: MeshOf(pod, ns), Name: pod.Name + "." + pod.Namespace},
		DataplaneSpec: api.DataplaneSpec{Networking: api.Networking{
			Address: pod.Status.PodIP,
			Inbound: inbounds,
		}},
	}
	if err := dp.Validate(); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return dp, nil
}

// containerPort resolves a Service port's targetPort against the Pod: a
// number as it is (the port itself when unset), a name through the Pod's
// container ports.
func containerPort(pod *corev1.Pod, sp corev1.ServicePort) (int32, bool) {
	tp := sp.TargetPort
	if tp.StrVal == "" {
		if tp.IntVal == 0 {
			return sp.Port, true
		}
		return tp.IntVal, true
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == tp.StrVal && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
				return p.ContainerPort, true
			}
		}
	}
	return 0, false
}

// podTags are the Pod's labels that are valid Kuma tags (the others, and
// the injection switch, are left out rather than making the Dataplane
// invalid).
func podTags(pod *corev1.Pod) map[string]string {
	tags := make(map[string]string, len(pod.Labels)+5)
	for k, v := range maps.All(pod.Labels) {
		if k == InjectionKey || k == MeshKey || v == "" || !api.IsTagName(k) || !api.IsTagValue(v) {
			continue
		}
		tags[k] = v
	}
	return tags
}

// protocol is the port's appProtocol, else the Service's
// <port>.service.kuma.io/protocol annotation, else tcp.
func protocol(svc *corev1.Service, sp corev1.ServicePort) string {
	if sp.AppProtocol != nil && *sp.AppProtocol != "" && api.IsTagValue(*sp.AppProtocol) {
		return strings.ToLower(*sp.AppProtocol)
	}
	if p := svc.Annotations[strconv.Itoa(int(sp.Port))+protocolAnnotationSuffix]; p != "" && api.IsTagValue(p) {
		return strings.ToLower(p)
	}
	return defaultProtocol
}
