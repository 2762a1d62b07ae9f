package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDataDirInUse: a second meshca-cp on a data directory in use refuses
// to start, naming the directory and the running process, and the first
// keeps serving.
func TestDataDirInUse(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	cp := startCP(t, dataDir)
	second := start(t, "meshca-cp", nil, "run", "--data-dir", dataDir, "--api-address", freePort(t), "--dp-server-address", freePort(t), "--api-tls-address", freePort(t))
	done, err := second.exited(15 * time.Second)
	if !done || err == nil {
		t.Fatalf("second meshca-cp on %s: exited=%v err=%v, want a refusal", dataDir, done, err)
	}
	out := second.out.String()
	if !strings.Contains(out, dataDir) || !strings.Contains(out, "is in use by another meshca-cp (pid ") {
		t.Fatalf("the refusal does not name the directory and the holder:\n%s", out)
	}
	cp.mustMeshctl(t, "get", "meshes")
}

// TestDiskFull: with the control plane's data directory on a file system
// that fills up, a write through meshctl fails with a message that says so
// (507 from the API), reads keep working and the data plane keeps its
// certificate; once space is freed, writes work again with no restart.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("disk-full test needs to mount a small tmpfs (root, CAP_SYS_ADMIN): %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })

	cp := startCP(t, filepath.Join(dir, "data"))
	cp.apply(t, builtinMeshWith("1h"))
	cp.apply(t, dataplanes("default"))
	a := startAgent(t, cp, "default", "backend-1", "backend-1")
	cert := a.waitCert(t)

	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(chunk); err != nil {
			break
		}
	}
	filler.Close()

	secret := func(name string) string {
		return fmt.Sprintf("type: Secret\nmesh: default\nname: %s\ndata: %s\n", name, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("s"), 512<<10)))
	}
	var applyErr error
	for i := range 16 {
		if _, applyErr = cp.meshctlIn(secret(fmt.Sprint("s-", i)), "apply", "-f", "-"); applyErr != nil {
			break
		}
	}
	if applyErr == nil || !strings.Contains(applyErr.Error(), "disk is full") {
		t.Fatalf("apply on a full disk: err = %v, want one saying the disk is full", applyErr)
	}
	resp, err := http.Get("http://" + cp.api + "/meshes/default/secrets/s-x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("read on a full disk: status %d", resp.StatusCode)
	}
	cp.mustMeshctl(t, "get", "dataplanes", "-m", "default")
	if !sameSerial(a.leaf(), cert) {
		t.Errorf("the data plane's certificate changed while the disk was full")
	}

	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	cp.apply(t, secret("after"))
}

// TestShutdownAnswersInFlight: a SIGTERM while an apply is stuck on an
// unreachable CA (an ACM PCA endpoint that accepts and never answers)
// answers that apply with 503 and a reason before the process exits, instead
// of dropping the client's connection; nothing is stored.
func TestShutdownAnswersInFlight(t *testing.T) {
	t.Parallel()
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	dataDir := t.TempDir()
	cp := startCP(t, dataDir, "AWS_ENDPOINT_URL_ACM_PCA=http://"+hang.Addr().String(), "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=AKIDENV", "AWS_SECRET_ACCESS_KEY=secret-env", "AWS_EC2_METADATA_DISABLED=true")
	caPEM, _ := newCA(t, "stuck root")
	mesh := fmt.Sprintf(`type: Mesh
name: stuck
mtls:
  enabledBackend: acmpca-1
  backends:
  - name: acmpca-1
    type: acmpca
    conf:
      arn: "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/12345678-1234-1234-1234-123456789012"
      caCert:
        inline: %s
`, base64.StdEncoding.EncodeToString(caPEM))
	type result struct {
		out string
		err error
	}
	res := make(chan result, 1)
	go func() {
		out, err := cp.meshctlIn(mesh, "apply", "-f", "-")
		res <- result{out, err}
	}()
	time.Sleep(1500 * time.Millisecond)
	select {
	case r := <-res:
		t.Fatalf("apply finished before the shutdown (the CA must hang it): %q %v", r.out, r.err)
	default:
	}
	if err := cp.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err == nil || !strings.Contains(r.err.Error(), "shutting down") {
		t.Fatalf("apply interrupted by shutdown: err = %v, want the 503 saying the control plane is shutting down", r.err)
	}
	if done, err := cp.proc.exited(10 * time.Second); !done || err != nil {
		t.Fatalf("meshca-cp after SIGTERM: exited=%v err=%v", done, err)
	}
	cp.launch(t)
	if out, err := cp.meshctl("get", "mesh", "stuck"); err == nil {
		t.Fatalf("the interrupted apply stored the mesh:\n%s", out)
	}
}

// TestCrashRecovery: SIGKILL of the control plane at random points of a
// workload (registrations, Secret writes, a Mesh change that rotates every
// certificate), four times over. Every write the API acknowledged survives,
// the builtin root is the one the Mesh was created with, and after the last
// restart the data planes hold certificates that verify against that root
// (openssl-equivalent: x509 verification with the agent's own ca.pem).
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	cp := startCP(t, dataDir)
	cp.apply(t, builtinMeshWith("1h"))
	cp.apply(t, dataplanes("default"))
	a := startAgent(t, cp, "default", "backend-1", "backend-1")
	a.waitCert(t)
	root := a.file("ca.pem")

	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 9))
	var acked []string // paths whose PUT was answered 2xx
	put := func(path, body string) bool {
		req, _ := http.NewRequest("PUT", "http://"+cp.api+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/yaml")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode/100 == 2
	}
	n := 0
	for cycle := range 4 {
		stop := make(chan struct{})
		done := make(chan []string)
		go func() {
			var mine []string
			for {
				select {
				case <-stop:
					done <- mine
					return
				default:
				}
				n++
				var path, body string
				switch n % 3 {
				case 0:
					path = fmt.Sprintf("/meshes/default/secrets/s-%d", n)
					body = fmt.Sprintf("type: Secret\nmesh: default\nname: s-%d\ndata: %s\n", n, base64.StdEncoding.EncodeToString([]byte(fmt.Sprint(n))))
				case 1:
					path = fmt.Sprintf("/meshes/default/dataplanes/dp-%d", n)
					body = fmt.Sprintf("type: Dataplane\nmesh: default\nname: dp-%d\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: %d\n    tags:\n      kuma.io/service: svc-%d\n", n, 10000+n, n%5)
				default:
					// A Mesh change (new lifetime) that re-issues every certificate.
					path, body = "/meshes/default", builtinMeshWith(fmt.Sprintf("%dm", 50+n%20))
				}
				if put(path, body) {
					mine = append(mine, path)
				}
			}
		}()
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
		cp.proc.kill()
		close(stop)
		got := <-done
		acked = append(acked, got...)
		t.Logf("cycle %d: killed after %d acknowledged writes", cycle, len(got))
		cp.launch(t)
	}

	for _, path := range acked {
		resp, err := http.Get("http://" + cp.api + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("acknowledged write %s lost after a crash: GET answers %d", path, resp.StatusCode)
		}
	}
	t.Logf("%d acknowledged writes survived 4 kill cycles", len(acked))

	// The agent reconnects; its certificate (re-issued for the last Mesh
	// change) verifies against the root the Mesh was created with.
	waitFor(t, 30*time.Second, "backend-1 certificate verifying against the original root", func() bool {
		if a.file("ca.pem") != root {
			return false
		}
		return verifyFiles(a.file("cert.pem"), root) == nil
	})
	// A data plane registered during the workload gets a certificate too.
	for _, path := range acked {
		if name, ok := strings.CutPrefix(path, "/meshes/default/dataplanes/"); ok {
			b := startAgent(t, cp, "default", name, name)
			b.waitCert(t)
			if b.file("ca.pem") != root {
				t.Errorf("%s was given a trust bundle other than the mesh's root", name)
			}
			if err := verifyFiles(b.file("cert.pem"), root); err != nil {
				t.Errorf("%s: certificate does not verify against the mesh's root: %v", name, err)
			}
			break
		}
	}
}

func verifyFiles(certPEM, caPEM string) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return errors.New("no CA in ca.pem")
	}
	inter := x509.NewCertPool()
	var leaf *x509.Certificate
	rest := []byte(certPEM)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return err
		}
		if leaf == nil {
			leaf = c
		} else {
			inter.AddCert(c)
		}
	}
	if leaf == nil {
		return errors.New("no certificate in cert.pem")
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}
