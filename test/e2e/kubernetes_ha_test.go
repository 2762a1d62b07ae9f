package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKubernetesReplicas runs two meshca-cp replicas with --environment
// kubernetes against one real API server: they elect one leader with the
// Lease meshca-cp-leader, both list each other, a data plane authenticated
// by its ServiceAccount token (TokenReview) is certified while another
// namespace's token is refused, and kill -9 of the leader hands the lease
// to the other within two lease periods, which takes over without issuing
// again what was issued.
func TestKubernetesReplicas(t *testing.T) {
	t.Parallel()
	k := startKube(t)
	srv := k.srv
	for _, ns := range []string{"meshca-system", "demo", "other"} {
		k.must(t, "create", "namespace", ns)
	}
	k.must(t, "create", "serviceaccount", "web", "-n", "demo")
	k.must(t, "create", "serviceaccount", "intruder", "-n", "other")

	newCP := func() *controlPlane {
		cp := &controlPlane{dataDir: t.TempDir(), api: freePort(t), dp: freePort(t), apiTLS: freePort(t),
			args: []string{"--environment", "kubernetes", "--kubeconfig", srv.Kubeconfig, "--system-namespace", "meshca-system",
				"--webhook-address", "", "--leader-lease-duration", haLease.String(), "--leader-renew-interval", haRenew.String()}}
		cp.launch(t)
		return cp
	}
	cps := []*controlPlane{newCP()}
	waitFor(t, 10*time.Second, "the first replica leads", func() bool { return cps[0].metric(t, "meshca_leader") == 1 })
	cps = append(cps, newCP())
	waitFor(t, 10*time.Second, "both replicas listed", func() bool {
		out, err := cps[1].meshctl("inspect", "control-planes", "-o", "json")
		var list struct{ Items []haInstance }
		return err == nil && json.Unmarshal([]byte(out), &list) == nil && len(list.Items) == 2
	})
	var list struct{ Items []haInstance }
	if err := json.Unmarshal([]byte(cps[1].mustMeshctl(t, "inspect", "control-planes", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	for _, in := range list.Items {
		if in.Leader != (in.Address == cps[0].api) || !in.Online {
			t.Errorf("replica %+v: want online, leader only for %s", in, cps[0].api)
		}
	}
	if i := leaderOf(t, cps, nil); i != 0 {
		t.Fatalf("leader %d, want the first replica", i)
	}

	k.mustIn(t, `apiVersion: kuma.io/v1alpha1
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
`+kubeWebDataplane, "apply", "-f", "-")

	// The pod's token, as kubelet would project it (here minted with
	// `kubectl create token`), given with --token-file as a pod would find
	// it at /var/run/secrets/kubernetes.io/serviceaccount/token.
	saAgent := func(ns, sa string) *agent {
		dir := t.TempDir()
		tok := strings.TrimSpace(k.must(t, "create", "token", sa, "-n", ns))
		tokFile := filepath.Join(dir, "token")
		if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out")
		return &agent{proc: start(t, "meshca-dp", nil, "run", "--cp-address", cps[1].dp+","+cps[0].dp,
			"--cp-ca-cert", filepath.Join(cps[1].dataDir, "dp-server-ca.pem"),
			"--token-file", tokFile, "--mesh", "default", "--name", "web-1.demo", "--out", out), out: out}
	}
	web := saAgent("demo", "web")
	leaf := web.waitCert(t)
	if got := spiffeOf(leaf); got != "spiffe://default/web" {
		t.Fatalf("certificate of %s, want spiffe://default/web", got)
	}
	intruder := saAgent("other", "intruder")
	if done, err := intruder.exited(30 * time.Second); !done || err == nil || !strings.Contains(intruder.proc.out.String(), `namespace "other"`) {
		t.Fatalf("agent with another namespace's token: exited %v (%v)\n%s", done, err, intruder.proc.out.String())
	}
	for _, cp := range cps {
		if strings.Contains(cp.out.String(), "eyJ") { // a JWT's first bytes
			t.Fatal("a token appears in a control plane's log")
		}
	}
	issuedBefore := cps[0].metric(t, `meshca_certificates_issued_total{backend_type="builtin",result="success"}`)
	if issuedBefore != 1 {
		t.Errorf("the leader issued %v certificates, want 1", issuedBefore)
	}

	killedAt := time.Now()
	cps[0].kill()
	dead := map[int]bool{0: true}
	waitFor(t, 4*haLease, "the other replica leads", func() bool { return leaderOf(t, cps, dead) == 1 })
	took := time.Since(killedAt)
	t.Logf("the surviving replica leads %s after the leader was killed", took.Round(time.Millisecond))
	if took > 2*haLease+haRenew {
		t.Errorf("failover took %s, want within two lease periods (%s) and a renew interval", took, 2*haLease)
	}
	if out := k.must(t, "get", "lease", "meshca-cp-leader", "-n", "meshca-system", "-o", "jsonpath={.spec.holderIdentity}"); out == "" {
		t.Error("the Lease names no holder")
	}
	waitFor(t, 10*time.Second, "the new leader's identity loop", func() bool { return strings.Contains(cps[1].out.String(), "issuing as the leader") })
	// The new leader found the certificate in the API server: nothing is
	// issued again, and the agent (now on the survivor) keeps its serial.
	time.Sleep(2 * haRenew)
	if n := cps[1].metric(t, `meshca_certificates_issued_total{backend_type="builtin",result="success"}`); n != 0 {
		t.Errorf("the new leader issued %v certificates, want none", n)
	}
	if got := web.leaf(); !sameSerial(got, leaf) {
		t.Errorf("the agent's certificate changed across the failover: serial %v, was %v", got.SerialNumber, leaf.SerialNumber)
	}
}
