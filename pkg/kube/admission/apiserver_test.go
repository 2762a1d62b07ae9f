package admission_test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"meshca/internal/kubetest"
	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/controlplane"
	"meshca/pkg/datasource"
	"meshca/pkg/kube/admission"
	"meshca/pkg/resources"
	"meshca/pkg/sds"
	"meshca/pkg/store"
	"meshca/pkg/store/kube"
	"meshca/pkg/store/memory"
)

const systemNamespace = "meshca-system"

// seedKeyFile is the file the seed's Mesh reads its AWS secret key from.
const seedKeyFile = "/tmp/accesss_key.txt"

// webhook serves the admission handler over TLS on a loopback port with a
// certificate of a CA made for the test, and returns its URL and that CA.
func webhook(t testing.TB, h http.Handler) (url string, caPEM []byte) {
	t.Helper()
	files := sds.ServerFiles{CA: "ca.pem", CAKey: "ca.key", Cert: "webhook.pem", CertKey: "webhook.key", Name: "meshca admission webhook"}
	conf, caPEM, err := sds.LoadOrCreateTLS(files, t.TempDir(), "", "", nil, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(tls.NewListener(lis, conf)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + lis.Addr().String(), caPEM
}

// newManager is the resource manager the API uses, over a memory store.
func newManager(t testing.TB) *resources.Manager {
	t.Helper()
	return newManagerOn(t, memory.New())
}

// newManagerOn is the resource manager the API uses, over st.
func newManagerOn(t testing.TB, st store.Store) *resources.Manager {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	reg, err := ca.NewRegistry(ca.Deps{Store: st, Sources: datasource.New(st), Logger: logger, Now: time.Now}, controlplane.Backends())
	if err != nil {
		t.Fatal(err)
	}
	return resources.NewManager(st, reg, resources.Options{Logger: logger})
}

// TestWebhookOnAPIServer registers the webhook with a real kube-apiserver
// and drives it with the real kubectl: invalid kuma.io resources and meshca
// Secrets are refused with the API's field paths, the seed's Kubernetes
// Mesh is accepted, and a Secret the Mesh uses cannot be deleted.
//
// The manager's store is the control plane's on Kubernetes (pkg/store/kube),
// which reads what kubectl applied through its informers.
func TestWebhookOnAPIServer(t *testing.T) {
	srv := kubetest.Start(t)
	kubectl := srv.Kubectl(t)
	ctx := t.Context()

	srv.Prepare(t, systemNamespace)

	st, err := kube.Open(ctx, srv.Config, kube.Options{Namespace: systemNamespace, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mgr := newManagerOn(t, st)
	dyn, err := dynamic.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	url, caPEM := webhook(t, admission.NewHandler(mgr, admission.Options{SystemNamespace: systemNamespace, MeshExists: admission.LiveMeshExists(dyn)}))
	if err := admission.Register(ctx, dyn, admission.Configuration(systemNamespace, admission.Target{URL: url}, caPEM)); err != nil {
		t.Fatal(err)
	}

	run := func(stdin string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", srv.Kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// apply applies a manifest that must be accepted, and waits until the
	// store's informers show every object of it as applied.
	apply := func(manifest string) {
		t.Helper()
		out, err := run(manifest, "apply", "-f", "-")
		if err != nil {
			t.Fatalf("kubectl apply refused a valid manifest: %v\n%s\n%s", err, out, manifest)
		}
		for _, doc := range strings.Split(manifest, "---\n") {
			var o struct {
				Metadata struct{ Namespace string } `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatal(err)
			}
			r, _, err := api.DecodeOne([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			meta := r.GetMeta()
			if meta.Type == api.TypeDataplane {
				meta.Name += "." + o.Metadata.Namespace // the store's name of it
			}
			want, err := api.MarshalSpec(r)
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				got, err := mgr.Get(ctx, meta.Type, meta.Mesh, meta.Name)
				if err == nil {
					if spec, _ := api.MarshalSpec(got); bytes.Equal(spec, want) {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("the store never showed %s %q as applied: %v", meta.Type, meta.Name, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	// refused applies a manifest that must be refused with every want in
	// kubectl's output.
	refused := func(manifest string, want ...string) {
		t.Helper()
		out, err := run(manifest, "apply", "-f", "-")
		if err == nil {
			t.Fatalf("kubectl apply accepted:\n%s\n%s", manifest, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("kubectl output lacks %q:\n%s", w, out)
			}
		}
	}

	// The webhook has been waited for by nothing: the API server reads the
	// new configuration within a moment. Until then a bad Mesh could pass,
	// so wait until one is refused.
	bad := "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: bad}\nspec: {mtls: {backends: [{name: ca-1, type: nope}]}}\n"
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := run(bad, "apply", "-f", "-")
		if err != nil && strings.Contains(out, `The Mesh "bad" is invalid`) {
			if !strings.Contains(out, `spec.mtls.backends[0].type`) {
				t.Errorf("refusal does not name spec.mtls.backends[0].type:\n%s", out)
			}
			break
		}
		if err == nil {
			_, _ = run("", "delete", "mesh", "bad")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook never refused a bad Mesh: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The seed's order: an empty Mesh, its Secrets, then the Mesh that
	// uses them.
	if old, err := os.ReadFile(seedKeyFile); err == nil {
		t.Cleanup(func() { _ = os.WriteFile(seedKeyFile, old, 0o600) })
	} else if errors.Is(err, os.ErrNotExist) {
		t.Cleanup(func() { os.Remove(seedKeyFile) })
	}
	if err := os.WriteFile(seedKeyFile, []byte("secret-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	apply("apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n")
	secret := func(name, value string) string {
		return "apiVersion: v1\nkind: Secret\ntype: system.kuma.io/secret\nmetadata: {name: " + name + ", namespace: " + systemNamespace +
			", labels: {kuma.io/mesh: default}}\ndata: {value: " + base64.StdEncoding.EncodeToString([]byte(value)) + "}\n"
	}
	apply(secret("sec-1", string(caPEM)) + "---\n" + secret("sec-2", "AKIDFROMSEC2") + "---\n" + secret("sec-3", "unused"))

	t.Run("invalid acmpca Mesh refused with the field path", func(t *testing.T) {
		refused(`apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: acmpca-1
    backends:
    - name: acmpca-1
      type: acmpca
      conf:
        arn: "arn:aws:acm-pca:region:account:certificate-authority/12345678-1234-1234-1234-123456789012"
        caCertt:
          secret: sec-1
`, "spec.mtls.backends[0].conf.caCertt", "unknown field")
		refused(`apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  mtls:
    enabledBackend: acmpca-1
    backends:
    - name: acmpca-1
      type: acmpca
      conf: {arn: "arn:aws:acm-pca:region:account:certificate-authority/1", caCert: {secret: no-such}}
`, "spec.mtls.backends[0].conf.caCert.secret", `secret "no-such" not found in mesh "default"`)
	})

	t.Run("the seed's Kubernetes Mesh is accepted", func(t *testing.T) {
		seed, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "acmpca", "mesh-kubernetes.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		apply(string(seed))
		out, err := run("", "get", "mesh", "default", "-o", "jsonpath={.spec.mtls.enabledBackend}")
		if err != nil || out != "acmpca-1" {
			t.Errorf("kubectl get mesh default: %v %q", err, out)
		}
	})

	t.Run("a Secret in use cannot be deleted", func(t *testing.T) {
		out, err := run("", "delete", "secret", "sec-1", "-n", systemNamespace)
		if err == nil {
			t.Fatalf("kubectl delete of a Secret in use succeeded:\n%s", out)
		}
		if !strings.Contains(out, `secret "sec-1" is used by backend "acmpca-1" of mesh "default"`) {
			t.Errorf("kubectl output:\n%s", out)
		}
		if _, err := run("", "get", "secret", "sec-1", "-n", systemNamespace); err != nil {
			t.Errorf("sec-1 is gone: %v", err)
		}
		// One nothing uses goes.
		if out, err := run("", "delete", "secret", "sec-3", "-n", systemNamespace); err != nil {
			t.Errorf("kubectl delete of an unused Secret: %v\n%s", err, out)
		}
	})

	t.Run("invalid Secrets, Dataplanes and access resources refused", func(t *testing.T) {
		refused("apiVersion: v1\nkind: Secret\ntype: system.kuma.io/secret\nmetadata: {name: sec-4, namespace: "+systemNamespace+
			", labels: {kuma.io/mesh: default}}\ndata: {other: aGVsbG8=}\n", "data.other", "unknown key")
		refused("apiVersion: v1\nkind: Secret\ntype: system.kuma.io/secret\nmetadata: {name: sec-5, namespace: "+systemNamespace+
			", labels: {kuma.io/mesh: nomesh}}\ndata: {value: aGVsbG8=}\n", `mesh "nomesh" does not exist`)
		refused("apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: web-1, namespace: default}\nmesh: default\n"+
			"spec: {networking: {inbound: [{port: 8080, tags: {kuma.io/service: web}}]}}\n", "spec.networking.address", "must not be empty")
		refused("apiVersion: kuma.io/v1alpha1\nkind: AccessRole\nmetadata: {name: r}\nspec: {rules: [{access: [FLY]}]}\n",
			"spec.rules[0].access[0]", `unknown access "FLY"`)
		refused("apiVersion: kuma.io/v1alpha1\nkind: AccessRoleBinding\nmetadata: {name: b}\nspec: {subjects: [{type: robot, name: x}], roles: [r]}\n",
			"spec.subjects[0].type")
	})

	t.Run("other Secrets are not the webhook's", func(t *testing.T) {
		// An Opaque Secret with a key meshca would refuse, in the system
		// namespace, and a Kuma-typed one elsewhere.
		for _, m := range []string{
			"apiVersion: v1\nkind: Secret\ntype: Opaque\nmetadata: {name: other, namespace: " + systemNamespace + "}\ndata: {other: aGVsbG8=}\n",
			"apiVersion: v1\nkind: Secret\ntype: system.kuma.io/secret\nmetadata: {name: other, namespace: default}\ndata: {other: aGVsbG8=}\n",
		} {
			if out, err := run(m, "apply", "-f", "-"); err != nil {
				t.Errorf("refused: %v\n%s", err, out)
			}
		}
	})

	t.Run("a Mesh with Dataplanes cannot be deleted", func(t *testing.T) {
		apply("apiVersion: kuma.io/v1alpha1\nkind: Dataplane\nmetadata: {name: web-1, namespace: default}\nmesh: default\n" +
			"spec: {networking: {address: 10.0.0.1, inbound: [{port: 8080, tags: {kuma.io/service: web}}]}}\n")
		out, err := run("", "delete", "mesh", "default")
		if err == nil || !strings.Contains(out, `mesh "default" still has 1 dataplane(s)`) {
			t.Errorf("kubectl delete mesh: %v\n%s", err, out)
		}
	})
}
