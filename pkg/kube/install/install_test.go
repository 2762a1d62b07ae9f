package install_test

import (
	"bytes"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"meshca/internal/kubetest"
	"meshca/pkg/kube/admission"
	"meshca/pkg/kube/install"
	"meshca/pkg/meshctl"
)

// allowed is every permission the control plane has, as "verb group/resource
// [name] in namespace" ("" namespace: cluster-wide). The ClusterRole and
// Role must hold these and nothing more: adding a verb means adding it here,
// with the code that uses it.
var allowed = []string{
	"get kuma.io/meshes", "list kuma.io/meshes", "watch kuma.io/meshes", "create kuma.io/meshes", "update kuma.io/meshes", "delete kuma.io/meshes",
	"get kuma.io/dataplanes", "list kuma.io/dataplanes", "watch kuma.io/dataplanes", "create kuma.io/dataplanes", "update kuma.io/dataplanes", "delete kuma.io/dataplanes",
	"get kuma.io/accessroles", "list kuma.io/accessroles", "watch kuma.io/accessroles", "create kuma.io/accessroles", "update kuma.io/accessroles", "delete kuma.io/accessroles",
	"get kuma.io/accessrolebindings", "list kuma.io/accessrolebindings", "watch kuma.io/accessrolebindings", "create kuma.io/accessrolebindings", "update kuma.io/accessrolebindings", "delete kuma.io/accessrolebindings",
	"create authentication.k8s.io/tokenreviews",
	"get admissionregistration.k8s.io/validatingwebhookconfigurations meshca-validating-webhook-configuration",
	"update admissionregistration.k8s.io/validatingwebhookconfigurations meshca-validating-webhook-configuration",
	"get cert-manager.io/clusterissuers",
	"get /pods", "list /pods", "watch /pods", "get /services", "list /services", "watch /services",
	"get /namespaces", "list /namespaces", "watch /namespaces",
	"get /secrets in NS", "list /secrets in NS", "watch /secrets in NS", "create /secrets in NS", "update /secrets in NS", "delete /secrets in NS",
	"get coordination.k8s.io/leases in NS", "list coordination.k8s.io/leases in NS", "create coordination.k8s.io/leases in NS",
	"update coordination.k8s.io/leases in NS", "patch coordination.k8s.io/leases in NS", "delete coordination.k8s.io/leases in NS",
	"get cert-manager.io/certificaterequests in NS", "watch cert-manager.io/certificaterequests in NS",
	"create cert-manager.io/certificaterequests in NS", "delete cert-manager.io/certificaterequests in NS",
	"get cert-manager.io/issuers in NS",
}

func permissions(rules []rbacv1.PolicyRule, ns string) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					p := v + " " + g + "/" + res
					if len(r.ResourceNames) > 0 {
						p += " " + strings.Join(r.ResourceNames, ",")
					}
					if ns != "" {
						p += " in " + ns
					}
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// TestRBACHoldsOnlyListedVerbs: the permissions the manifests grant are
// exactly the listed ones; no wildcard anywhere.
func TestRBACHoldsOnlyListedVerbs(t *testing.T) {
	got := append(permissions(install.ClusterRules(), ""), permissions(install.NamespaceRules(), "NS")...)
	slices.Sort(got)
	want := slices.Clone(allowed)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("permissions:\n got %q\nwant %q", got, want)
	}
	for _, p := range got {
		if strings.Contains(p, "*") {
			t.Errorf("wildcard: %s", p)
		}
	}
	// And the manifest carries those rules, in a Role for the system
	// namespace (no access to Secrets elsewhere).
	objs, err := install.Objects(install.Options{Namespace: "mesh-sys"})
	if err != nil {
		t.Fatal(err)
	}
	var cluster, ns []rbacv1.PolicyRule
	for _, o := range objs {
		switch r := o.(type) {
		case *rbacv1.ClusterRole:
			cluster = r.Rules
		case *rbacv1.Role:
			if r.Namespace != "mesh-sys" {
				t.Errorf("Role in %q", r.Namespace)
			}
			ns = r.Rules
		}
	}
	if fmt.Sprint(cluster) != fmt.Sprint(install.ClusterRules()) || fmt.Sprint(ns) != fmt.Sprint(install.NamespaceRules()) {
		t.Errorf("manifest rules differ:\n%v\n%v", cluster, ns)
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []install.Options{{Namespace: "Bad_NS"}, {Replicas: -1}} {
		if _, err := install.Manifest(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	b, err := install.Manifest(install.Options{Namespace: "other", Image: "registry.example/meshca-cp:1.2.3", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"image: registry.example/meshca-cp:1.2.3", "replicas: 3", "- --system-namespace\n        - other\n", "kubernetes.io/metadata.name: other"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("manifest lacks %q", want)
		}
	}
	if bytes.Contains(b, []byte("meshca-system")) {
		t.Error("manifest still names meshca-system")
	}
}

// TestInstallOnAPIServer applies what `meshctl install control-plane`
// prints with kubectl to a real API server: every object is created, a
// second apply changes nothing, the ServiceAccount may do what the control
// plane does and no more, and the control plane's registration of its CA
// (as that ServiceAccount) survives a later apply.
func TestInstallOnAPIServer(t *testing.T) {
	srv := kubetest.Start(t)
	kubectl := srv.Kubectl(t)
	ctx := t.Context()
	var manifest, errb bytes.Buffer
	if code := meshctl.Main(ctx, meshctl.Config{Stdout: &manifest, Stderr: &errb, Getenv: func(string) string { return "" }},
		[]string{"install", "control-plane", "--namespace", "meshca-system"}); code != 0 {
		t.Fatalf("meshctl install control-plane: exit %d: %s", code, errb.String())
	}
	run := func(stdin []byte, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", srv.Kubeconfig}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run(manifest.Bytes(), "apply", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	objs, err := install.Objects(install.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != len(objs) || strings.Count(out, " created") != len(objs) {
		t.Errorf("kubectl apply created %d lines for %d objects:\n%s", n, len(objs), out)
	}
	// Every object is there, read back by kind and name.
	for _, doc := range strings.Split(manifest.String(), "---\n")[1:] {
		var o struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatal(err)
		}
		args := []string{"get", o.Kind, o.Metadata.Name, "-o", "name"}
		if o.Metadata.Namespace != "" {
			args = append(args, "-n", o.Metadata.Namespace)
		}
		if out, err := run(nil, args...); err != nil {
			t.Errorf("%s %s: %v\n%s", o.Kind, o.Metadata.Name, err, out)
		}
	}

	again := func() {
		t.Helper()
		out, err := run(manifest.Bytes(), "apply", "-f", "-")
		if err != nil {
			t.Fatalf("second kubectl apply: %v\n%s", err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasSuffix(line, " unchanged") {
				t.Errorf("second apply changed something: %s", line)
			}
		}
	}
	again()

	// The ServiceAccount's permissions, asked of the API server's RBAC.
	sa := "system:serviceaccount:meshca-system:" + install.Name
	canI := func(want bool, args ...string) {
		t.Helper()
		// stdout only: kubectl warns on stderr about scopes.
		out, _ := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", srv.Kubeconfig, "auth", "can-i", "--as", sa}, args...)...).Output()
		if got := strings.TrimSpace(string(out)) == "yes"; got != want {
			t.Errorf("can-i %s: %q, want %v", strings.Join(args, " "), strings.TrimSpace(string(out)), want)
		}
	}
	canI(true, "watch", "meshes.kuma.io")
	canI(true, "create", "dataplanes.kuma.io", "-n", "default")
	canI(true, "delete", "secrets", "-n", "meshca-system")
	canI(true, "update", "leases.coordination.k8s.io", "-n", "meshca-system")
	canI(true, "create", "tokenreviews.authentication.k8s.io")
	canI(true, "update", "validatingwebhookconfigurations/"+admission.ConfigurationName)
	canI(false, "patch", "validatingwebhookconfigurations/"+admission.ConfigurationName)
	canI(false, "get", "secrets", "-n", "default")
	canI(false, "get", "secrets", "-n", "kube-system")
	canI(false, "update", "leases.coordination.k8s.io", "-n", "kube-system")
	canI(false, "update", "validatingwebhookconfigurations/another")
	canI(false, "delete", "validatingwebhookconfigurations/"+admission.ConfigurationName)
	canI(false, "create", "pods", "-n", "meshca-system")
	canI(true, "watch", "pods")    // the Dataplanes generated from Pods
	canI(true, "list", "services") // select their inbounds
	canI(true, "list", "namespaces")
	canI(false, "update", "pods", "-n", "default")
	canI(false, "delete", "namespaces")

	// The control plane, as its ServiceAccount, puts its CA into the
	// configuration; applying the manifest again leaves it there.
	asSA := rest.CopyConfig(srv.Config)
	asSA.Impersonate = rest.ImpersonationConfig{UserName: sa}
	dyn, err := dynamic.NewForConfig(asSA)
	if err != nil {
		t.Fatal(err)
	}
	if who, err := admission.WhoAmI(ctx, dyn); err != nil || who != sa {
		t.Errorf("WhoAmI as the ServiceAccount: %q, %v", who, err)
	}
	caPEM := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	vwc := admission.Configuration("meshca-system", admission.Target{ServiceNamespace: "meshca-system", ServiceName: install.Name, ServicePort: install.ServicePortHook}, caPEM)
	if err := admission.Register(ctx, dyn, vwc); err != nil {
		t.Fatalf("register as %s: %v", sa, err)
	}
	again()
	admin, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	got, err := admin.Resource(schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingwebhookconfigurations"}).
		Get(ctx, admission.ConfigurationName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hooks, _, _ := unstructured.NestedSlice(got.Object, "webhooks")
	if len(hooks) != 2 {
		t.Fatalf("webhooks: %v", hooks)
	}
	for _, h := range hooks {
		bundle, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "caBundle")
		if bundle == "" {
			t.Errorf("webhook %v lost its caBundle", h.(map[string]any)["name"])
		}
	}
}
