package podgen_test

import (
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"meshca/pkg/kube/podgen"
)

func pod(name string, lbls, ann map[string]string, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo", Labels: lbls, Annotations: ann},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}}}},
		Status: corev1.PodStatus{PodIP: ip, Phase: corev1.PodRunning},
	}
}

func service(name string, sel map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo"}, Spec: corev1.ServiceSpec{Selector: sel, Ports: ports}}
}

// TestDataplane: what Pod, Namespace and Services make, in Kuma's shapes.
func TestDataplane(t *testing.T) {
	enabled := map[string]string{podgen.InjectionKey: "enabled"}
	nsOn := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: enabled, Annotations: map[string]string{podgen.MeshKey: "ns-mesh"}}}
	web := service("web", map[string]string{"app": "web"},
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "admin", Port: 9901, AppProtocol: new("HTTP")},           // targetPort unset: the port itself
		corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},           // not TCP: skipped
		corev1.ServicePort{Name: "grpc", Port: 90, TargetPort: intstr.FromString("grpc")}) // not declared by the pod: skipped
	other := service("other", map[string]string{"app": "db"}, corev1.ServicePort{Port: 5432})

	p := pod("web-1", map[string]string{"app": "web", "version": "v1", "bad label": "x"}, nil, "10.0.0.5")
	dp, err := podgen.Dataplane(p, nsOn, []*corev1.Service{other, web})
	if err != nil || dp == nil {
		t.Fatalf("Dataplane = %v, %v", dp, err)
	}
	if dp.Name != "web-1.demo" || dp.Mesh != "ns-mesh" || dp.Networking.Address != "10.0.0.5" || len(dp.Networking.Inbound) != 2 {
		t.Fatalf("got %+v", dp)
	}
	in := dp.Networking.Inbound[0]
	want := map[string]string{"kuma.io/service": "web_demo_svc_80", "k8s.kuma.io/namespace": "demo", "k8s.kuma.io/service-name": "web",
		"k8s.kuma.io/service-port": "80", "kuma.io/protocol": "tcp", "app": "web", "version": "v1"}
	if in.Port != 8080 || !maps.Equal(in.Tags, want) {
		t.Errorf("inbound[0] = %d %v, want 8080 %v", in.Port, in.Tags, want)
	}
	if in := dp.Networking.Inbound[1]; in.Port != 9901 || in.Tags["kuma.io/service"] != "web_demo_svc_9901" || in.Tags["kuma.io/protocol"] != "http" {
		t.Errorf("inbound[1] = %d %v", in.Port, in.Tags)
	}

	// The pod's own annotation names the mesh; without any, "default".
	p.Annotations = map[string]string{podgen.MeshKey: "pod-mesh"}
	if dp, _ := podgen.Dataplane(p, nsOn, []*corev1.Service{web}); dp == nil || dp.Mesh != "pod-mesh" {
		t.Errorf("mesh with pod annotation = %+v", dp)
	}
	if dp, _ := podgen.Dataplane(pod("web-1", map[string]string{"app": "web", podgen.InjectionKey: "true"}, nil, "10.0.0.5"), nil, []*corev1.Service{web}); dp == nil || dp.Mesh != "default" {
		t.Errorf("mesh with no annotation = %+v", dp)
	}

	none := map[string]struct {
		pod  *corev1.Pod
		ns   *corev1.Namespace
		svcs []*corev1.Service
	}{
		"no injection":                        {pod("a", map[string]string{"app": "web"}, nil, "10.0.0.5"), nil, []*corev1.Service{web}},
		"pod disables what namespace enables": {pod("a", map[string]string{"app": "web", podgen.InjectionKey: "disabled"}, nil, "10.0.0.5"), nsOn, []*corev1.Service{web}},
		"no IP yet":                           {pod("a", map[string]string{"app": "web"}, nil, ""), nsOn, []*corev1.Service{web}},
		"no Service selects it":               {pod("a", map[string]string{"app": "api"}, nil, "10.0.0.5"), nsOn, []*corev1.Service{web, other}},
	}
	for name, c := range none {
		if dp, err := podgen.Dataplane(c.pod, c.ns, c.svcs); dp != nil || err != nil {
			t.Errorf("%s: Dataplane = %+v, %v; want none", name, dp, err)
		}
	}
}
