package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"meshca/pkg/kube/install"
)

// TestKubernetesAdmission runs the real meshca-cp with --environment
// kubernetes and its admission webhook (reached by URL: no kubelet runs the
// Service here) against a real API server, and the real kubectl: a valid
// Mesh and Dataplane pass the webhook and are certified (the builtin CA's
// root Secret, written by the control plane itself, passes it too), an
// invalid edit is refused with the field path and changes nothing, a Mesh
// with Dataplanes cannot be deleted, and with the control plane down
// kuma.io writes are refused (failurePolicy Fail).
func TestKubernetesAdmission(t *testing.T) {
	t.Parallel()
	k := startKube(t)
	k.must(t, "create", "namespace", "meshca-system")
	k.must(t, "create", "namespace", "demo")

	cp := startKubeCP(t, k, "", "", nil)

	// The API server reads the configuration the control plane registered
	// within a moment: until an invalid Mesh is refused, it may pass.
	k.awaitWebhook(t, "bad")

	mesh := `apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: ca-1
    backends:
    - name: ca-1
      type: builtin
      dpCert:
        rotation:
          expiration: EXPIRATION
`
	k.mustIn(t, strings.Replace(mesh, "EXPIRATION", "1d", 1)+`---
`+kubeWebDataplane, "apply", "-f", "-")
	// The control plane writes the builtin CA's root as a Kuma Secret,
	// through its own webhook.
	waitFor(t, 30*time.Second, "the builtin root Secret", func() bool {
		_, err := k.run(nil, "", "get", "secret", "-n", "meshca-system", "default.ca-builtin-cert-ca-1")
		return err == nil
	})
	a := startAgent(t, cp, "default", "web-1.demo", "web-1.demo")
	if leaf := a.waitCert(t); len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://default/web" {
		t.Fatalf("certificate URIs %v", leaf.URIs)
	}

	out, err := k.run(nil, strings.Replace(mesh, "EXPIRATION", "soon", 1), "apply", "-f", "-")
	if err == nil || !strings.Contains(out, `The Mesh "default" is invalid: spec.mtls.backends[0].dpCert.rotation.expiration`) {
		t.Errorf("an invalid edit: %v\n%s", err, out)
	}
	if got := k.must(t, "get", "mesh", "default", "-o", "jsonpath={.spec.mtls.backends[0].dpCert.rotation.expiration}"); got != "1d" {
		t.Errorf("the refused edit changed the Mesh: expiration %q", got)
	}
	out, err = k.run(nil, "", "delete", "mesh", "default")
	if err == nil || !strings.Contains(out, `mesh "default" still has 1 dataplane(s)`) {
		t.Errorf("kubectl delete of a Mesh with a Dataplane: %v\n%s", err, out)
	}

	// Fail closed: with no control plane to ask, nothing unvalidated goes in.
	cp.proc.stop()
	out, err = k.run(nil, "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: other}\n", "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "failed calling webhook") {
		t.Errorf("a Mesh applied with the control plane down: %v\n%s", err, out)
	}
}

// TestKubernetesInstalledRBAC: installed with `meshctl install
// control-plane` and run as the ServiceAccount it creates (impersonated: no
// kubelet runs the pod here), the control plane has every permission it
// needs and no more: it starts (store, leader Lease, webhook registration
// onto the installed configuration), certifies a kubectl-applied Mesh's
// Dataplane, its own writes pass the webhook unchecked (its
// ServiceAccount), and kubectl's invalid writes are still refused.
func TestKubernetesInstalledRBAC(t *testing.T) {
	t.Parallel()
	k := startKube(t)
	srv := k.srv
	manifest, err := install.Manifest(install.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := k.run(nil, string(manifest), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of the installation: %v\n%s", err, out)
	}
	if out, err := k.run(nil, "", "create", "namespace", "demo"); err != nil {
		t.Fatal(err, out)
	}

	// The admin's kubeconfig, impersonating the ServiceAccount.
	kc, err := clientcmd.LoadFromFile(srv.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	sa := "system:serviceaccount:" + install.DefaultNamespace + ":" + install.Name
	for _, ai := range kc.AuthInfos {
		ai.Impersonate = sa
	}
	asSA := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, asSA); err != nil {
		t.Fatal(err)
	}

	webhook := freePort(t)
	cp := &controlPlane{dataDir: t.TempDir(), api: freePort(t), dp: freePort(t), apiTLS: freePort(t),
		args: []string{"--environment", "kubernetes", "--kubeconfig", asSA, "--system-namespace", install.DefaultNamespace,
			"--webhook-address", webhook, "--webhook-url", "https://" + webhook, "--log-format", "json"}}
	cp.launch(t)

	k.awaitWebhook(t, "default")
	if out, err := k.run(nil, `apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls:
    enabledBackend: ca-1
    backends: [{name: ca-1, type: builtin}]
---
apiVersion: kuma.io/v1alpha1
kind: Dataplane
metadata: {name: web-1, namespace: demo}
mesh: default
spec: {networking: {address: 127.0.0.1, inbound: [{port: 9001, tags: {kuma.io/service: web}}]}}
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	a := startAgent(t, cp, "default", "web-1.demo", "web-1.demo")
	if leaf := a.waitCert(t); len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://default/web" {
		t.Fatalf("certificate URIs %v", leaf.URIs)
	}
	log := cp.proc.out.String()
	if !strings.Contains(log, `"exemptUser":"`+sa+`"`) {
		t.Errorf("the webhook does not know the control plane's own ServiceAccount; log:\n%s", log)
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"level":"ERROR"`) || (strings.Contains(strings.ToLower(line), "forbidden") && !strings.Contains(line, "CustomResourceDefinition")) {
			t.Errorf("meshca-cp as its ServiceAccount: %s", line)
		}
	}
}

// awaitWebhook waits until the API server sends kuma.io writes to the
// control plane's webhook (it reads the configuration the control plane
// registered within a moment; until then an invalid Mesh may pass, and is
// deleted again): an invalid Mesh named name is refused with its field path.
func (k *kube) awaitWebhook(t *testing.T, name string) {
	t.Helper()
	bad := "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: " + name + "}\nspec: {mtls: {enabledBackend: nope}}\n"
	waitFor(t, 30*time.Second, "an invalid Mesh refused", func() bool {
		out, err := k.run(nil, bad, "apply", "-f", "-")
		if err == nil {
			_, _ = k.run(nil, "", "delete", "mesh", name)
			return false
		}
		if !strings.Contains(out, `spec.mtls.enabledBackend: backend "nope" is not among mtls.backends`) {
			t.Fatalf("refusal:\n%s", out)
		}
		return true
	})
}
