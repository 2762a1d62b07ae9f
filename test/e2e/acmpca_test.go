package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	seedARN = "arn:aws:acm-pca:region:account:certificate-authority/12345678-1234-1234-1234-123456789012"
	subARN  = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	// offARN is a CA that exists but is DISABLED.
	offARN = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/dddddddd-dddd-dddd-dddd-dddddddddddd"
	// seedKeyFile is the path the seed's Mesh reads accessKeySecret from.
	seedKeyFile = "/tmp/accesss_key.txt"
)

// seedKey shares seedKeyFile among the tests that run at once and need it:
// the seed's Mesh reads its secret key from that fixed path, the same for
// all of them. The first writes it (keeping whatever was there), the last to
// finish puts that back.
var seedKey struct {
	mu      sync.Mutex
	users   int
	restore func()
}

func useSeedKeyFile(t *testing.T) {
	t.Helper()
	seedKey.mu.Lock()
	defer seedKey.mu.Unlock()
	if seedKey.users == 0 {
		if old, err := os.ReadFile(seedKeyFile); err == nil {
			seedKey.restore = func() { _ = os.WriteFile(seedKeyFile, old, 0o600) }
		} else {
			seedKey.restore = func() { os.Remove(seedKeyFile) }
		}
		if err := os.WriteFile(seedKeyFile, []byte("secret-from-file\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	seedKey.users++
	t.Cleanup(func() {
		seedKey.mu.Lock()
		defer seedKey.mu.Unlock()
		if seedKey.users--; seedKey.users == 0 {
			seedKey.restore()
		}
	})
}

type emulator struct {
	*proc
	url, stateDir string
}

func startEmulator(t *testing.T, args ...string) *emulator {
	t.Helper()
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	p := start(t, "acmpca-local", nil, append([]string{"run", "--address", "127.0.0.1:0", "--address-file", addrFile, "--state-dir", filepath.Join(dir, "state")}, args...)...)
	var addr []byte
	waitFor(t, 20*time.Second, "acmpca-local address", func() bool {
		addr, _ = os.ReadFile(addrFile)
		return len(strings.TrimSpace(string(addr))) > 0
	})
	return &emulator{proc: p, url: "http://" + strings.TrimSpace(string(addr)), stateDir: filepath.Join(dir, "state")}
}

type emuStats struct {
	Issued     int64                       `json:"issued"`
	Requests   map[string]map[string]int64 `json:"requests"`
	AccessKeys map[string]int64            `json:"accessKeys"`
}

func (e *emulator) stats(t *testing.T) emuStats {
	t.Helper()
	resp, err := http.Get(e.url + "/_acmpca-local/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s emuStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// admin posts to one of the emulator's admin endpoints (faults, rates).
func (e *emulator) admin(t *testing.T, what, body string) {
	t.Helper()
	resp, err := http.Post(e.url+"/_acmpca-local/"+what, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s %s: %s", what, body, resp.Status)
	}
}

func (e *emulator) chain(t *testing.T, arn string) []byte {
	t.Helper()
	id := arn[strings.LastIndex(arn, "/")+1:]
	b, err := os.ReadFile(filepath.Join(e.stateDir, id+"-chain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestACMPCASeed runs the Kong Mesh ACM Private CA page with the real
// binaries: both of its Meshes apply byte for byte, data planes get
// certificates from the emulated ACM PCA signed with the credentials the
// Mesh names, the agents' files make a working mutual-TLS pair, a subordinate
// CA (chain of three) works, and killing the control plane in the middle of
// an issuance buys no second certificate.
func TestACMPCASeed(t *testing.T) {
	t.Parallel()
	useSeedKeyFile(t)

	emu := startEmulator(t,
		"--ca", "arn="+seedARN+",type=ROOT,key=EC_prime256v1,mode=GENERAL_PURPOSE",
		"--ca", "arn="+subARN+",type=SUBORDINATE,key=RSA_2048,mode=GENERAL_PURPOSE",
		"--ca", "arn="+offARN+",type=ROOT,key=EC_prime256v1,mode=GENERAL_PURPOSE,status=DISABLED",
		"--credentials", "AKIDFROMSEC2:secret-from-file",
		"--credentials", "AKIDENV:secret-env",
		"--in-progress", "3s")
	cp := startCP(t, t.TempDir(), "AWS_ENDPOINT_URL_ACM_PCA="+emu.url, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=AKIDENV", "AWS_SECRET_ACCESS_KEY=secret-env", "AWS_EC2_METADATA_DISABLED=true")

	cp.apply(t, "type: Mesh\nname: default\n")
	cp.apply(t, fmt.Sprintf("type: Secret\nmesh: default\nname: sec-1\ndata: %s\n---\ntype: Secret\nmesh: default\nname: sec-2\ndata: %s\n",
		base64.StdEncoding.EncodeToString(emu.chain(t, seedARN)), base64.StdEncoding.EncodeToString([]byte("AKIDFROMSEC2"))))

	// Both of the seed's examples, byte for byte.
	for _, f := range []string{"mesh-universal.yaml", "mesh-kubernetes.yaml"} {
		out, err := cp.meshctl("apply", "-f", filepath.Join("..", "..", "examples", "acmpca", f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Logf("%s: %s", f, strings.TrimSpace(out))
	}
	cp.apply(t, dataplanes("default"))
	backend := startAgent(t, cp, "default", "backend-1", "backend-1")
	web := startAgent(t, cp, "default", "web-1", "web-1")
	b, w := backend.waitCert(t), web.waitCert(t)
	requireSVID(t, backend, "spiffe://default/backend")
	if b.Subject.CommonName != "backend.mesh" || w.Subject.CommonName != "web.mesh" {
		t.Errorf("CNs %q %q, want backend.mesh web.mesh", b.Subject.CommonName, w.Subject.CommonName)
	}
	if spiffeOf(b) != "spiffe://default/backend" {
		t.Errorf("SAN %q", spiffeOf(b))
	}
	if left := time.Until(b.NotAfter); left < 23*time.Hour || left > 24*time.Hour+time.Minute {
		t.Errorf("certificate expires in %v, want 24h", left)
	}
	if clientSaw, serverSaw := handshake(t, backend.tlsConfig(t), web.tlsConfig(t)); clientSaw != "spiffe://default/backend" || serverSaw != "spiffe://default/web" {
		t.Errorf("handshake: client saw %q, server saw %q", clientSaw, serverSaw)
	}
	st := emu.stats(t)
	if st.Issued != 2 {
		t.Errorf("emulator issued %d certificates, want 2", st.Issued)
	}
	if st.AccessKeys["AKIDFROMSEC2"] == 0 || st.AccessKeys["AKIDENV"] != 0 {
		t.Errorf("requests by access key = %v: want all signed with sec-2's key", st.AccessKeys)
	}
	if out := cp.mustMeshctl(t, "inspect", "dataplane", "backend-1", "-m", "default"); !strings.Contains(out, seedARN+"/certificate/") {
		t.Errorf("inspect does not show the certificate ARN:\n%s", out)
	}

	t.Run("subordinate CA, default credential chain", func(t *testing.T) {
		cp.apply(t, "type: Mesh\nname: sub\n")
		cp.apply(t, fmt.Sprintf("type: Secret\nmesh: sub\nname: ca\ndata: %s\n", base64.StdEncoding.EncodeToString(emu.chain(t, subARN))))
		cp.apply(t, fmt.Sprintf(`type: Mesh
name: sub
mtls:
  enabledBackend: pca
  backends:
  - name: pca
    type: acmpca
    dpCert: {rotation: {expiration: 2h}}
    conf:
      arn: %s
      caCert: {secret: ca}
`, subARN))
		cp.apply(t, dataplanes("sub"))
		before := emu.stats(t).AccessKeys["AKIDENV"]
		sb := startAgent(t, cp, "sub", "backend-1", "backend-1")
		sw := startAgent(t, cp, "sub", "web-1", "web-1")
		sb.waitCert(t)
		sw.waitCert(t)
		requireSVID(t, sb, "spiffe://sub/backend")
		chain, err := os.ReadFile(filepath.Join(sb.out, "cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(chain), "BEGIN CERTIFICATE"); n != 2 {
			t.Errorf("cert.pem holds %d certificates, want leaf + subordinate", n)
		}
		if _, serverSaw := handshake(t, sb.tlsConfig(t), sw.tlsConfig(t)); serverSaw != "spiffe://sub/web" {
			t.Errorf("server saw %q", serverSaw)
		}
		if emu.stats(t).AccessKeys["AKIDENV"] == before {
			t.Error("with auth unset, the environment's credentials were not used")
		}
	})

	outer := t
	t.Run("kill during issuance issues nothing twice", func(t *testing.T) {
		issued := emu.stats(t).Issued
		cp.apply(t, "type: Dataplane\nmesh: default\nname: late-1\nnetworking: {address: 127.0.0.1, inbound: [{port: 9003, tags: {kuma.io/service: late}}]}\n")
		waitFor(t, 15*time.Second, "IssueCertificate for late-1", func() bool { return emu.stats(t).Issued >= issued+1 })
		cp.kill() // GetCertificate is still answering RequestInProgress
		cp.launch(outer)
		waitFor(t, 30*time.Second, "late-1 certified after the restart", func() bool {
			out, err := cp.meshctl("inspect", "dataplane", "late-1", "-m", "default", "-o", "json")
			return err == nil && strings.Contains(out, `"serial"`)
		})
		if got := emu.stats(t).Issued; got != issued+1 {
			t.Errorf("emulator issued %d certificates for one data plane across a crash", got-issued)
		}
	})

	t.Run("100 dataplanes against an IssueCertificate quota of 5/s", func(t *testing.T) {
		emu.admin(t, "rates", `{"IssueCertificate":5}`)
		defer emu.admin(t, "rates", `{"IssueCertificate":25}`)
		issued := emu.stats(t).Issued
		valid := cp.metric(t, `meshca_dataplanes_by_cert_state{state="valid"}`)
		const failures = `meshca_certificates_issued_total{backend_type="acmpca",result="error"}`
		failed := cp.metric(t, failures)
		var docs []string
		for i := 0; i < 100; i++ {
			docs = append(docs, fmt.Sprintf("type: Dataplane\nmesh: default\nname: load-%d\nnetworking: {address: 127.0.0.1, inbound: [{port: %d, tags: {kuma.io/service: load}}]}\n", i, 10000+i))
		}
		start := time.Now()
		cp.apply(t, strings.Join(docs, "---\n"))
		defer func() { // the next subtests want a small mesh again
			for i := 0; i < 100; i++ {
				req, _ := http.NewRequest(http.MethodDelete, fmt.Sprintf("http://%s/meshes/default/dataplanes/load-%d", cp.api, i), nil)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}()
		waitFor(t, 90*time.Second, "100 more certificates", func() bool {
			return cp.metric(t, `meshca_dataplanes_by_cert_state{state="valid"}`) >= valid+100
		})
		t.Logf("100 dataplanes certified in %v at 5/s", time.Since(start).Round(time.Millisecond))
		if got := emu.stats(t).Issued - issued; got != 100 {
			t.Errorf("emulator issued %d certificates for 100 dataplanes", got)
		}
		if errs := cp.metric(t, failures) - failed; errs != 0 {
			t.Errorf("%v issuance failures surfaced to data planes", errs)
		}
	})

	t.Run("an ACM outage during rotation keeps the old certificates in service", func(t *testing.T) {
		b0, w0 := backend.leaf(), web.leaf()
		emu.admin(t, "faults", `{"outageFor":"60s"}`)
		defer emu.admin(t, "faults", `{"outageFor":"0s"}`)
		seed, err := os.ReadFile(filepath.Join("..", "..", "examples", "acmpca", "mesh-universal.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		cp.apply(t, strings.Replace(string(seed), "expiration: 24h", "expiration: 23h", 1))
		waitFor(t, 50*time.Second, "the failed rotation surfaced", func() bool {
			out, err := cp.meshctl("inspect", "dataplane", "backend-1", "-m", "default", "-o", "json")
			return err == nil && strings.Contains(out, `"lastError"`)
		})
		if !sameSerial(backend.leaf(), b0) {
			t.Fatal("backend-1's certificate changed during the outage")
		}
		if _, serverSaw := handshake(t, backend.tlsConfig(t), web.tlsConfig(t)); serverSaw != "spiffe://default/web" {
			t.Errorf("during the outage server saw %q", serverSaw)
		}
		emu.admin(t, "faults", `{"outageFor":"0s"}`)
		waitFor(t, 60*time.Second, "rotation after the outage", func() bool {
			b, w := backend.leaf(), web.leaf()
			return rotatedFrom(b, b0) && rotatedFrom(w, w0)
		})
		if left := time.Until(backend.leaf().NotAfter); left > 23*time.Hour+time.Minute {
			t.Errorf("rotated certificate lives %v, want 23h", left)
		}
	})

	t.Run("bad input is refused and stores nothing", func(t *testing.T) {
		for _, tc := range []struct{ name, conf, want string }{
			{"malformed ARN", "arn: arn:aws:acm:us-east-1:1:certificate/x\n      caCert: {secret: sec-1}", "conf.arn"},
			{"missing secret", "arn: " + seedARN + "\n      caCert: {secret: nope}", `secret "nope" not found`},
			{"caCert of another CA", "arn: " + seedARN + "\n      caCert: {secret: ca-other}", "conf.caCert"},
			{"CA not ACTIVE", "arn: " + offARN + "\n      caCert: {secret: ca-off}", "DISABLED"},
			{"unknown CA", "arn: arn:aws:acm-pca:us-east-1:1:certificate-authority/99999999-9999-9999-9999-999999999999\n      caCert: {secret: sec-1}", "ResourceNotFoundException"},
			{"bad credentials", "arn: " + seedARN + "\n      caCert: {secret: sec-1}\n      auth: {awsCredentials: {accessKey: {inlineString: AKIDFROMSEC2}, accessKeySecret: {inlineString: wrong}}}", "conf.auth"},
			// A key whose content has a line break inside is named at once,
			// not blamed on the ARN after the SDK's retries.
			{"accessKey with a newline inside", "arn: " + seedARN + "\n      caCert: {secret: sec-1}\n      auth: {awsCredentials: {accessKey: {secret: sec-nl}, accessKeySecret: {inlineString: secret-from-file}}}", "conf.auth.awsCredentials.accessKey: contains a control character"},
		} {
			if tc.name == "accessKey with a newline inside" {
				cp.apply(t, fmt.Sprintf("type: Secret\nmesh: default\nname: sec-nl\ndata: %s\n", base64.StdEncoding.EncodeToString([]byte("AKIDFROMSEC2\nSECONDLINE\n"))))
			}
			if tc.name == "CA not ACTIVE" {
				cp.apply(t, fmt.Sprintf("type: Secret\nmesh: default\nname: ca-off\ndata: %s\n", base64.StdEncoding.EncodeToString(emu.chain(t, offARN))))
			}
			if tc.name == "caCert of another CA" {
				cp.apply(t, fmt.Sprintf("type: Secret\nmesh: default\nname: ca-other\ndata: %s\n", base64.StdEncoding.EncodeToString(emu.chain(t, subARN))))
			}
			mesh := fmt.Sprintf("type: Mesh\nname: default\nmtls:\n  enabledBackend: bad\n  backends:\n  - name: bad\n    type: acmpca\n    conf:\n      %s\n", tc.conf)
			start := time.Now()
			_, err := cp.meshctlIn(mesh, "apply", "-f", "-")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
			}
			if tc.name == "accessKey with a newline inside" {
				if err != nil && strings.Contains(err.Error(), "SECONDLINE") {
					t.Errorf("the error quotes the credential: %v", err)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("refused after %v: a bad credential must fail at once, not after retries", d)
				}
			}
		}
		out := cp.mustMeshctl(t, "get", "mesh", "default", "-o", "json")
		if !strings.Contains(out, `"acmpca-1"`) || strings.Contains(out, `"bad"`) {
			t.Errorf("a refused mesh changed what is stored:\n%s", out)
		}
	})
	if t.Failed() {
		t.Logf("emulator stats: %+v", emu.stats(t))
	}
}
