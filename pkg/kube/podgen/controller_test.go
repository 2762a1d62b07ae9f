package podgen_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"meshca/internal/kubetest"
	"meshca/pkg/kube/podgen"
)

var dataplanes = schema.GroupVersionResource{Group: "kuma.io", Version: "v1alpha1", Resource: "dataplanes"}

type cluster struct {
	client kubernetes.Interface
	dyn    dynamic.Interface
}

// createPod creates a pod as a Deployment would and, when ip is set,
// gives it that IP through the status subresource, as kubelet does (no
// kubelet runs beside the test API server).
func (c cluster) createPod(t *testing.T, name string, lbls map[string]string, ip string) *corev1.Pod {
	t.Helper()
	p, err := c.client.CoreV1().Pods("demo").Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip != "" {
		p = c.setIP(t, p, ip)
	}
	return p
}

func (c cluster) setIP(t *testing.T, p *corev1.Pod, ip string) *corev1.Pod {
	t.Helper()
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	p, err := c.client.CoreV1().Pods(p.Namespace).UpdateStatus(t.Context(), p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitDataplane waits until the Dataplane name in demo satisfies ok (nil:
// it is absent), and returns it.
func (c cluster) waitDataplane(t *testing.T, name string, ok func(*unstructured.Unstructured) bool) *unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var last *unstructured.Unstructured
	for {
		dp, err := c.dyn.Resource(dataplanes).Namespace("demo").Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			dp = nil
		case err != nil:
			t.Fatal(err)
		}
		last = dp
		if ok(dp) {
			return dp
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Dataplane %s: condition not met; last seen: %v", name, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func inbounds(dp *unstructured.Unstructured) []any {
	in, _, _ := unstructured.NestedSlice(dp.Object, "spec", "networking", "inbound")
	return in
}

func inbound(dp *unstructured.Unstructured) (port int64, tags map[string]string) {
	in := inbounds(dp)
	if len(in) == 0 {
		return 0, nil
	}
	m := in[0].(map[string]any)
	port, _, _ = unstructured.NestedInt64(m, "port")
	tags, _, _ = unstructured.NestedStringMap(m, "tags")
	return port, tags
}

// TestController runs the generator against a real API server: the
// Dataplanes of injected pods follow their IP, Services and deletion;
// other pods get none and hand-made Dataplanes stay as they are.
func TestController(t *testing.T) {
	srv := kubetest.Start(t)
	srv.Prepare(t, "demo")
	client := kubernetes.NewForConfigOrDie(srv.Config)
	dyn := dynamic.NewForConfigOrDie(srv.Config)
	c := cluster{client, dyn}

	// A hand-made Dataplane named like an injected pod the Service selects.
	manual := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1", "kind": "Dataplane", "mesh": "default",
		"metadata": map[string]any{"name": "manual", "namespace": "demo"},
		"spec": map[string]any{"networking": map[string]any{"address": "192.168.0.1",
			"inbound": []any{map[string]any{"port": int64(1234), "tags": map[string]any{"kuma.io/service": "by-hand"}}}}},
	}}
	manual, err := dyn.Resource(dataplanes).Namespace("demo").Create(t.Context(), manual, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	gen := podgen.New(client, dyn, podgen.Options{Workers: 1, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	go func() { done <- gen.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	injected := map[string]string{"app": "web", "version": "v1", podgen.InjectionKey: "enabled"}
	web := c.createPod(t, "web-1", injected, "")                           // no IP yet
	c.createPod(t, "plain-1", map[string]string{"app": "web"}, "10.0.0.7") // no injection
	c.createPod(t, "manual", injected, "10.0.0.8")                         // its Dataplane is hand-made
	if _, err := client.CoreV1().Services("demo").Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A canary pod: with one worker and a FIFO queue, once its Dataplane is
	// there the pods queued before it were reconciled.
	c.createPod(t, "canary", injected, "10.0.0.9")
	c.waitDataplane(t, "canary", func(dp *unstructured.Unstructured) bool { return dp != nil })
	for _, name := range []string{"web-1", "plain-1"} {
		if _, err := dyn.Resource(dataplanes).Namespace("demo").Get(t.Context(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Dataplane %s: %v, want none (no IP yet / no injection)", name, err)
		}
	}

	// The kubelet gives web-1 its IP: its Dataplane appears.
	web = c.setIP(t, web, "10.0.0.5")
	dp := c.waitDataplane(t, "web-1", func(dp *unstructured.Unstructured) bool { return dp != nil })
	mesh, _, _ := unstructured.NestedString(dp.Object, "mesh")
	addr, _, _ := unstructured.NestedString(dp.Object, "spec", "networking", "address")
	port, tags := inbound(dp)
	if mesh != "default" || addr != "10.0.0.5" || len(inbounds(dp)) != 1 || port != 8080 ||
		tags["kuma.io/service"] != "web_demo_svc_80" || tags["k8s.kuma.io/namespace"] != "demo" || tags["app"] != "web" || tags["version"] != "v1" || tags["kuma.io/protocol"] != "tcp" {
		t.Fatalf("Dataplane web-1: mesh %q address %q inbounds %v", mesh, addr, inbounds(dp))
	}
	if o := dp.GetOwnerReferences(); len(o) != 1 || o[0].Kind != "Pod" || o[0].Name != "web-1" || o[0].UID != web.UID || o[0].Controller == nil || !*o[0].Controller {
		t.Errorf("ownerReferences = %+v, want the pod web-1", o)
	}

	// The Service's port changes: the inbound follows.
	svc, err := client.CoreV1().Services("demo").Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports[0].Port = 81
	if _, err := client.CoreV1().Services("demo").Update(t.Context(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitDataplane(t, "web-1", func(dp *unstructured.Unstructured) bool {
		_, tags := inbound(dp)
		return dp != nil && tags["kuma.io/service"] == "web_demo_svc_81" && tags["k8s.kuma.io/service-port"] == "81"
	})

	// Deleted by hand, a generated Dataplane comes back.
	if err := dyn.Resource(dataplanes).Namespace("demo").Delete(t.Context(), "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitDataplane(t, "web-1", func(dp *unstructured.Unstructured) bool {
		return dp != nil && dp.GetUID() != "" && len(inbounds(dp)) == 1
	})

	// Injection enabled on the namespace: plain-1 gets one, in the
	// namespace's mesh.
	ns, err := client.CoreV1().Namespaces().Get(t.Context(), "demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels[podgen.InjectionKey] = "enabled"
	ns.Annotations = map[string]string{podgen.MeshKey: "mesh-2"}
	if _, err := client.CoreV1().Namespaces().Update(t.Context(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitDataplane(t, "plain-1", func(dp *unstructured.Unstructured) bool {
		if dp == nil {
			return false
		}
		m, _, _ := unstructured.NestedString(dp.Object, "mesh")
		return m == "mesh-2"
	})

	// The pod goes: so does its Dataplane.
	if err := client.CoreV1().Pods("demo").Delete(t.Context(), "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitDataplane(t, "web-1", func(dp *unstructured.Unstructured) bool { return dp == nil })

	// The hand-made Dataplane was never written.
	got, err := dyn.Resource(dataplanes).Namespace("demo").Get(t.Context(), "manual", metav1.GetOptions{})
	if err != nil || got.GetResourceVersion() != manual.GetResourceVersion() {
		t.Errorf("hand-made Dataplane: %v, resourceVersion %s → %s; want untouched", err, manual.GetResourceVersion(), got.GetResourceVersion())
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
