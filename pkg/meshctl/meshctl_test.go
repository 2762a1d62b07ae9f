package meshctl_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/apiserver/apiservertest"
	"meshca/pkg/meshctl"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/tokens"
)

type result struct {
	stdout, stderr string
	code           int
}

type harness struct {
	t     *testing.T
	env   *apiservertest.Env
	stdin string
	extra []func(*meshctl.App) *cobra.Command
}

func newHarness(t *testing.T) *harness {
	env := apiservertest.Start(t, apiserver.Options{Version: "1.2.3"})
	return &harness{t: t, env: env}
}

// run executes meshctl with args against the test server (via MESHCTL_API).
func (h *harness) run(args ...string) result {
	h.t.Helper()
	var out, errb bytes.Buffer
	cfg := meshctl.Config{
		Version: "9.9.9",
		Getenv: func(k string) string {
			if k == meshctl.EnvAPI {
				return h.env.Server.URL
			}
			return ""
		},
		HTTPClient: h.env.Server.Client(),
		Now:        func() time.Time { return time.Now().Add(3 * time.Hour) },
		Stdin:      strings.NewReader(h.stdin),
		Stdout:     &out,
		Stderr:     &errb,
		Commands:   h.extra,
	}
	code := meshctl.Main(h.t.Context(), cfg, args)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}

func (r result) fails(t *testing.T) result {
	t.Helper()
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "Error: ") {
		t.Fatalf("stderr does not start with Error: %q", r.stderr)
	}
	return r
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const secretB64 = "c2VjcmV0IQ==" // "secret!"

// multiDoc mixes both forms: a Universal Mesh, a core/v1 Secret, the same
// Mesh in Kubernetes form enabling a backend that uses the Secret, and a
// Universal Dataplane.
const multiDoc = `# meshes and their secrets
type: Mesh
name: default
---
apiVersion: v1
kind: Secret
metadata:
  name: ca-cert
  namespace: kuma-system
  labels:
    kuma.io/mesh: default
type: system.kuma.io/secret
data:
  value: ` + secretB64 + `
---
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: ca
    backends:
    - name: ca
      type: provided
      conf:
        caCert:
          secret: ca-cert
---
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 10.0.0.1
  inbound:
  - port: 8080
    tags:
      kuma.io/service: backend
      version: v1
`

func (h *harness) applyFixture() {
	h.t.Helper()
	h.run("apply", "-f", writeFile(h.t, "all.yaml", multiDoc)).ok(h.t)
}

func TestApplyMultiDocument(t *testing.T) {
	h := newHarness(t)
	file := writeFile(t, "all.yaml", multiDoc)
	r := h.run("apply", "-f", file).ok(t)
	want := "Mesh \"default\" created\nSecret \"ca-cert\" created\nMesh \"default\" configured\nDataplane \"backend-1\" created\n"
	if r.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}

	ctx := t.Context()
	m, err := h.env.Manager.Get(ctx, api.TypeMesh, "", "default")
	if err != nil {
		t.Fatal(err)
	}
	if b, _, ok := m.(*api.Mesh).EnabledMTLSBackend(); !ok || b.Type != "provided" {
		t.Errorf("stored mesh mtls = %+v", m.(*api.Mesh).MTLS)
	}
	s, err := h.env.Manager.Get(ctx, api.TypeSecret, "default", "ca-cert")
	if err != nil || s.(*api.Secret).Data != secretB64 {
		t.Errorf("stored secret %+v, %v", s, err)
	}
	if _, err := h.env.Manager.Get(ctx, api.TypeDataplane, "default", "backend-1"); err != nil {
		t.Errorf("dataplane not stored: %v", err)
	}

	// Again: what is as stored is unchanged (and not written); the Mesh
	// changes twice. Two -f, the second from stdin.
	h.stdin = `apiVersion: v1
kind: Secret
metadata:
  name: global-ca
type: system.kuma.io/global-secret
data:
  value: ` + secretB64 + "\n"
	r = h.run("apply", "-f", file, "-f", "-").ok(t)
	dpBefore, err := h.env.Manager.Get(ctx, api.TypeDataplane, "default", "backend-1")
	if err != nil {
		t.Fatal(err)
	}
	want = "Mesh \"default\" configured\nSecret \"ca-cert\" unchanged\nMesh \"default\" configured\nDataplane \"backend-1\" unchanged\nGlobalSecret \"global-ca\" created\n"
	if r.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
	if _, err := h.env.Manager.Get(ctx, api.TypeGlobalSecret, "", "global-ca"); err != nil {
		t.Errorf("global secret not stored: %v", err)
	}
	if dpAfter, err := h.env.Manager.Get(ctx, api.TypeDataplane, "default", "backend-1"); err != nil ||
		!dpAfter.GetMeta().ModificationTime.Equal(dpBefore.GetMeta().ModificationTime) {
		t.Errorf("an unchanged Dataplane was written again (%v)", err)
	}
	// A changed field is configured again.
	r = h.run("apply", "-f", writeFile(t, "dp.yaml", "type: Dataplane\nmesh: default\nname: backend-1\nnetworking: {address: 10.0.0.2, inbound: [{port: 8080, tags: {kuma.io/service: backend, version: v1}}]}\n")).ok(t)
	if want := "Dataplane \"backend-1\" configured\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
}

func TestApplyDryRun(t *testing.T) {
	h := newHarness(t)
	h.applyFixture()
	file := writeFile(t, "new.yaml", "type: Mesh\nname: other\n---\ntype: Mesh\nname: default\n")
	r := h.run("apply", "--dry-run", "-f", file).ok(t)
	if want := "Mesh \"other\" (dry run) valid\nMesh \"default\" (dry run) valid\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	if _, err := h.env.Manager.Get(t.Context(), api.TypeMesh, "", "other"); err == nil {
		t.Error("dry run stored a mesh")
	}
	m, _ := h.env.Manager.Get(t.Context(), api.TypeMesh, "", "default")
	if m.(*api.Mesh).MTLS == nil {
		t.Error("dry run changed mesh default")
	}
	// A server-side refusal in a dry run.
	bad := writeFile(t, "bad.yaml", "type: Secret\nmesh: nope\nname: s\ndata: "+secretB64+"\n")
	r = h.run("apply", "--dry-run", "-f", bad).fails(t)
	if !strings.Contains(r.stderr, "\nmesh: mesh \"nope\" does not exist") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestApplyServerErrorKubernetesForm(t *testing.T) {
	h := newHarness(t)
	h.run("apply", "-f", writeFile(t, "m.yaml", "type: Mesh\nname: default\n")).ok(t)
	file := writeFile(t, "mesh.yaml", `type: Secret
mesh: default
name: s1
data: `+secretB64+`
---
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: ca
    backends:
    - name: ca
      type: provided
      conf:
        caCert:
          secret: missing
---
type: Mesh
name: never
`)
	r := h.run("apply", "-f", file).fails(t)
	if r.stdout != "Secret \"s1\" created\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	wantLines := []string{
		`Error: Mesh "default" (` + file + `, document 2): Resource is not valid`,
		`spec.mtls.backends[0].conf.caCert.secret: secret "missing" does not exist in mesh "default"`,
		`1 resource(s) before it were applied and stay applied: Secret "s1"`,
	}
	if strings.Join(lines, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, strings.Join(wantLines, "\n"))
	}
	if _, err := h.env.Manager.Get(t.Context(), api.TypeMesh, "", "never"); err == nil {
		t.Error("a document after the failing one was applied")
	}

	// The same mistake in Universal form keeps Universal paths.
	uni := writeFile(t, "uni.yaml", `type: Mesh
name: default
mtls:
  enabledBackend: ca
  backends:
  - name: ca
    type: provided
    conf:
      caCert:
        secret: missing
`)
	r = h.run("apply", "-f", uni).fails(t)
	if !strings.Contains(r.stderr, "\nmtls.backends[0].conf.caCert.secret: secret \"missing\"") || !strings.Contains(r.stderr, "nothing was applied") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestApplyLocalErrorsApplyNothing(t *testing.T) {
	h := newHarness(t)
	file := writeFile(t, "bad.yaml", `type: Mesh
name: first
---
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: "bad name"
spec:
  mtls:
    enabledBackend: nope
`)
	r := h.run("apply", "-f", file).fails(t)
	for _, want := range []string{
		`Mesh "bad name" (` + file + `, document 2): Resource is not valid`,
		"\nmetadata.name: ",
		"\nspec.mtls.enabledBackend: backend \"nope\" is not among mtls.backends",
		"nothing was applied",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
	if l, _ := h.env.Store.List(t.Context(), api.TypeMesh, ""); len(l) != 0 {
		t.Errorf("meshes stored: %v", l)
	}

	// Decoding errors (unknown field in the spec) also stop everything.
	file = writeFile(t, "unknown.yaml", "type: Mesh\nname: a\n---\napiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: b\nspec:\n  mtlss: {}\n")
	r = h.run("apply", "-f", file).fails(t)
	if !strings.Contains(r.stderr, "spec.mtlss: unknown field") || !strings.Contains(r.stderr, "nothing was applied") {
		t.Errorf("stderr %q", r.stderr)
	}
	h.run("apply").fails(t)
	h.run("apply", "-f", filepath.Join(t.TempDir(), "absent.yaml")).fails(t)
}

func TestGet(t *testing.T) {
	h := newHarness(t)
	h.applyFixture()
	h.run("apply", "-f", writeFile(t, "o.yaml", "type: Mesh\nname: other\n---\ntype: Secret\nmesh: other\nname: x\ndata: "+secretB64+"\n")).ok(t)

	r := h.run("get", "meshes").ok(t)
	want := "NAME      MTLS          AGE\n" +
		"default   provided/ca   3h\n" +
		"other     off           3h\n"
	if r.stdout != want {
		t.Errorf("get meshes:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = h.run("get", "dataplanes").ok(t)
	want = "NAME        MESH      SERVICES   AGE\n" +
		"backend-1   default   backend    3h\n"
	if r.stdout != want {
		t.Errorf("get dataplanes:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = h.run("get", "secrets", "-m", "other").ok(t)
	if want = "NAME   MESH    AGE\nx      other   3h\n"; r.stdout != want {
		t.Errorf("get secrets -m other:\n%s", r.stdout)
	}
	r = h.run("get", "secrets", "--all-meshes").ok(t)
	if strings.Count(r.stdout, "\n") != 3 || !strings.Contains(r.stdout, "ca-cert") || !strings.Contains(r.stdout, "x ") {
		t.Errorf("get secrets -A:\n%s", r.stdout)
	}

	// yaml of one resource decodes back to what was applied.
	r = h.run("get", "mesh", "default", "-o", "yaml").ok(t)
	res, form, err := api.DecodeOne([]byte(r.stdout))
	if err != nil || form != api.FormUniversal {
		t.Fatalf("decode get -o yaml: %v\n%s", err, r.stdout)
	}
	mesh := res.(*api.Mesh)
	if mesh.Name != "default" || mesh.MTLS == nil || mesh.MTLS.EnabledBackend != "ca" || mesh.CreationTime.IsZero() {
		t.Errorf("get mesh -o yaml = %+v", mesh)
	}
	r = h.run("get", "secret", "ca-cert", "-o", "json").ok(t)
	if strings.Contains(r.stdout, secretB64) || strings.Contains(r.stdout, `"data"`) {
		t.Errorf("get secret without --show-data printed the data: %s", r.stdout)
	}
	r = h.run("get", "secret", "ca-cert", "--show-data", "-o", "json").ok(t)
	var sec api.Secret
	if err := json.Unmarshal([]byte(r.stdout), &sec); err != nil || sec.Data != secretB64 || sec.Mesh != "default" {
		t.Errorf("get secret -o json: %v %s", err, r.stdout)
	}
	r = h.run("get", "dataplane", "backend-1", "-m", "default", "-o", "json").ok(t)
	var dp api.Dataplane
	if err := json.Unmarshal([]byte(r.stdout), &dp); err != nil || dp.Networking.Address != "10.0.0.1" {
		t.Errorf("get dataplane -o json: %v %s", err, r.stdout)
	}

	r = h.run("get", "meshes", "-o", "json").ok(t)
	var list struct {
		Total int               `json:"total"`
		Items []json.RawMessage `json:"items"`
		Next  *string           `json:"next"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || list.Total != 2 || len(list.Items) != 2 || list.Next != nil {
		t.Errorf("get meshes -o json: %v %s", err, r.stdout)
	}
	r = h.run("get", "global-secrets", "-o", "yaml").ok(t)
	if r.stdout != "items: []\nnext: null\ntotal: 0\n" {
		t.Errorf("empty list yaml %q", r.stdout)
	}

	r = h.run("get", "mesh", "nope").fails(t)
	if r.stderr != "Error: Mesh \"nope\" not found\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	h.run("get", "mesh").fails(t)
	h.run("get", "meshes", "-o", "xml").fails(t)
	r = h.run("get", "widgets").fails(t)
	if !strings.Contains(r.stderr, `unknown resource type "widgets"`) {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestGetFollowsPages(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	const n = apiserver.DefaultPageSize*2 + 7
	for i := range n {
		g := &api.GlobalSecret{Meta: api.Meta{Type: api.TypeGlobalSecret, Name: fmt.Sprintf("g-%03d", i)}, Data: secretB64}
		if _, err := h.env.Manager.Apply(ctx, g, resources.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r := h.run("get", "global-secrets").ok(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != n+1 || !strings.HasPrefix(lines[1], "g-000") || !strings.HasPrefix(lines[n], fmt.Sprintf("g-%03d", n-1)) {
		t.Errorf("%d lines; first %q last %q", len(lines), lines[1], lines[len(lines)-1])
	}
}

func TestDelete(t *testing.T) {
	h := newHarness(t)
	h.applyFixture()
	ctx := t.Context()

	r := h.run("delete", "mesh", "default").fails(t)
	if !strings.Contains(r.stderr, `mesh "default" still has 1 dataplane(s)`) {
		t.Errorf("stderr %q", r.stderr)
	}
	r = h.run("delete", "secret", "ca-cert").fails(t)
	if !strings.Contains(r.stderr, `secret "ca-cert" is used by backend "ca"`) {
		t.Errorf("stderr %q", r.stderr)
	}
	r = h.run("delete", "dataplane", "backend-1", "-m", "default").ok(t)
	if r.stdout != "Dataplane \"backend-1\" deleted\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = h.run("delete", "dataplane", "backend-1").fails(t)
	if !strings.Contains(r.stderr, `Dataplane "backend-1" in mesh "default" not found`) {
		t.Errorf("stderr %q", r.stderr)
	}
	h.run("delete", "mesh", "default").ok(t)
	if _, err := h.env.Store.Get(ctx, store.Key{Type: api.TypeSecret, Mesh: "default", Name: "ca-cert"}); err == nil {
		t.Error("secret survived its mesh")
	}
	h.run("apply", "-f", writeFile(t, "g.yaml", "type: GlobalSecret\nname: g\ndata: "+secretB64+"\n")).ok(t)
	if r := h.run("delete", "global-secret", "g").ok(t); r.stdout != "GlobalSecret \"g\" deleted\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	h.run("delete", "global-secret").fails(t)
}

func TestVersionAndAPIAddress(t *testing.T) {
	h := newHarness(t)
	r := h.run("version").ok(t)
	if want := "Client: meshctl 9.9.9\nServer: meshca 1.2.3 (based on Kuma 2.14.3)\n"; r.stdout != want {
		t.Errorf("version %q, want %q", r.stdout, want)
	}
	// --api overrides the environment.
	r = h.run("--api", "http://127.0.0.1:1", "version").fails(t)
	if !strings.Contains(r.stderr, "could not reach the meshca API at http://127.0.0.1:1") || !strings.HasPrefix(r.stdout, "Client: meshctl 9.9.9") {
		t.Errorf("unreachable: stdout %q stderr %q", r.stdout, r.stderr)
	}
	// host:port alone is taken as http://host:port.
	hostPort := strings.TrimPrefix(h.env.Server.URL, "http://")
	if r := h.run("--api", hostPort, "get", "meshes").ok(t); !strings.HasPrefix(r.stdout, "NAME") {
		t.Errorf("--api %s: %q", hostPort, r.stdout)
	}
	r = h.run("--api", "ftp://127.0.0.1:5681", "get", "meshes").fails(t)
	if !strings.Contains(r.stderr, "must be an http:// or https:// URL") {
		t.Errorf("bad address: %q", r.stderr)
	}
	r = h.run("get", "meshes", "--bogus").fails(t)
	if !strings.Contains(r.stderr, "Run 'meshctl --help' for usage.") {
		t.Errorf("flag error: %q", r.stderr)
	}
}

func TestExtraCommands(t *testing.T) {
	h := newHarness(t)
	h.extra = []func(*meshctl.App) *cobra.Command{func(app *meshctl.App) *cobra.Command {
		return &cobra.Command{
			Use: "ping",
			RunE: func(cmd *cobra.Command, _ []string) error {
				c, err := app.Client()
				if err != nil {
					return err
				}
				idx, err := c.Index(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "pong", idx.Version)
				return nil
			},
		}
	}}
	if r := h.run("ping").ok(t); r.stdout != "pong 1.2.3\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestKubeField(t *testing.T) {
	for _, tc := range []struct{ typ, in, want string }{
		{api.TypeMesh, "mtls.backends[0].conf.caCert.secret", "spec.mtls.backends[0].conf.caCert.secret"},
		{api.TypeMesh, "name", "metadata.name"},
		{api.TypeDataplane, "mesh", `metadata.labels["kuma.io/mesh"]`},
		{api.TypeDataplane, "networking.address", "spec.networking.address"},
		{api.TypeSecret, "data", "data.value"},
		{api.TypeMesh, "type", "kind"},
		{api.TypeMesh, "", ""},
	} {
		if got := meshctl.KubeField(tc.typ, tc.in); got != tc.want {
			t.Errorf("KubeField(%s, %q) = %q, want %q", tc.typ, tc.in, got, tc.want)
		}
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2025, 1, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ago  time.Duration
		want string
	}{{30 * time.Second, "30s"}, {5 * time.Minute, "5m"}, {3 * time.Hour, "3h"}, {72 * time.Hour, "3d"}} {
		if got := meshctl.Age(now.Add(-tc.ago), now); got != tc.want {
			t.Errorf("Age(%v) = %q, want %q", tc.ago, got, tc.want)
		}
	}
	if meshctl.Age(time.Time{}, now) != "-" {
		t.Error("zero time")
	}
}

func TestGenerateSigningKey(t *testing.T) {
	var out, errOut bytes.Buffer
	code := meshctl.Main(context.Background(), meshctl.Config{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}, []string{"generate", "signing-key"})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	pemKey, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("output is not base64: %v", err)
	}
	if err := tokens.ParseSigningKey(pemKey); err != nil {
		t.Fatalf("not a signing key: %v", err)
	}
}
