package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKubernetesGeneratedDataplane: the real meshca-cp generates the
// Dataplane of an injected pod from the pod and its Service, as Kuma does;
// a meshca-dp with that pod's bound ServiceAccount token (what kubelet
// projects into it) is certified as <pod>.<namespace>; the Dataplane goes
// with the pod, and one of a Mesh applied later is generated once the Mesh
// exists. Of two replicas only the leader generates, and the other
// takes over when it stops.
func TestKubernetesGeneratedDataplane(t *testing.T) {
	t.Parallel()
	k := startKube(t)
	k.must(t, "create", "namespace", "meshca-system")
	k.must(t, "create", "namespace", "demo")
	k.must(t, "create", "serviceaccount", "web", "-n", "demo")
	k.must(t, "label", "namespace", "demo", "kuma.io/sidecar-injection=enabled")
	// Two replicas behind one webhook Service, so the generated Dataplanes
	// pass meshca's admission as any other: the first leads, and only the
	// leader generates.
	hooks := []string{freePort(t), freePort(t)}
	hookURL := "https://" + serviceProxy(t, hooks...)
	lease := []string{"--leader-lease-duration", haLease.String(), "--leader-renew-interval", haRenew.String()}
	cp := startKubeCP(t, k, hooks[0], hookURL, nil, lease...)
	waitFor(t, 10*time.Second, "the first replica leads", func() bool { return cp.metric(t, "meshca_leader") == 1 })
	follower := startKubeCP(t, k, hooks[1], hookURL, nil, lease...)

	k.apply(t, `apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: ca-1
    backends:
    - name: ca-1
      type: builtin
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: http
`)
	k.runPod(t, "web-1", "", "127.0.0.1")

	const shape = `jsonpath={.mesh} {.spec.networking.address} {.spec.networking.inbound[0].port} {.spec.networking.inbound[0].tags.kuma\.io/service} {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}`
	var got string
	waitFor(t, 30*time.Second, "the generated Dataplane web-1 in demo", func() bool {
		got, _ = k.run(nil, "", "get", "dataplane", "web-1", "-n", "demo", "-o", shape)
		return got == "default 127.0.0.1 9001 web_demo_svc_80 Pod/web-1"
	})

	// A pod of a mesh that does not exist yet: admission refuses its
	// Dataplane until the Mesh is applied, then it is generated.
	k.runPod(t, "api-1", "later", "127.0.0.3")
	waitFor(t, 30*time.Second, "admission to refuse api-1's Dataplane", func() bool {
		return strings.Contains(cp.out.String(), `mesh \"later\" does not exist`) || strings.Contains(cp.out.String(), `mesh "later" does not exist`)
	})
	k.apply(t, "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: later\n")
	waitFor(t, 30*time.Second, "api-1's Dataplane once its Mesh exists", func() bool {
		got, _ = k.run(nil, "", "get", "dataplane", "api-1", "-n", "demo", "-o", shape)
		return got == "later 127.0.0.3 9001 web_demo_svc_80 Pod/api-1"
	})
	k.must(t, "delete", "pod", "api-1", "-n", "demo")

	// The pod's own token, bound to it, serves the Dataplane named after it.
	dir := t.TempDir()
	tok := strings.TrimSpace(k.must(t, "create", "token", "web", "-n", "demo", "--bound-object-kind", "Pod", "--bound-object-name", "web-1"))
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	a := &agent{proc: start(t, "meshca-dp", nil, "run", "--cp-address", cp.dp, "--cp-ca-cert", filepath.Join(cp.dataDir, "dp-server-ca.pem"),
		"--token-file", tokFile, "--mesh", "default", "--name", "web-1.demo", "--out", out), out: out}
	if leaf := a.waitCert(t); spiffeOf(leaf) != "spiffe://default/web_demo_svc_80" {
		t.Errorf("certificate of web-1.demo: %q, want spiffe://default/web_demo_svc_80", spiffeOf(leaf))
	}

	// The pod goes, and its Dataplane with it.
	k.must(t, "delete", "pod", "web-1", "-n", "demo")
	waitFor(t, 30*time.Second, "the Dataplane deleted with its pod", func() bool {
		out, err := k.run(nil, "", "get", "dataplanes", "-n", "demo", "-o", "name")
		return err == nil && strings.TrimSpace(out) == ""
	})

	// The follower generated nothing; once the leader stops, it takes over
	// and generates the next pod's Dataplane.
	if !strings.Contains(cp.out.String(), "Dataplane generated") {
		t.Errorf("the leader's log does not say it generated the Dataplane:\n%s", cp.out.String())
	}
	if out := follower.out.String(); strings.Contains(out, "Dataplanes from Pods") || strings.Contains(out, "Dataplane generated") {
		t.Errorf("the follower generated Dataplanes:\n%s", out)
	}
	cp.stop()
	waitFor(t, 10*time.Second, "the follower leads", func() bool { return follower.metric(t, "meshca_leader") == 1 })
	k.runPod(t, "web-2", "", "127.0.0.2")
	waitFor(t, 30*time.Second, "the new leader's Dataplane for web-2", func() bool {
		got, _ = k.run(nil, "", "get", "dataplane", "web-2", "-n", "demo", "-o", shape)
		return got == "default 127.0.0.2 9001 web_demo_svc_80 Pod/web-2"
	})
}

// runPod creates the pod name in namespace demo (label app=web, the
// ServiceAccount web, a container port named http 9001; annotated with
// kuma.io/mesh when mesh is given) and, since no kubelet runs here, gives
// it ip and the Running phase through the status subresource as a kubelet
// would.
func (k *kube) runPod(t *testing.T, name, mesh, ip string) {
	t.Helper()
	annotations := ""
	if mesh != "" {
		annotations = "\n  annotations:\n    kuma.io/mesh: " + mesh
	}
	k.apply(t, `apiVersion: v1
kind: Pod
metadata:
  name: `+name+`
  namespace: demo
  labels:
    app: web`+annotations+`
spec:
  serviceAccountName: web
  containers:
  - name: app
    image: app
    ports:
    - name: http
      containerPort: 9001
`)
	k.must(t, "patch", "pod", name, "-n", "demo", "--subresource=status", "--type=merge",
		"-p", `{"status":{"phase":"Running","podIP":"`+ip+`","podIPs":[{"ip":"`+ip+`"}]}}`)
}
