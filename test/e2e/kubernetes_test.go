package e2e

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshca/internal/kubetest"
)

// kube is a test API server driven through the real kubectl.
type kube struct {
	srv     *kubetest.Server
	kubectl string
}

func startKube(t *testing.T) *kube {
	t.Helper()
	srv := kubetest.Start(t)
	return &kube{srv: srv, kubectl: srv.Kubectl(t)}
}

// run runs kubectl with env added and stdin, and returns its combined
// output.
func (k *kube) run(env []string, stdin string, args ...string) (string, error) {
	cmd := exec.Command(k.kubectl, append([]string{"--kubeconfig", k.srv.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (k *kube) must(t *testing.T, args ...string) string {
	t.Helper()
	return k.mustIn(t, "", args...)
}

// mustIn runs kubectl with stdin and fails the test if it fails.
func (k *kube) mustIn(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := k.run(nil, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (k *kube) apply(t *testing.T, manifest string) string {
	t.Helper()
	return k.mustIn(t, manifest, "apply", "-f", "-")
}

// kubeWebDataplane is the Dataplane web-1 in namespace demo, of mesh
// default, as kubectl applies it.
const kubeWebDataplane = `apiVersion: kuma.io/v1alpha1
kind: Dataplane
metadata:
  name: web-1
  namespace: demo
mesh: default
spec:
  networking:
    address: 127.0.0.1
    inbound:
    - port: 9001
      servicePort: 8001
      tags:
        kuma.io/service: web
`

// startKubeCP runs meshca-cp with its store in the test API server. The API
// server reaches the admission webhook of a control plane outside the
// cluster at --webhook-url: hookURL, or the replica's own listener when "".
func startKubeCP(t *testing.T, k *kube, hookAddr, hookURL string, env []string, extra ...string) *controlPlane {
	t.Helper()
	if hookAddr == "" {
		hookAddr = freePort(t)
	}
	if hookURL == "" {
		hookURL = "https://" + hookAddr
	}
	cp := &controlPlane{dataDir: t.TempDir(), api: freePort(t), dp: freePort(t), apiTLS: freePort(t), env: env,
		args: []string{"--environment", "kubernetes", "--kubeconfig", k.srv.Kubeconfig, "--system-namespace", "meshca-system",
			"--webhook-address", hookAddr, "--webhook-url", hookURL}}
	cp.args = append(cp.args, extra...)
	cp.launch(t)
	return cp
}

// serviceProxy stands in for the Service in front of the replicas'
// webhooks: it forwards each TCP connection to the first of backends that
// accepts it (TLS passes through). It returns its address.
func serviceProxy(t *testing.T, backends ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for _, b := range backends {
					up, err := net.DialTimeout("tcp", b, time.Second)
					if err != nil {
						continue
					}
					defer up.Close()
					go func() { _, _ = io.Copy(up, c); up.Close() }()
					_, _ = io.Copy(c, up)
					return
				}
			}()
		}
	}()
	return l.Addr().String()
}

// kumaSecret is a meshca Secret as Kuma keeps it on Kubernetes.
func kumaSecret(name string, data []byte) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: meshca-system
  labels:
    kuma.io/mesh: default
type: system.kuma.io/secret
data:
  value: %s
`, name, base64.StdEncoding.EncodeToString(data))
}

// kubeDataplane is a Dataplane as Kuma generates it for a pod.
func kubeDataplane(name, namespace, service string, port int) string {
	return fmt.Sprintf(`apiVersion: kuma.io/v1alpha1
kind: Dataplane
mesh: default
metadata:
  name: %s
  namespace: %s
spec:
  networking:
    address: 127.0.0.1
    inbound:
    - port: %d
      tags:
        kuma.io/service: %s
`, name, namespace, port, service)
}

// startSAAgent runs meshca-dp for Dataplane name.namespace authenticated as
// a pod of ServiceAccount sa would be: by a token the TokenRequest API
// minted for it (`kubectl create token`, what kubelet projects into the pod),
// given with --token-file. cpAddrs are the control planes to try, caDir the
// data directory of the one whose dp-server CA to trust.
func startSAAgent(t *testing.T, k *kube, caDir, cpAddrs, namespace, sa, name string) *agent {
	t.Helper()
	dir := t.TempDir()
	tok := strings.TrimSpace(k.must(t, "create", "token", sa, "-n", namespace))
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	return &agent{proc: start(t, "meshca-dp", nil, "run", "--cp-address", cpAddrs, "--cp-ca-cert", filepath.Join(caDir, "dp-server-ca.pem"),
		"--token-file", tokFile, "--mesh", "default", "--name", name+"."+namespace, "--out", out), out: out}
}

// TestKubernetesSeed is the seed's Kubernetes Mesh applied with kubectl to a
// real API server that is meshca-cp's store: its Secrets sec-1 and sec-2 as
// core/v1 Secrets in the system namespace, two Dataplanes, two meshca-dp
// agents authenticated by their pods' ServiceAccount tokens and certified
// by acmpca-local with a working mutual-TLS pair; kubectl get and describe;
// a Mesh changed by `kubectl edit` rotating both certificates; one
// certificate per data plane per rotation bought from the CA, none on a
// control-plane restart, and no agent sent secrets it refuses; and
// `kubectl delete` of a Secret the backend uses refused by meshca's

// startSeedCluster starts the test API server with what the seed's example
// needs: acmpca-local serving the seed's CA with the credentials its Secret
// file holds, meshca's CRDs (meshctl install crds), the system namespace and
// the namespace kuma-demo with the ServiceAccounts of its two data planes.
func startSeedCluster(t *testing.T) (*kube, *emulator) {
	t.Helper()
	k := startKube(t)
	useSeedKeyFile(t)
	emu := startEmulator(t,
		"--ca", "arn="+seedARN+",type=ROOT,key=EC_prime256v1,mode=GENERAL_PURPOSE",
		"--credentials", "AKIDFROMSEC2:secret-from-file")
	crds, err := exec.Command(bin("meshctl"), "install", "crds").Output()
	if err != nil {
		t.Fatalf("meshctl install crds: %v", err)
	}
	k.apply(t, string(crds))
	k.must(t, "create", "namespace", "meshca-system")
	k.must(t, "create", "namespace", "kuma-demo")
	k.must(t, "create", "serviceaccount", "backend", "-n", "kuma-demo")
	k.must(t, "create", "serviceaccount", "web", "-n", "kuma-demo")
	return k, emu
}

// admission webhook with the API's message.
func TestKubernetesSeed(t *testing.T) {
	t.Parallel()
	k, emu := startSeedCluster(t)

	cp := startKubeCP(t, k, "", "", []string{"AWS_ENDPOINT_URL_ACM_PCA=" + emu.url, "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true"})

	// The Mesh first (mesh-scoped Secrets belong to an existing Mesh), its
	// Secrets, then the seed's Mesh byte for byte: the ARN is the
	// emulator's CA and AWS_ENDPOINT_URL_ACM_PCA points the SDK at it.
	k.apply(t, "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: default\n")
	k.apply(t, kumaSecret("sec-1", emu.chain(t, seedARN))+"---\n"+kumaSecret("sec-2", []byte("AKIDFROMSEC2")))
	out, err := k.run(nil, "", "apply", "-f", filepath.Join("..", "..", "examples", "acmpca", "mesh-kubernetes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "mesh.kuma.io/default configured") {
		t.Errorf("kubectl apply of the seed's Mesh said:\n%s", out)
	}
	k.apply(t, kubeDataplane("backend-1", "kuma-demo", "backend", 9001)+"---\n"+kubeDataplane("web-1", "kuma-demo", "web", 9002))

	// A namespaced Dataplane is <name>.<namespace> to the control plane,
	// as in Kuma; the agents authenticate with their ServiceAccount tokens.
	backend := startSAAgent(t, k, cp.dataDir, cp.dp, "kuma-demo", "backend", "backend-1")
	web := startSAAgent(t, k, cp.dataDir, cp.dp, "kuma-demo", "web", "web-1")
	b0, w0 := backend.waitCert(t), web.waitCert(t)
	if spiffeOf(b0) != "spiffe://default/backend" || spiffeOf(w0) != "spiffe://default/web" {
		t.Errorf("SANs %q %q", spiffeOf(b0), spiffeOf(w0))
	}
	if b0.Subject.CommonName != "backend.mesh" {
		t.Errorf("CN %q, want backend.mesh (the seed's commonName template)", b0.Subject.CommonName)
	}
	if left := time.Until(b0.NotAfter); left < 23*time.Hour || left > 24*time.Hour+time.Minute {
		t.Errorf("certificate expires in %v, want the seed's 1d", left)
	}
	if clientSaw, serverSaw := handshake(t, backend.tlsConfig(t), web.tlsConfig(t)); clientSaw != "spiffe://default/backend" || serverSaw != "spiffe://default/web" {
		t.Errorf("handshake: client saw %q, server saw %q", clientSaw, serverSaw)
	}
	st := emu.stats(t)
	if st.Issued != 2 {
		t.Errorf("emulator issued %d certificates for 2 data planes, want 2", st.Issued)
	}
	if st.AccessKeys["AKIDFROMSEC2"] == 0 {
		t.Errorf("requests by access key = %v: want them signed with sec-2's key", st.AccessKeys)
	}

	t.Run("kubectl get and describe", func(t *testing.T) {
		out := k.must(t, "get", "meshes")
		if !strings.Contains(out, "NAME") || !strings.Contains(out, "default") {
			t.Errorf("kubectl get meshes:\n%s", out)
		}
		out = k.must(t, "describe", "mesh", "default")
		for _, want := range []string{"Name:", "default", "Kind:", "Mesh", "Enabled Backend:", "acmpca-1", "Type:", "acmpca", seedARN, "sec-1", "sec-2"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl describe mesh default lacks %q:\n%s", want, out)
			}
		}
		out = k.must(t, "get", "dataplanes", "-n", "kuma-demo")
		if !strings.Contains(out, "backend-1") || !strings.Contains(out, "web-1") {
			t.Errorf("kubectl get dataplanes -n kuma-demo:\n%s", out)
		}
	})

	t.Run("kubectl edit rotates", func(t *testing.T) {
		// The editor kubectl runs: a script that changes the lifetime in the
		// file kubectl hands it, as a user would in vi.
		editor := filepath.Join(t.TempDir(), "editor.sh")
		script := "#!/bin/sh\nsed -i 's/expiration: 1d/expiration: 23h/' \"$1\"\n"
		if err := os.WriteFile(editor, []byte(script), 0o700); err != nil {
			t.Fatal(err)
		}
		out, err := k.run([]string{"KUBE_EDITOR=" + editor, "EDITOR=" + editor}, "", "edit", "mesh", "default")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "mesh.kuma.io/default edited") {
			t.Errorf("kubectl edit said:\n%s", out)
		}
		waitFor(t, 60*time.Second, "both certificates rotated", func() bool {
			return rotatedFrom(backend.leaf(), b0) && rotatedFrom(web.leaf(), w0)
		})
		b1 := backend.leaf()
		if left := time.Until(b1.NotAfter); left > 23*time.Hour+time.Minute || left < 22*time.Hour {
			t.Errorf("rotated certificate expires in %v, want 23h", left)
		}
		waitFor(t, 10*time.Second, "the rotated pair handshakes", func() bool {
			_, serverSaw, err := tryHandshake(backend.tlsConfig(t), web.tlsConfig(t))
			return err == nil && serverSaw == "spiffe://default/web"
		})
		if got := emu.stats(t).Issued; got != 4 {
			t.Errorf("emulator issued %d certificates after one rotation of 2 data planes, want 4", got)
		}
	})

	outer := t
	t.Run("a restart re-issues nothing", func(t *testing.T) {
		issued := emu.stats(t).Issued
		b1, w1 := backend.leaf(), web.leaf()
		cp.proc.stop()
		cp.launch(outer) // the restarted process outlives this subtest
		const valid = `meshca_dataplanes_by_cert_state{state="valid"}`
		waitFor(t, 30*time.Second, "the restarted control plane to know both certificates", func() bool {
			return cp.metric(t, valid) == 2
		})
		// Leave it time to (wrongly) issue again, then check nothing was.
		time.Sleep(3 * time.Second)
		if got := emu.stats(t).Issued; got != issued {
			t.Errorf("the restart bought %d certificates", got-issued)
		}
		if !sameSerial(backend.leaf(), b1) || !sameSerial(web.leaf(), w1) {
			t.Error("an agent got a new certificate across the restart")
		}
		for _, a := range []*agent{backend, web} {
			if out := a.proc.out.String(); strings.Contains(out, "rejecting") {
				t.Errorf("an agent was sent secrets it rejected:\n%s", out)
			}
		}
	})

	t.Run("kubectl delete of a Secret in use", func(t *testing.T) {
		out, err := k.run(nil, "", "delete", "secret", "sec-2", "-n", "meshca-system")
		t.Logf("kubectl delete secret sec-2: %v\n%s", err, out)
		// Refused at admission by the control plane's webhook, with the
		// API's words.
		if err == nil || !strings.Contains(out, `denied the request: secret "sec-2" is used by backend "acmpca-1" of mesh "default"`) {
			t.Errorf("deleting a Secret the Mesh uses was not refused:\n%s", out)
		}
		if _, err := k.run(nil, "", "get", "secret", "sec-2", "-n", "meshca-system"); err != nil {
			t.Errorf("the Secret is gone: %v", err)
		}
	})
}

// TestKubernetesLeaderFailover runs two meshca-cp replicas against one API
// server, as a Deployment of two would: one leads (the coordination.k8s.io
// Lease); kill -9 of the leader hands the lead to the other, which keeps
// rotating; and acmpca-local sold exactly one certificate per data plane per
// rotation throughout.
func TestKubernetesLeaderFailover(t *testing.T) {
	t.Parallel()
	k, emu := startSeedCluster(t)

	env := []string{"AWS_ENDPOINT_URL_ACM_PCA=" + emu.url, "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true"}
	// One webhook URL for both, as one Service: whichever replica is up
	// answers the API server.
	hooks := []string{freePort(t), freePort(t)}
	svc := "https://" + serviceProxy(t, hooks...)
	lease := []string{"--leader-lease-duration", haLease.String(), "--leader-renew-interval", haRenew.String()}
	cps := []*controlPlane{startKubeCP(t, k, hooks[0], svc, env, lease...), startKubeCP(t, k, hooks[1], svc, env, lease...)}
	var first int
	waitFor(t, 30*time.Second, "one replica to lead", func() bool { first = leaderOf(t, cps, nil); return first >= 0 })

	k.apply(t, "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: default\n")
	k.apply(t, kumaSecret("sec-1", emu.chain(t, seedARN))+"---\n"+kumaSecret("sec-2", []byte("AKIDFROMSEC2")))
	k.must(t, "apply", "-f", filepath.Join("..", "..", "examples", "acmpca", "mesh-kubernetes.yaml"))
	k.apply(t, kubeDataplane("backend-1", "kuma-demo", "backend", 9001)+"---\n"+kubeDataplane("web-1", "kuma-demo", "web", 9002))

	// The agents know both replicas, the leader first.
	addrs := cps[first].dp + "," + cps[1-first].dp
	backend := startSAAgent(t, k, cps[first].dataDir, addrs, "kuma-demo", "backend", "backend-1")
	web := startSAAgent(t, k, cps[first].dataDir, addrs, "kuma-demo", "web", "web-1")
	b0, w0 := backend.waitCert(t), web.waitCert(t)
	if got := emu.stats(t).Issued; got != 2 {
		t.Errorf("emulator issued %d certificates for 2 data planes, want 2", got)
	}

	cps[first].kill()
	waitFor(t, 4*haLease, "the other replica to lead", func() bool { return leaderOf(t, cps, map[int]bool{first: true}) == 1-first })
	k.apply(t, strings.Replace(mustRead(t, filepath.Join("..", "..", "examples", "acmpca", "mesh-kubernetes.yaml")), "expiration: 1d", "expiration: 23h", 1))
	waitFor(t, 60*time.Second, "both certificates rotated by the new leader", func() bool {
		return rotatedFrom(backend.leaf(), b0) && rotatedFrom(web.leaf(), w0)
	})
	if _, serverSaw := handshake(t, backend.tlsConfig(t), web.tlsConfig(t)); serverSaw != "spiffe://default/web" {
		t.Errorf("after failover the server saw %q", serverSaw)
	}
	// Give a wrongly duplicated issuance time to show, then count.
	time.Sleep(2 * time.Second)
	if got := emu.stats(t).Issued; got != 4 {
		t.Errorf("emulator issued %d certificates for 2 data planes and one rotation across a failover, want 4", got)
	}
	if n := cps[1-first].metric(t, `meshca_certificates_issued_total{backend_type="acmpca",result="success"}`); n != 2 {
		t.Errorf("the new leader issued %v certificates, want the 2 of the rotation", n)
	}
}
