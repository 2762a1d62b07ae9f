package podgen_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"meshca/internal/kubetest"
	"meshca/pkg/kube/podgen"
)

// TestMeasureGeneration times, against a real API server, the generation of
// the Dataplanes of 1,000 injected pods selected by one Service, then their
// update when the Service's port changes. Not a check (it asserts nothing
// about time): run it by hand,
//
//	PODGEN_MEASURE=1 KUBEBUILDER_ASSETS=... go test -run TestMeasureGeneration -v ./pkg/kube/podgen
func TestMeasureGeneration(t *testing.T) {
	if os.Getenv("PODGEN_MEASURE") == "" {
		t.Skip("a measurement: set PODGEN_MEASURE=1 to run it")
	}
	srv := kubetest.Start(t)
	srv.Prepare(t, "demo")
	cfg := rest.CopyConfig(srv.Config)
	cfg.QPS, cfg.Burst = 1000, 2000
	client := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	const n = 1000
	if _, err := client.CoreV1().Services("demo").Create(t.Context(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p, err := client.CoreV1().Pods("demo").Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%d", i), Labels: map[string]string{"app": "web", podgen.InjectionKey: "enabled"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "a"}}}}, metav1.CreateOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			ip := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
			p.Status.PodIP, p.Status.PodIPs, p.Status.Phase = ip, []corev1.PodIP{{IP: ip}}, corev1.PodRunning
			if _, err := client.CoreV1().Pods("demo").UpdateStatus(t.Context(), p, metav1.UpdateOptions{}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- podgen.New(client, dyn, podgen.Options{}).Run(ctx) }()
	defer func() { cancel(); <-done }()
	for {
		l, err := dyn.Resource(dataplanes).Namespace("demo").List(t.Context(), metav1.ListOptions{})
		if err == nil && len(l.Items) == n {
			break
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatal("not done within 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d Dataplanes generated in %v", n, time.Since(start))
	// Service port change: all updated.
	svc, err := client.CoreV1().Services("demo").Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports[0].Port = 81
	start = time.Now()
	if _, err := client.CoreV1().Services("demo").Update(t.Context(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		l, err := dyn.Resource(dataplanes).Namespace("demo").List(t.Context(), metav1.ListOptions{})
		updated := 0
		if err == nil {
			for _, it := range l.Items {
				_, tags := inbound(&it)
				if tags["kuma.io/service"] == "web_demo_svc_81" {
					updated++
				}
			}
		}
		if updated == n {
			break
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatal("not done within 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d Dataplanes updated after a Service change in %v", n, time.Since(start))
}
