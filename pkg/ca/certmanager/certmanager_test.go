package certmanager

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/ca/certmanager/certmanagertest"
	"meshca/pkg/datasource"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

const (
	testMesh = "default"
	testNS   = "meshca-system"
)

type env struct {
	backend *Backend
	client  *fake.FakeDynamicClient
	signer  *certmanagertest.Signer
	store   *memory.Store
}

func setup(t *testing.T, opts ...certmanagertest.Option) env {
	t.Helper()
	st := memory.New()
	client := certmanagertest.NewFakeClient()
	deps := ca.Deps{Store: st, Sources: datasource.New(st), Now: time.Now}
	b := NewWithClient(deps, client).(*Backend)
	b.pollInterval = 20 * time.Millisecond
	signer, err := certmanagertest.NewSigner(client, testNS, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := signer.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		signer.Wait()
		if errs := signer.Errors(); len(errs) > 0 {
			t.Errorf("signer errors: %v", errs)
		}
	})
	return env{backend: b, client: client, signer: signer, store: st}
}

func mtlsBackend(t *testing.T, conf string, requestTimeout string) api.MTLSBackend {
	t.Helper()
	return api.MTLSBackend{
		Name:      "cm-1",
		Type:      Type,
		DpCert:    &api.DpCert{RequestTimeout: requestTimeout},
		RootChain: &api.RootChain{RequestTimeout: requestTimeout},
		Conf:      json.RawMessage(conf),
	}
}

func putSecret(t *testing.T, st store.Store, name string, data []byte) {
	t.Helper()
	spec, err := api.MarshalSpec(&api.Secret{Data: base64.StdEncoding.EncodeToString(data)})
	if err != nil {
		t.Fatal(err)
	}
	rec := store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: testMesh, Name: name}, Spec: spec}
	if err := st.Commit(context.Background(), store.Op{Kind: store.OpCreate, Record: rec}); err != nil {
		t.Fatal(err)
	}
}

// issueRequest builds a data-plane CSR with the SPIFFE URI SAN of service
// and the key usage extensions meshca's identity layer requests.
// verifyBackendLeaf checks that iss verifies against bundle as the leaf of
// the data plane of service backend in mesh default (one SPIFFE URI SAN) with
// the validity req asked for, and returns the leaf.
func verifyBackendLeaf(t *testing.T, iss ca.Issued, bundle []byte, req ca.IssueRequest) *x509.Certificate {
	t.Helper()
	leaf, err := ca.VerifyIssued(iss, bundle, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://default/backend" {
		t.Errorf("URI SANs = %v, want spiffe://default/backend", leaf.URIs)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != req.Validity {
		t.Errorf("validity = %s, want %s (the request's, as spec.duration)", got, req.Validity)
	}
	return leaf
}

func issueRequest(t *testing.T, dataplane, service string) ca.IssueRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Scheme: "spiffe", Host: testMesh, Path: "/" + service}
	kuBits := asn1.BitString{Bytes: []byte{0xa0}, BitLength: 3} // digitalSignature, keyEncipherment
	ku, _ := asn1.Marshal(kuBits)
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}, {1, 3, 6, 1, 5, 5, 7, 3, 2}})
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: service},
		URIs:    []*url.URL{u},
		ExtraExtensions: []pkix.Extension{
			{Id: oidKeyUsage, Critical: true, Value: ku},
			{Id: oidExtKeyUsage, Value: eku},
		},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca.IssueRequest{
		CSR:      csr,
		CSRPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		Identity: ca.Identity{Mesh: testMesh, Dataplane: dataplane, Services: []string{service}, URIs: []*url.URL{u}},
		Validity: 6 * time.Hour,
	}
}

func remaining(t *testing.T, e env) []string {
	t.Helper()
	list, err := e.client.Resource(CertificateRequestResource()).Namespace(testNS).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range list.Items {
		names = append(names, o.GetName())
	}
	return names
}

const issuerConf = `{"issuerRef":{"name":"ca-issuer"}}`

func TestIssue(t *testing.T) {
	e := setup(t)
	e.backend.pollInterval = time.Hour // the watch alone must see the outcome
	ctx := t.Context()
	mb := mtlsBackend(t, issuerConf, "5s")

	if err := e.backend.Ensure(ctx, testMesh, mb); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	bundle, err := e.backend.TrustBundle(ctx, testMesh, mb)
	if err != nil {
		t.Fatalf("TrustBundle: %v", err)
	}
	if string(bundle) != string(e.signer.CAPEM()) {
		t.Fatalf("trust bundle is not the issuer's status.ca:\n%s", bundle)
	}
	if n := len(e.signer.Requests()); n != 1 {
		t.Fatalf("Ensure+TrustBundle made %d requests, want one CA probe", n)
	}
	probe := e.signer.Requests()[0]
	if probe.Labels[LabelPurpose] != PurposeCAProbe || !strings.HasPrefix(probe.Name, "meshca-default-ca-probe-") {
		t.Errorf("probe request = %s %v", probe.Name, probe.Labels)
	}

	req := issueRequest(t, "backend-1", "backend")
	req.IdempotencyKey = "idem-1"
	iss, err := e.backend.Issue(ctx, testMesh, mb, req)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	leaf := verifyBackendLeaf(t, iss, bundle, req)
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("ext key usages = %v", leaf.ExtKeyUsage)
	}

	reqs := e.signer.Requests()
	if len(reqs) != 2 {
		t.Fatalf("signer saw %d requests, want 2", len(reqs))
	}
	got := reqs[1]
	if !strings.HasPrefix(got.Name, "meshca-default-backend-1-") {
		t.Errorf("name = %q, want generateName meshca-default-backend-1-", got.Name)
	}
	if iss.Ref != testNS+"/"+got.Name {
		t.Errorf("Ref = %q", iss.Ref)
	}
	wantLabels := map[string]string{LabelMesh: "default", LabelDataplane: "backend-1", LabelPurpose: PurposeDataplane}
	for k, v := range wantLabels {
		if got.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, got.Labels[k], v)
		}
	}
	if got.Annotations[AnnotationIdemKey] != "idem-1" {
		t.Errorf("idempotency annotation = %q", got.Annotations[AnnotationIdemKey])
	}
	wantIssuer := map[string]string{"name": "ca-issuer", "kind": "Issuer", "group": "cert-manager.io"}
	if fmt.Sprint(got.IssuerRef) != fmt.Sprint(wantIssuer) {
		t.Errorf("issuerRef = %v, want %v", got.IssuerRef, wantIssuer)
	}
	if got.Duration != "6h0m0s" || got.IsCA {
		t.Errorf("duration = %q isCA = %v", got.Duration, got.IsCA)
	}
	if want := []string{"digital signature", "key encipherment", "server auth", "client auth"}; !slices.Equal(got.Usages, want) {
		t.Errorf("usages = %q, want %q", got.Usages, want)
	}
	if got.CSR == nil || !got.CSR.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(req.CSR.PublicKey) {
		t.Error("spec.request does not carry the CSR")
	}
	if left := remaining(t, e); len(left) != 0 {
		t.Errorf("certificate requests left behind: %v", left)
	}
}

func TestIssueConcurrent(t *testing.T) {
	e := setup(t)
	mb := mtlsBackend(t, issuerConf, "5s")
	bundle, err := e.backend.TrustBundle(t.Context(), testMesh, mb)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			iss, err := e.backend.Issue(t.Context(), testMesh, mb, issueRequest(t, fmt.Sprintf("dp-%d", i), "web"))
			if err == nil {
				_, err = ca.VerifyIssued(iss, bundle, time.Now())
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if left := remaining(t, e); len(left) != 0 {
		t.Errorf("certificate requests left behind: %v", left)
	}
}

func TestIssueRefused(t *testing.T) {
	tests := []struct {
		name     string
		behavior certmanagertest.Behavior
		message  string
		want     string
	}{
		{"denied", certmanagertest.Deny, "no policy approved this request",
			"certificate request meshca-default-backend-1-00001 denied by policy.cert-manager.io: no policy approved this request"},
		{"failed", certmanagertest.Fail, "issuer secret not found",
			"certificate request meshca-default-backend-1-00001 failed: issuer secret not found (reason Failed)"},
		{"invalid", certmanagertest.Invalid, "bad CSR",
			"certificate request meshca-default-backend-1-00001 is invalid: bad CSR (reason RequestParsingError)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, certmanagertest.WithBehavior(tt.behavior))
			e.signer.SetBehavior(tt.behavior, tt.message)
			start := time.Now()
			_, err := e.backend.Issue(t.Context(), testMesh, mtlsBackend(t, issuerConf, "5s"), issueRequest(t, "backend-1", "backend"))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error = %v\nwant   %s", err, tt.want)
			}
			if time.Since(start) > 2*time.Second {
				t.Error("a terminal condition must end the wait at once")
			}
			if left := remaining(t, e); len(left) != 0 {
				t.Errorf("certificate requests left behind: %v", left)
			}
		})
	}
}

func TestIssueTimeout(t *testing.T) {
	e := setup(t, certmanagertest.WithBehavior(certmanagertest.Ignore))
	const timeout = 200 * time.Millisecond
	start := time.Now()
	_, err := e.backend.Issue(t.Context(), testMesh, mtlsBackend(t, issuerConf, "200ms"), issueRequest(t, "backend-1", "backend"))
	elapsed := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want a deadline error", err)
	}
	if !strings.Contains(err.Error(), "certificate request meshca-default-backend-1-00001 not issued within 200ms") ||
		!strings.Contains(err.Error(), "no approver approved or denied it") {
		t.Errorf("error = %v", err)
	}
	if elapsed < timeout || elapsed > timeout+2*time.Second {
		t.Errorf("Issue returned after %s, want about %s", elapsed, timeout)
	}
	if left := remaining(t, e); len(left) != 0 {
		t.Errorf("certificate requests left behind: %v", left)
	}
	if n := len(e.signer.Requests()); n != 1 {
		t.Errorf("signer saw %d requests, want 1", n)
	}
}

func TestMissingStatusCA(t *testing.T) {
	t.Run("without caCert", func(t *testing.T) {
		e := setup(t, certmanagertest.WithBehavior(certmanagertest.IssueWithoutCA))
		mb := mtlsBackend(t, issuerConf, "5s")
		const want = "issuer returned no status.ca: set conf.caCert"
		if err := e.backend.Ensure(t.Context(), testMesh, mb); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Ensure error = %v, want %q", err, want)
		}
		if _, err := e.backend.TrustBundle(t.Context(), testMesh, mb); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("TrustBundle error = %v, want %q", err, want)
		}
		if _, err := e.backend.Issue(t.Context(), testMesh, mb, issueRequest(t, "backend-1", "backend")); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Issue error = %v, want %q", err, want)
		}
		if left := remaining(t, e); len(left) != 0 {
			t.Errorf("certificate requests left behind: %v", left)
		}
	})
	t.Run("with caCert", func(t *testing.T) {
		e := setup(t, certmanagertest.WithBehavior(certmanagertest.IssueWithoutCA))
		putSecret(t, e.store, "cm-ca", e.signer.CAPEM())
		mb := mtlsBackend(t, `{"issuerRef":{"name":"ca-issuer","kind":"ClusterIssuer"},"caCert":{"secret":"cm-ca"}}`, "5s")
		if err := e.backend.Ensure(t.Context(), testMesh, mb); err != nil {
			t.Fatalf("Ensure: %v", err)
		}
		if n := len(e.signer.Requests()); n != 0 {
			t.Errorf("Ensure with caCert made %d requests, want none", n)
		}
		bundle, err := e.backend.TrustBundle(t.Context(), testMesh, mb)
		if err != nil {
			t.Fatal(err)
		}
		if string(bundle) != string(e.signer.CAPEM()) {
			t.Errorf("trust bundle is not conf.caCert")
		}
		iss, err := e.backend.Issue(t.Context(), testMesh, mb, issueRequest(t, "backend-1", "backend"))
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if _, err := ca.VerifyIssued(iss, bundle, time.Now()); err != nil {
			t.Fatal(err)
		}
		if got := e.signer.Requests()[0].IssuerRef["kind"]; got != "ClusterIssuer" {
			t.Errorf("issuerRef.kind = %q", got)
		}
	})
}

func TestIssuePollsWhenWatchRefused(t *testing.T) {
	e := setup(t) // the signer's watch is open before the reactor below
	e.client.PrependWatchReactor("certificaterequests", func(k8stesting.Action) (bool, watch.Interface, error) {
		return true, nil, errors.New("watch is forbidden")
	})
	mb := mtlsBackend(t, issuerConf, "5s")
	iss, err := e.backend.Issue(t.Context(), testMesh, mb, issueRequest(t, "backend-1", "backend"))
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	bundle, err := e.backend.TrustBundle(t.Context(), testMesh, mb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.VerifyIssued(iss, bundle, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := len(e.signer.Requests()); n != 1 {
		t.Errorf("TrustBundle after Issue made a probe: %d requests", n)
	}
}

func TestIssueCreateRefused(t *testing.T) {
	e := setup(t)
	e.client.PrependReactor("create", "certificaterequests", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`certificaterequests.cert-manager.io is forbidden`)
	})
	_, err := e.backend.Issue(t.Context(), testMesh, mtlsBackend(t, issuerConf, "5s"), issueRequest(t, "backend-1", "backend"))
	if err == nil || !strings.Contains(err.Error(), "create CertificateRequest in namespace meshca-system: certificaterequests.cert-manager.io is forbidden") {
		t.Errorf("error = %v", err)
	}
}

func leafPEM(t *testing.T) []byte {
	t.Helper()
	caCert, caKey, err := certmanagertest.NewCA("x", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: caCert.SerialNumber, Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestValidate(t *testing.T) {
	e := setup(t)
	putSecret(t, e.store, "ca", e.signer.CAPEM())
	putSecret(t, e.store, "leaf", leafPEM(t))
	putSecret(t, e.store, "junk", []byte("not a certificate"))
	inline := base64.StdEncoding.EncodeToString(e.signer.CAPEM())

	tests := []struct {
		name string
		conf string
		want map[string]string // field -> message fragment
	}{
		{"minimal", issuerConf, nil},
		{"cluster issuer with caCert", `{"issuerRef":{"name":"ca","kind":"ClusterIssuer","group":"cert-manager.io"},"caCert":{"secret":"ca"}}`, nil},
		{"external issuer", `{"issuerRef":{"name":"pca","kind":"AWSPCAClusterIssuer","group":"awspca.cert-manager.io"},"caCert":{"inline":"` + inline + `"},"commonName":"{{ tag \"kuma.io/service\" }}"}`, nil},
		{"no conf", ``, map[string]string{"conf.issuerRef.name": "must be set"}},
		{"no name", `{"issuerRef":{"kind":"Issuer"}}`, map[string]string{"conf.issuerRef.name": "must be set"}},
		{"bad name", `{"issuerRef":{"name":"Bad_Name"}}`, map[string]string{"conf.issuerRef.name": "not a valid Kubernetes name"}},
		{"bad kind and group", `{"issuerRef":{"name":"x","kind":"not a kind","group":"-bad-"}}`, map[string]string{
			"conf.issuerRef.kind": "not a valid Kubernetes kind", "conf.issuerRef.group": "not a valid API group"}},
		{"unknown top-level field", `{"issuerRef":{"name":"x"},"caBundle":"x"}`, map[string]string{"conf.caBundle": "unknown field"}},
		{"unknown issuerRef field", `{"issuerRef":{"name":"x","namespace":"y"}}`, map[string]string{"conf.issuerRef.namespace": "unknown field"}},
		{"unknown caCert field", `{"issuerRef":{"name":"x"},"caCert":{"path":"/x"}}`, map[string]string{"conf.caCert.path": "unknown field"}},
		{"wrong type", `{"issuerRef":"x"}`, map[string]string{"conf.issuerRef": "must be an object"}},
		{"caCert secret missing", `{"issuerRef":{"name":"x"},"caCert":{"secret":"nope"}}`, map[string]string{"conf.caCert.secret": `secret "nope" not found`}},
		{"caCert not a CA", `{"issuerRef":{"name":"x"},"caCert":{"secret":"leaf"}}`, map[string]string{"conf.caCert": "is not a CA certificate"}},
		{"caCert not PEM", `{"issuerRef":{"name":"x"},"caCert":{"secret":"junk"}}`, map[string]string{"conf.caCert": "not a PEM certificate"}},
		{"caCert two sources", `{"issuerRef":{"name":"x"},"caCert":{"secret":"ca","inlineString":"x"}}`, map[string]string{"conf.caCert": "exactly one"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.backend.Validate(t.Context(), testMesh, mtlsBackend(t, tt.conf, ""))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ve *api.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error = %v, want a ValidationError", err)
			}
			got := map[string]string{}
			for _, c := range ve.Causes {
				got[c.Field] = c.Message
			}
			for field, frag := range tt.want {
				if !strings.Contains(got[field], frag) {
					t.Errorf("field %s: message %q, want it to contain %q (all: %v)", field, got[field], frag, err)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("causes = %v, want fields %v", got, tt.want)
			}
		})
	}
	if n := len(e.signer.Requests()); n != 0 {
		t.Errorf("Validate created %d certificate requests", n)
	}
}

func TestNoCluster(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("KUBECONFIG", filepath.Join(home, "missing"))
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")

	st := memory.New()
	b, err := New(ca.Deps{Store: st, Sources: datasource.New(st)})
	if err != nil {
		t.Fatalf("New must not need a cluster: %v", err)
	}
	mb := mtlsBackend(t, issuerConf, "1s")
	const want = "no Kubernetes cluster configured: set --kubeconfig or run in a cluster"
	if err := b.Validate(t.Context(), testMesh, mb); err != nil {
		t.Errorf("Validate of a listed, not enabled backend needs no cluster: %v", err)
	}
	if err := b.Ensure(t.Context(), testMesh, mb); !errors.Is(err, ErrNoCluster) || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("Ensure error = %v, want %q", err, want)
	}
	if _, err := b.Issue(t.Context(), testMesh, mb, issueRequest(t, "dp", "web")); !errors.Is(err, ErrNoCluster) {
		t.Errorf("Issue error = %v, want ErrNoCluster", err)
	}
	// Conf errors are still reported first.
	var ve *api.ValidationError
	if err := b.Validate(t.Context(), testMesh, mtlsBackend(t, `{}`, "")); !errors.As(err, &ve) {
		t.Errorf("Validate of bad conf = %v, want a ValidationError", err)
	}
}

func TestKubeconfigSetting(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: "t"}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		settings map[string]string
		wantErr  string
	}{
		{"valid kubeconfig", map[string]string{SettingKubeconfig: kc, SettingNamespace: "mesh-ns"}, ""},
		{"missing kubeconfig", map[string]string{SettingKubeconfig: filepath.Join(dir, "nope")}, `kubeconfig "` + filepath.Join(dir, "nope") + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(ca.Deps{Settings: tt.settings})
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.(*Backend).requests()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("client: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("client error = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if _, err := New(ca.Deps{Settings: map[string]string{SettingNamespace: "Not_A_Namespace"}}); err == nil ||
		!strings.Contains(err.Error(), "k8s-namespace") {
		t.Errorf("New with a bad namespace: %v", err)
	}
	b, _ := New(ca.Deps{})
	if got := b.(*Backend).namespace; got != DefaultNamespace {
		t.Errorf("default namespace = %q", got)
	}
}

func TestConfAccessors(t *testing.T) {
	b := NewWithClient(ca.Deps{}, certmanagertest.NewFakeClient()).(*Backend)
	tests := []struct {
		conf    string
		secrets []string
		cn      string
	}{
		{issuerConf, nil, ""},
		{`{"issuerRef":{"name":"x"},"caCert":{"secret":"cm-ca"},"commonName":"{{ tag \"kuma.io/service\" }}.mesh"}`, []string{"cm-ca"}, `{{ tag "kuma.io/service" }}.mesh`},
		{`{"issuerRef":{"name":"x"},"caCert":{"inlineString":"x"}}`, nil, ""},
	}
	for _, tt := range tests {
		mb := mtlsBackend(t, tt.conf, "")
		if got := b.UsedSecrets(mb); !slices.Equal(got, tt.secrets) {
			t.Errorf("UsedSecrets(%s) = %v, want %v", tt.conf, got, tt.secrets)
		}
		if got := b.CommonNameTemplate(mb); got != tt.cn {
			t.Errorf("CommonNameTemplate(%s) = %q, want %q", tt.conf, got, tt.cn)
		}
	}
}

func TestNames(t *testing.T) {
	tests := []struct{ mesh, name, wantGen, wantLabel string }{
		{"default", "backend-1", "meshca-default-backend-1-", "backend-1"},
		{"Prod_Mesh", "web.ns", "meshca-prod-mesh-web.ns-", "web.ns"},
		{"m", strings.Repeat("a", 80), "meshca-m-" + strings.Repeat("a", 48) + "-", strings.Repeat("a", 63)},
		{"m", "x/y", "meshca-m-x-y-", "x_y"},
	}
	for _, tt := range tests {
		if got := generateName(tt.mesh, tt.name); got != tt.wantGen {
			t.Errorf("generateName(%q, %q) = %q, want %q", tt.mesh, tt.name, got, tt.wantGen)
		}
		if got := labelValue(tt.name); got != tt.wantLabel {
			t.Errorf("labelValue(%q) = %q, want %q", tt.name, got, tt.wantLabel)
		}
	}
}

func TestCSRUsagesDefault(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	if got := csrUsages(csr); !slices.Equal(got, defaultUsages) {
		t.Errorf("usages of a CSR without extensions = %q, want %q", got, defaultUsages)
	}
}
