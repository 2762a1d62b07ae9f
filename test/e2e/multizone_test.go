package e2e

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// federation is one global control plane and its zones.
type federation struct {
	global *controlPlane
	kds    string
	zones  map[string]*controlPlane
}

func startGlobal(t *testing.T) *federation {
	t.Helper()
	kds := freePort(t)
	g := startCP(t, t.TempDir(), "MESHCA_MODE=global", "MESHCA_KDS_ADDRESS="+kds)
	return &federation{global: g, kds: kds, zones: map[string]*controlPlane{}}
}

// zoneToken generates a zone token on global and writes it to a 0600 file.
func (f *federation) zoneToken(t *testing.T, zone string) string {
	t.Helper()
	tok := strings.TrimSpace(f.global.mustMeshctl(t, "generate", "zone-token", "--zone", zone))
	file := filepath.Join(t.TempDir(), zone+".token")
	if err := os.WriteFile(file, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func (f *federation) startZone(t *testing.T, zone, tokenFile string, extraEnv ...string) *controlPlane {
	t.Helper()
	env := append([]string{"MESHCA_MODE=zone", "MESHCA_ZONE=" + zone, "MESHCA_GLOBAL_ADDRESS=" + f.kds,
		"MESHCA_GLOBAL_CA_CERT=" + filepath.Join(f.global.dataDir, "kds-server-ca.pem"), "MESHCA_ZONE_TOKEN_FILE=" + tokenFile}, extraEnv...)
	z := startCP(t, t.TempDir(), env...)
	f.zones[zone] = z
	return z
}

// zoneStatus is what a zone says of its link to global.
func zoneStatus(t *testing.T, z *controlPlane) (connected bool, lastError string) {
	t.Helper()
	resp, err := http.Get("http://" + z.api + "/zone/_status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Connected bool   `json:"connected"`
		LastError string `json:"lastError"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Connected, st.LastError
}

func dataplane(mesh, name, service string, port int) string {
	return fmt.Sprintf("type: Dataplane\nmesh: %s\nname: %s\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: %d\n    tags:\n      kuma.io/service: %s\n", mesh, name, port, service)
}

// startAgentWithToken runs meshca-dp against cp with a token made elsewhere
// (on global).
func startAgentWithToken(t *testing.T, cp *controlPlane, mesh, name, token string) *agent {
	t.Helper()
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	return &agent{proc: start(t, "meshca-dp", nil, "run", "--cp-address", cp.dp, "--cp-ca-cert", filepath.Join(cp.dataDir, "dp-server-ca.pem"),
		"--token-file", tokFile, "--mesh", mesh, "--name", name, "--out", out), out: out}
}

// TestMultiZone is the seed's multi-zone section with the real binaries:
// a Mesh made once on global reaches two zones; each zone issues for its
// own data planes, with the one builtin root global generated, so a proxy
// in zone-1 and one in zone-2 complete a mutual-TLS handshake; tokens made
// on global work in the zones; global lists every zone's data planes and
// the zones' state; ownership is enforced both ways; with global down the
// zones keep issuing and accept new data planes, survive their own restart,
// and what changed on either side meanwhile arrives once global is back.
func TestMultiZone(t *testing.T) {
	t.Parallel()
	f := startGlobal(t)
	f.global.apply(t, builtinMeshWith("10s"))
	z1 := f.startZone(t, "zone-1", f.zoneToken(t, "zone-1"))
	z2 := f.startZone(t, "zone-2", f.zoneToken(t, "zone-2"))
	for _, z := range []*controlPlane{z1, z2} {
		waitFor(t, 20*time.Second, "the mesh synced to "+z.api, func() bool {
			_, err := z.meshctl("get", "mesh", "default")
			return err == nil
		})
	}
	z1.apply(t, dataplane("default", "backend-1", "backend", 9001))
	z2.apply(t, dataplane("default", "web-1", "web", 9002))

	tokFor := func(name string) string {
		return strings.TrimSpace(f.global.mustMeshctl(t, "generate", "dataplane-token", "--mesh", "default", "--name", name))
	}
	backend := startAgentWithToken(t, z1, "default", "backend-1", tokFor("backend-1"))
	web := startAgentWithToken(t, z2, "default", "web-1", tokFor("web-1"))
	b1, w1 := backend.waitCert(t), web.waitCert(t)
	if backend.file("ca.pem") != web.file("ca.pem") {
		t.Fatalf("the two zones give different trust bundles: one root must be generated once, on global")
	}
	clientSaw, serverSaw := handshake(t, backend.tlsConfig(t), web.tlsConfig(t))
	if clientSaw != "spiffe://default/backend" || serverSaw != "spiffe://default/web" {
		t.Fatalf("cross-zone handshake: client saw %q, server saw %q", clientSaw, serverSaw)
	}

	// Ownership, both ways, with errors that say where to go.
	if _, err := z1.meshctlIn(builtinMeshWith("2h"), "apply", "-f", "-"); err == nil || !strings.Contains(err.Error(), "managed by the global control plane") {
		t.Errorf("a Mesh applied on a zone: err = %v, want a refusal naming the global control plane", err)
	}
	if _, err := f.global.meshctlIn(dataplane("default", "db-1", "db", 9003), "apply", "-f", "-"); err == nil || !strings.Contains(err.Error(), "zone control plane") {
		t.Errorf("a Dataplane applied on global: err = %v, want a refusal", err)
	}
	if _, err := z1.meshctl("delete", "secret", "default.ca-builtin-cert-ca-1", "-m", "default"); err == nil || !strings.Contains(err.Error(), "managed by the global control plane") {
		t.Errorf("deleting a synced Secret on a zone: err = %v, want a refusal", err)
	}

	// A user token made on global works on a zone's HTTPS API (the user-token
	// keys and access roles are synced; the zone-token keys are not).
	userTok := strings.TrimSpace(f.global.mustMeshctl(t, "generate", "user-token", "--name", "alice", "--group", "mesh-system:admin", "--valid-for", "1h"))
	waitFor(t, 20*time.Second, "alice's token accepted by zone-1's HTTPS API", func() bool {
		status, _ := call(t, z1.httpsClient(t), "GET", "https://"+z1.apiTLS+"/meshes/default", userTok, "", "")
		return status == http.StatusOK
	})
	if out, err := z1.meshctl("get", "secrets", "-m", "default"); err != nil || strings.Contains(out, "zone-token-signing-key") {
		t.Errorf("zone-1's secrets (%v):\n%s", err, out)
	}
	if status, _ := call(t, z1.httpsClient(t), "GET", "https://"+z1.apiTLS+"/global-secrets/zone-token-signing-key-1", userTok, "", ""); status != http.StatusNotFound {
		t.Errorf("the zone-token signing key reached a zone (GET answers %d)", status)
	}

	// Global sees every zone's data planes and the zones themselves.
	waitFor(t, 20*time.Second, "both zones' data planes on global with their certificates", func() bool {
		out, err := f.global.meshctl("inspect", "dataplanes", "-m", "default")
		return err == nil && strings.Contains(out, "ZONE") && strings.Contains(out, "zone-1") && strings.Contains(out, "backend-1") &&
			strings.Contains(out, "zone-2") && strings.Contains(out, "web-1") && strings.Count(out, "ca-1") == 2
	})
	zones := f.global.mustMeshctl(t, "inspect", "zones")
	if strings.Count(zones, "Online") != 2 {
		t.Errorf("inspect zones on global does not show both zones online:\n%s", zones)
	}

	// Global down: the zones go on.
	f.global.proc.stop()
	waitFor(t, 20*time.Second, "zone-1 noticing global is gone", func() bool {
		c, _ := zoneStatus(t, z1)
		return !c
	})
	z1.apply(t, dataplane("default", "backend-2", "backend", 9004))
	tok2 := strings.TrimSpace(z1.mustMeshctl(t, "generate", "dataplane-token", "--mesh", "default", "--name", "backend-2"))
	late := startAgentWithToken(t, z1, "default", "backend-2", tok2)
	late.waitCert(t)
	if late.file("ca.pem") != backend.file("ca.pem") {
		t.Errorf("a data plane registered while global was down got another trust bundle")
	}
	// Both zones keep rotating their 10 s certificates from what they synced.
	for _, a := range []struct {
		a    *agent
		from *x509.Certificate
	}{{backend, b1}, {web, w1}} {
		waitFor(t, 30*time.Second, "a rotation with global down", func() bool { return rotatedFrom(a.a.leaf(), a.from) })
	}
	z1.restart(t) // restarts on what it synced, global still down
	afterRestart := backend.waitCert(t)
	waitFor(t, 30*time.Second, "backend-1 rotating after its zone restarted with global down", func() bool {
		return rotatedFrom(backend.leaf(), afterRestart) && verifyFiles(backend.file("cert.pem"), backend.file("ca.pem")) == nil
	})

	// Global back: a Mesh change made now reaches both zones (certificates
	// re-issued with the new lifetime), and backend-2 appears on global.
	f.global.launch(t)
	f.global.apply(t, builtinMeshWith("2h"))
	for _, a := range []*agent{backend, web} {
		waitFor(t, 30*time.Second, "a 2h certificate after the Mesh change on global", func() bool {
			c := a.leaf()
			return c != nil && c.NotAfter.Sub(c.NotBefore) > 90*time.Minute
		})
	}
	waitFor(t, 20*time.Second, "backend-2 (registered while global was down) on global", func() bool {
		out, err := f.global.meshctl("inspect", "dataplanes", "-m", "default")
		return err == nil && strings.Contains(out, "backend-2")
	})

	// A CA switch made on global re-issues every proxy in every zone from
	// the new root; the zones trust both roots while it runs, and only the
	// new one once it is done.
	oldRoot := backend.file("ca.pem")
	f.global.apply(t, `type: Mesh
name: default
mtls:
  enabledBackend: ca-2
  backends:
  - name: ca-1
    type: builtin
    dpCert:
      rotation:
        expiration: 2h
  - name: ca-2
    type: builtin
    dpCert:
      rotation:
        expiration: 2h
`)
	for _, a := range []*agent{backend, web} {
		waitFor(t, 30*time.Second, "a certificate from the new root, and a bundle of that root alone", func() bool {
			ca := a.file("ca.pem")
			return ca != "" && ca != oldRoot && !strings.Contains(ca, strings.TrimSpace(oldRoot)) && verifyFiles(a.file("cert.pem"), ca) == nil
		})
	}
	if backend.file("ca.pem") != web.file("ca.pem") {
		t.Errorf("after the switch, the zones give different trust bundles")
	}
	if !rotatedFrom(web.leaf(), w1) {
		t.Errorf("web-1 kept its certificate across the CA switch")
	}
	if clientSaw, serverSaw := handshake(t, backend.tlsConfig(t), web.tlsConfig(t)); clientSaw != "spiffe://default/backend" || serverSaw != "spiffe://default/web" {
		t.Errorf("cross-zone handshake after the switch: client saw %q, server saw %q", clientSaw, serverSaw)
	}
}

// TestZoneRefusals: global refuses a zone without a valid token for its own
// name (another zone's token, a revoked one) and a zone that does not trust
// global's certificate cannot connect; each says why, and a revocation cuts
// an open connection at once.
func TestZoneRefusals(t *testing.T) {
	t.Parallel()
	f := startGlobal(t)
	f.global.apply(t, builtinMeshWith("1h"))

	// A token for zone-1 presented by zone-2.
	wrong := f.startZone(t, "zone-2", f.zoneToken(t, "zone-1"))
	waitFor(t, 20*time.Second, "zone-2 told its token is for another zone", func() bool {
		c, e := zoneStatus(t, wrong)
		return !c && strings.Contains(e, `zone token is for zone "zone-1"`)
	})
	if _, err := wrong.meshctl("get", "mesh", "default"); err == nil {
		t.Errorf("a zone with another zone's token received the mesh")
	}

	// A zone that does not trust global's certificate.
	other := filepath.Join(t.TempDir(), "other-ca.pem")
	caPEM, _ := newCA(t, "not the global's CA")
	if err := os.WriteFile(other, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	untrusting := f.startZone(t, "zone-3", f.zoneToken(t, "zone-3"), "MESHCA_GLOBAL_CA_CERT="+other)
	waitFor(t, 20*time.Second, "zone-3 told global's certificate is not trusted", func() bool {
		c, e := zoneStatus(t, untrusting)
		return !c && strings.Contains(e, "certificate")
	})

	// A good zone, then its token revoked: cut at once.
	tokFile := f.zoneToken(t, "zone-1")
	good := f.startZone(t, "zone-1", tokFile)
	waitFor(t, 20*time.Second, "zone-1 connected", func() bool {
		c, _ := zoneStatus(t, good)
		return c
	})
	raw, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(string(raw), &claims); err != nil {
		t.Fatal(err)
	}
	f.global.apply(t, fmt.Sprintf("type: GlobalSecret\nname: zone-token-revocations\ndata: %s\n", base64.StdEncoding.EncodeToString([]byte(claims.ID))))
	waitFor(t, 10*time.Second, "zone-1 cut off after its token was revoked", func() bool {
		c, e := zoneStatus(t, good)
		return !c && strings.Contains(e, "revoked")
	})
	out := f.global.mustMeshctl(t, "inspect", "zones")
	if !strings.Contains(out, "zone-1") || strings.Contains(out, "Online") {
		t.Errorf("inspect zones after the revocation:\n%s", out)
	}
}

// TestMultiZoneACMPCA is the seed's multi-zone rule for ACM Private CA:
// "certificates for data plane proxies are requested from ACM Private CA by
// the zone control plane, not the global control plane". Global takes both
// of the seed's Meshes with its ACM PCA endpoint pointing at a closed port
// and never needs it; each zone obtains its data plane's certificate from
// the emulator, which issues exactly one certificate per data plane; a
// Mesh whose file: credential exists on no host is accepted by global and
// shows, in the zone, as the data plane's last error naming the field.
func TestMultiZoneACMPCA(t *testing.T) {
	t.Parallel()
	useSeedKeyFile(t)
	emu := startEmulator(t, "--ca", "arn="+seedARN+",type=ROOT,key=EC_prime256v1,mode=GENERAL_PURPOSE",
		"--credentials", "AKIDFROMSEC2:secret-from-file")
	aws := []string{"AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true", "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY="}
	kds := freePort(t)
	closed := freePort(t) // nothing listens here
	g := startCP(t, t.TempDir(), append([]string{"MESHCA_MODE=global", "MESHCA_KDS_ADDRESS=" + kds, "AWS_ENDPOINT_URL_ACM_PCA=http://" + closed}, aws...)...)
	f := &federation{global: g, kds: kds, zones: map[string]*controlPlane{}}

	g.apply(t, "type: Mesh\nname: default\n")
	g.apply(t, fmt.Sprintf("type: Secret\nmesh: default\nname: sec-1\ndata: %s\n---\ntype: Secret\nmesh: default\nname: sec-2\ndata: %s\n",
		base64.StdEncoding.EncodeToString(emu.chain(t, seedARN)), base64.StdEncoding.EncodeToString([]byte("AKIDFROMSEC2"))))
	for _, file := range []string{"mesh-universal.yaml", "mesh-kubernetes.yaml"} {
		if _, err := g.meshctl("apply", "-f", filepath.Join("..", "..", "examples", "acmpca", file)); err != nil {
			t.Fatalf("global, %s: %v", file, err)
		}
	}
	zoneEnv := append([]string{"AWS_ENDPOINT_URL_ACM_PCA=" + emu.url}, aws...)
	z1 := f.startZone(t, "zone-1", f.zoneToken(t, "zone-1"), zoneEnv...)
	z2 := f.startZone(t, "zone-2", f.zoneToken(t, "zone-2"), zoneEnv...)
	for _, z := range []*controlPlane{z1, z2} {
		waitFor(t, 20*time.Second, "the mesh and its secrets synced to "+z.api, func() bool {
			out, err := z.meshctl("get", "secrets", "-m", "default")
			return err == nil && strings.Contains(out, "sec-2")
		})
	}
	z1.apply(t, dataplane("default", "backend-1", "backend", 9001))
	z2.apply(t, dataplane("default", "web-1", "web", 9002))
	tokFor := func(name string) string {
		return strings.TrimSpace(g.mustMeshctl(t, "generate", "dataplane-token", "--mesh", "default", "--name", name))
	}
	backend := startAgentWithToken(t, z1, "default", "backend-1", tokFor("backend-1"))
	web := startAgentWithToken(t, z2, "default", "web-1", tokFor("web-1"))
	b, w := backend.waitCert(t), web.waitCert(t)
	if b.Subject.CommonName != "backend.mesh" || w.Subject.CommonName != "web.mesh" {
		t.Errorf("CNs %q %q, want backend.mesh web.mesh (the seed's commonName template)", b.Subject.CommonName, w.Subject.CommonName)
	}
	if clientSaw, serverSaw := handshake(t, backend.tlsConfig(t), web.tlsConfig(t)); clientSaw != "spiffe://default/backend" || serverSaw != "spiffe://default/web" {
		t.Errorf("cross-zone handshake: client saw %q, server saw %q", clientSaw, serverSaw)
	}
	if got := emu.stats(t).Issued; got != 2 {
		t.Errorf("ACM PCA issued %d certificates, want 2 (one per data plane, all by the zones)", got)
	}

	// A credential file that exists on no host: global accepts the Mesh (it
	// will not read the file); the zone says what is wrong.
	missing := strings.Replace(mustRead(t, filepath.Join("..", "..", "examples", "acmpca", "mesh-universal.yaml")), seedKeyFile, "/nonexistent/meshca/key.txt", 1)
	missing = strings.Replace(missing, "expiration: 24h", "expiration: 23h", 1) // a change that re-issues
	g.apply(t, missing)
	waitFor(t, 30*time.Second, "zone-1 reporting the missing file as backend-1's last error", func() bool {
		out, err := z1.meshctl("inspect", "dataplanes", "-m", "default")
		return err == nil && strings.Contains(out, "accessKeySecret") && strings.Contains(out, "/nonexistent/meshca/key.txt")
	})
	waitFor(t, 30*time.Second, "global's inspect zones showing zone-1's failing data plane and why", func() bool {
		out, err := g.meshctl("inspect", "zones")
		return err == nil && strings.Contains(out, "accessKeySecret") && strings.Contains(out, "/nonexistent/meshca/key.txt")
	})
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
