package acmpca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"meshca/pkg/acmpcaemu"
	"meshca/pkg/api"
	"meshca/pkg/ca"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
)

const (
	seedARN  = "arn:aws:acm-pca:region:account:certificate-authority/12345678-1234-1234-1234-123456789012"
	mesh     = "default"
	testAK   = "AKIDMESHCATEST0001"
	testSK   = "secret-access-key-from-file"
	seedFile = "/tmp/accesss_key.txt"
)

// env is one emulator, store and backend wired together.
type env struct {
	t       *testing.T
	emu     *acmpcaemu.Server
	ts      *httptest.Server
	store   *memory.Store
	be      *backend
	chain   []byte // the CA's chain as the emulator writes it (CA first, root last)
	keyFile string
}

type envOpts struct {
	emu   acmpcaemu.Options
	spec  acmpcaemu.CASpec
	hooks func(*hooks)
	// noEnvEndpoint leaves AWS_ENDPOINT_URL_ACM_PCA unset.
	noEnvEndpoint bool
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// isolateAWS keeps the developer's AWS files and variables out of the test.
func isolateAWS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"AWS_CONFIG_FILE":             empty,
		"AWS_SHARED_CREDENTIALS_FILE": empty,
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_REGION":                  "us-east-1",
		"AWS_ACCESS_KEY_ID":           "",
		"AWS_SECRET_ACCESS_KEY":       "",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_ACM_PCA":    "",
		"AWS_MAX_ATTEMPTS":            "",
		"AWS_RETRY_MODE":              "",
	} {
		t.Setenv(k, v)
		if v == "" {
			os.Unsetenv(k)
		}
	}
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	isolateAWS(t)
	if o.emu.Logger == nil {
		o.emu.Logger = quiet()
	}
	if o.emu.Credentials == nil {
		o.emu.Credentials = map[string]string{testAK: testSK}
	}
	emu, err := acmpcaemu.New(o.emu)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	if o.spec.ARN == "" {
		o.spec.ARN = seedARN
	}
	if o.spec.KeyAlgorithm == "" {
		o.spec.KeyAlgorithm = "EC_prime256v1"
	}
	info, err := emu.AddCA(context.Background(), o.spec)
	if err != nil {
		t.Fatalf("AddCA: %v", err)
	}
	ts := httptest.NewServer(emu.Handler())
	t.Cleanup(ts.Close)
	if !o.noEnvEndpoint {
		t.Setenv("AWS_ENDPOINT_URL_ACM_PCA", ts.URL)
	}
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	e := &env{t: t, emu: emu, ts: ts, store: st, chain: info.ChainPEM}
	e.keyFile = filepath.Join(t.TempDir(), "access_key.txt")
	if err := os.WriteFile(e.keyFile, []byte(testSK+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.putSecret("sec-1", info.ChainPEM)
	e.putSecret("sec-2", []byte(testAK+"\n"))
	h := defaultHooks()
	h.pollMinDelay = 100 * time.Millisecond
	h.pollMaxDelay = 500 * time.Millisecond
	if o.hooks != nil {
		o.hooks(&h)
	}
	be, err := newBackend(ca.Deps{Store: st, Logger: quiet()}, h)
	if err != nil {
		t.Fatal(err)
	}
	e.be = be
	return e
}

func (e *env) putSecret(name string, data []byte) {
	e.t.Helper()
	spec, err := api.MarshalSpec(&api.Secret{Data: base64.StdEncoding.EncodeToString(data)})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := store.Upsert(context.Background(), e.store, store.Record{
		Key:  store.Key{Type: api.TypeSecret, Mesh: mesh, Name: name},
		Spec: spec,
	}); err != nil {
		e.t.Fatal(err)
	}
}

// seedBackend is the backend of examples/acmpca/mesh-universal.yaml, with
// the access key secret file moved into the test's directory.
func (e *env) seedBackend() api.MTLSBackend {
	e.t.Helper()
	data, err := os.ReadFile("../../../examples/acmpca/mesh-universal.yaml")
	if err != nil {
		e.t.Fatal(err)
	}
	res, _, err := api.DecodeOne(data)
	if err != nil {
		e.t.Fatalf("decode seed example: %v", err)
	}
	mb, _, ok := res.(*api.Mesh).EnabledMTLSBackend()
	if !ok {
		e.t.Fatal("seed example has no enabled backend")
	}
	if !strings.Contains(string(mb.Conf), seedFile) {
		e.t.Fatalf("seed conf does not name %s: %s", seedFile, mb.Conf)
	}
	mb.Conf = json.RawMessage(strings.ReplaceAll(string(mb.Conf), seedFile, e.keyFile))
	return mb
}

// withConf returns mb with conf fields set (nil deletes the field).
func withConf(t *testing.T, mb api.MTLSBackend, set map[string]any) api.MTLSBackend {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(mb.Conf, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range set {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	mb.Conf = js
	return mb
}

func newRequest(t *testing.T, key string, validity time.Duration) ca.IssueRequest {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://default/backend")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "backend.mesh"},
		URIs:    []*url.URL{u},
	}, priv)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	// RequestedAt is set as the identity layer sets it: a re-sent request
	// carries the time it was first made, so its arguments are identical.
	return ca.IssueRequest{
		RequestedAt:    time.Now(),
		CSR:            csr,
		CSRPEM:         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		Identity:       ca.Identity{Mesh: mesh, Dataplane: "backend-1", Services: []string{"backend"}, URIs: []*url.URL{u}, CommonName: "backend.mesh"},
		Validity:       validity,
		IdempotencyKey: key,
	}
}

func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	close(ch)
	var sum float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		if d.Counter != nil {
			sum += d.Counter.GetValue()
		}
	}
	return sum
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error containing %q, got nil", parts)
	}
	t.Logf("error: %v", err)
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

func TestSeedConfIssuesVerifiableCertificate(t *testing.T) {
	e := newEnv(t, envOpts{})
	mb := e.seedBackend()
	ctx := context.Background()

	if got := e.be.CommonNameTemplate(mb); got != `{{ tag "kuma.io/service" }}.mesh` {
		t.Errorf("CommonNameTemplate = %q", got)
	}
	if got := e.be.UsedSecrets(mb); strings.Join(got, ",") != "sec-1,sec-2" {
		t.Errorf("UsedSecrets = %v", got)
	}
	if err := e.be.Validate(ctx, mesh, mb); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if err := e.be.Ensure(ctx, mesh, mb); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	bundle, err := e.be.TrustBundle(ctx, mesh, mb)
	if err != nil {
		t.Fatalf("TrustBundle: %v", err)
	}
	roots, err := ca.ParseCertificates(bundle)
	if err != nil || len(roots) != 1 || roots[0].CheckSignatureFrom(roots[0]) != nil {
		t.Fatalf("trust bundle should be the self-signed root, got %d certs (%v)", len(roots), err)
	}

	req := newRequest(t, "0123456789abcdef0123456789abcdef", mb.CertExpiration())
	now := time.Now()
	iss, err := e.be.Issue(ctx, mesh, mb, req)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	leaf, err := ca.VerifyIssued(iss, bundle, time.Now())
	if err != nil {
		t.Fatalf("issued certificate does not verify: %v", err)
	}
	if leaf.Subject.CommonName != "backend.mesh" {
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://default/backend" {
		t.Errorf("URI SANs = %v", leaf.URIs)
	}
	if d := leaf.NotAfter.Sub(now) - 24*time.Hour; d < -time.Minute || d > time.Minute {
		t.Errorf("lifetime = %s from issuance, want 24h ± 1m", leaf.NotAfter.Sub(now))
	}
	if !strings.HasPrefix(iss.Ref, seedARN+"/certificate/") {
		t.Errorf("Ref = %q", iss.Ref)
	}
	if !e.be.IdempotentIssue() {
		t.Error("IdempotentIssue = false")
	}

	stats := e.emu.Stats()
	if stats.Issued != 1 {
		t.Errorf("emulator issued %d certificates, want 1", stats.Issued)
	}
	if len(stats.AccessKeys) != 1 || stats.AccessKeys[testAK] == 0 {
		t.Errorf("access keys used = %v, want only %s (from sec-2)", stats.AccessKeys, testAK)
	}
	if stats.Protocols["rpcv2Cbor"] == 0 {
		t.Errorf("protocols = %v, want the SDK's default rpcv2Cbor", stats.Protocols)
	}
	if got := counterValue(t, e.be.m.issued); got != 1 {
		t.Errorf("certificates issued metric = %v, want 1", got)
	}
	if got := counterValue(t, e.be.m.requests); got < 4 {
		t.Errorf("requests metric = %v, want at least 4 (Describe, GetCACert, Issue, Get)", got)
	}
	// Ensure after success is served from the cache.
	before := e.emu.Stats().Requests["DescribeCertificateAuthority"]["ok"]
	for range 5 {
		if err := e.be.Ensure(ctx, mesh, mb); err != nil {
			t.Fatal(err)
		}
	}
	if after := e.emu.Stats().Requests["DescribeCertificateAuthority"]["ok"]; after != before {
		t.Errorf("repeated Ensure made %d DescribeCertificateAuthority calls, want 0", after-before)
	}
}

func TestSubordinateCAChainOfThree(t *testing.T) {
	e := newEnv(t, envOpts{spec: acmpcaemu.CASpec{Type: "SUBORDINATE", KeyAlgorithm: "RSA_2048"}})
	ctx := context.Background()
	chain, err := ca.ParseCertificates(e.chain)
	if err != nil || len(chain) != 2 {
		t.Fatalf("emulator chain: %d certs, %v", len(chain), err)
	}
	for name, caCert := range map[string][]byte{
		"full chain": e.chain,
		"root only":  ca.EncodeCertificates(chain[1]),
	} {
		t.Run(name, func(t *testing.T) {
			e.putSecret("sec-1", caCert)
			mb := e.seedBackend()
			bundle, err := e.be.TrustBundle(ctx, mesh, mb)
			if err != nil {
				t.Fatalf("TrustBundle: %v", err)
			}
			roots, _ := ca.ParseCertificates(bundle)
			if len(roots) != 1 || !roots[0].Equal(chain[1]) {
				t.Fatalf("trust bundle is not the root")
			}
			iss, err := e.be.Issue(ctx, mesh, mb, newRequest(t, "sub-"+strings.ReplaceAll(name, " ", "-"), time.Hour))
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			leaf, _ := ca.ParseCertificates(iss.CertPEM)
			inter := x509.NewCertPool()
			issued, _ := ca.ParseCertificates(iss.ChainPEM)
			for _, c := range issued {
				inter.AddCert(c)
			}
			pool := x509.NewCertPool()
			pool.AddCert(roots[0])
			paths, err := leaf[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if err != nil || len(paths[0]) != 3 {
				t.Fatalf("leaf does not verify through a chain of three: %v", err)
			}
		})
	}
}

func TestDefaultCredentialChainFromEnvironment(t *testing.T) {
	e := newEnv(t, envOpts{emu: acmpcaemu.Options{Credentials: map[string]string{"AKIDFROMENV": "env-secret"}}})
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	mb := withConf(t, e.seedBackend(), map[string]any{"auth": nil})
	if got := e.be.UsedSecrets(mb); strings.Join(got, ",") != "sec-1" {
		t.Errorf("UsedSecrets = %v", got)
	}
	if err := e.be.Ensure(context.Background(), mesh, mb); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if _, err := e.be.Issue(context.Background(), mesh, mb, newRequest(t, "env-1", time.Hour)); err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if keys := e.emu.Stats().AccessKeys; len(keys) != 1 || keys["AKIDFROMENV"] == 0 {
		t.Errorf("access keys = %v, want AKIDFROMENV only", keys)
	}
}

func TestDefaultCredentialChainWithoutCredentials(t *testing.T) {
	e := newEnv(t, envOpts{})
	mb := withConf(t, e.seedBackend(), map[string]any{"auth": nil})
	mb.RootChain = &api.RootChain{RequestTimeout: "2s"}
	wantErr(t, e.be.Ensure(context.Background(), mesh, mb), "conf.auth", "could not obtain AWS credentials")
	if n := e.emu.Stats().Requests[acmpcaemu.OpDescribeCertificateAuthority]["ok"]; n != 0 {
		t.Errorf("%d requests succeeded without credentials", n)
	}
}

func TestCredentialsFollowSecretChanges(t *testing.T) {
	e := newEnv(t, envOpts{emu: acmpcaemu.Options{Credentials: map[string]string{testAK: testSK, "AKIDROTATED": testSK}}})
	mb := e.seedBackend()
	ctx := context.Background()
	if err := e.be.Ensure(ctx, mesh, mb); err != nil {
		t.Fatal(err)
	}
	e.putSecret("sec-2", []byte("AKIDROTATED"))
	if err := e.be.Ensure(ctx, mesh, mb); err != nil {
		t.Fatal(err)
	}
	if keys := e.emu.Stats().AccessKeys; keys[testAK] == 0 || keys["AKIDROTATED"] == 0 {
		t.Errorf("access keys = %v, want both the old and the rotated key used", keys)
	}
	// A wrong secret is refused at Ensure, naming conf.auth and the code.
	e.putSecret("sec-2", []byte("AKIDUNKNOWN"))
	wantErr(t, e.be.Ensure(ctx, mesh, mb), "conf.auth", "UnrecognizedClientException")
}

func TestWrongSecretKeyIsRefusedAtEnsure(t *testing.T) {
	e := newEnv(t, envOpts{emu: acmpcaemu.Options{Credentials: map[string]string{testAK: "the-real-secret"}}})
	err := e.be.Ensure(context.Background(), mesh, e.seedBackend())
	wantErr(t, err, "conf.auth", "InvalidSignatureException")
	var ve *api.ValidationError
	if !errors.As(err, &ve) || ve.Causes[0].Field != "conf.auth" {
		t.Errorf("want a ValidationError on conf.auth, got %#v", err)
	}
	if strings.Contains(err.Error(), testSK) || strings.Contains(err.Error(), "the-real-secret") {
		t.Errorf("error leaks a secret: %v", err)
	}
}

func TestIdempotentIssue(t *testing.T) {
	e := newEnv(t, envOpts{})
	mb := e.seedBackend()
	ctx := context.Background()
	req := newRequest(t, "same-key-for-both-calls", 2*time.Hour)
	first, err := e.be.Issue(ctx, mesh, mb, req)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.be.Issue(ctx, mesh, mb, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Ref != second.Ref || string(first.CertPEM) != string(second.CertPEM) {
		t.Errorf("second call returned another certificate: %s vs %s", first.Ref, second.Ref)
	}
	if n := e.emu.Stats().Issued; n != 1 {
		t.Errorf("emulator issued %d certificates, want 1", n)
	}
	if got := counterValue(t, e.be.m.issued); got != 1 {
		t.Errorf("certificates issued metric = %v, want 1", got)
	}
}

func TestThrottlingNeverSurfaces(t *testing.T) {
	e := newEnv(t, envOpts{emu: acmpcaemu.Options{Rates: map[string]float64{acmpcaemu.OpIssueCertificate: 5}}})
	mb := withConf(t, e.seedBackend(), map[string]any{"maxRequestsPerSecond": 5})
	ctx := context.Background()
	if err := e.be.Ensure(ctx, mesh, mb); err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.be.Issue(ctx, mesh, mb, newRequest(t, "throttle-"+string(rune('a'+i)), time.Hour))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("issue %d: %v", i, err)
		}
	}
	stats := e.emu.Stats()
	if stats.Issued != n {
		t.Errorf("emulator issued %d, want %d", stats.Issued, n)
	}
	throttled := stats.Requests[acmpcaemu.OpIssueCertificate]["ThrottlingException"] + stats.Requests[acmpcaemu.OpGetCertificate]["ThrottlingException"]
	if throttled > 2 {
		t.Errorf("emulator throttled %d requests; the client-side budget should prevent that: %v", throttled, stats.Requests)
	}
}

func TestRequestInProgressIsWaitedOut(t *testing.T) {
	e := newEnv(t, envOpts{emu: acmpcaemu.Options{InProgress: 3 * time.Second}})
	mb := e.seedBackend()
	start := time.Now()
	iss, err := e.be.Issue(context.Background(), mesh, mb, newRequest(t, "in-progress", time.Hour))
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	if time.Since(start) < 3*time.Second || len(iss.CertPEM) == 0 {
		t.Errorf("Issue returned after %s, before the certificate was ready", time.Since(start))
	}
	stats := e.emu.Stats()
	if stats.Issued != 1 || stats.Requests[acmpcaemu.OpIssueCertificate]["ok"] != 1 {
		t.Errorf("want exactly one IssueCertificate, got %v", stats.Requests)
	}
	if stats.Requests[acmpcaemu.OpGetCertificate]["RequestInProgressException"] == 0 {
		t.Errorf("GetCertificate never saw RequestInProgressException: %v", stats.Requests)
	}
}

func TestOutageFailsClearlyThenRecovers(t *testing.T) {
	e := newEnv(t, envOpts{})
	mb := e.seedBackend()
	mb.DpCert.RequestTimeout = "1s"
	ctx := context.Background()
	if err := e.be.Ensure(ctx, mesh, mb); err != nil {
		t.Fatal(err)
	}
	e.emu.SetFaults(acmpcaemu.Faults{OutageUntil: time.Now().Add(time.Hour)})
	req := newRequest(t, "outage", time.Hour)
	_, err := e.be.Issue(ctx, mesh, mb, req)
	wantErr(t, err, "IssueCertificate", "ServiceUnavailable")
	e.emu.SetFaults(acmpcaemu.Faults{})
	if _, err := e.be.Issue(ctx, mesh, mb, req); err != nil {
		t.Fatalf("Issue after the outage: %v", err)
	}
	if n := e.emu.Stats().Issued; n != 1 {
		t.Errorf("issued %d, want 1", n)
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	t.Run("validate", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		leafPEM := func() []byte {
			iss, err := e.be.Issue(ctx, mesh, e.seedBackend(), newRequest(t, "leaf-for-cacert", time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			return iss.CertPEM
		}()
		e.putSecret("not-a-ca", leafPEM)
		cases := []struct {
			name  string
			set   map[string]any
			exp   string
			parts []string
		}{
			{"malformed arn", map[string]any{"arn": "arn:aws:acm:us-east-1:1:certificate/x"}, "", []string{"conf.arn", "not an ACM Private CA ARN"}},
			{"arn without id", map[string]any{"arn": "arn:aws:acm-pca:us-east-1:123:certificate-authority/"}, "", []string{"conf.arn", "does not name a certificate authority"}},
			{"arn empty region", map[string]any{"arn": "arn:aws:acm-pca::123:certificate-authority/x"}, "", []string{"conf.arn", "empty region"}},
			{"unknown field", map[string]any{"region": "us-east-1"}, "", []string{"conf.region: unknown field"}},
			{"unknown nested field", map[string]any{"auth": map[string]any{"awsCredentials": map[string]any{"accessKey": map[string]any{"secret": "sec-2"}, "accessKeySecret": map[string]any{"secret": "sec-2"}, "token": "x"}}}, "", []string{"conf.auth.awsCredentials.token: unknown field"}},
			{"missing caCert", map[string]any{"caCert": nil}, "", []string{"conf.caCert", "must be set"}},
			{"missing secret", map[string]any{"caCert": map[string]any{"secret": "nope"}}, "", []string{"conf.caCert.secret", "nope"}},
			{"caCert not a CA", map[string]any{"caCert": map[string]any{"secret": "not-a-ca"}}, "", []string{"conf.caCert", "not a CA certificate"}},
			{"accessKey alone", map[string]any{"auth": map[string]any{"awsCredentials": map[string]any{"accessKey": map[string]any{"secret": "sec-2"}}}}, "", []string{"conf.auth.awsCredentials.accessKeySecret", "must be set"}},
			{"secret alone", map[string]any{"auth": map[string]any{"awsCredentials": map[string]any{"accessKeySecret": map[string]any{"secret": "sec-2"}}}}, "", []string{"conf.auth.awsCredentials.accessKey", "must be set"}},
			{"missing key file", map[string]any{"auth": map[string]any{"awsCredentials": map[string]any{"accessKey": map[string]any{"secret": "sec-2"}, "accessKeySecret": map[string]any{"file": "/nonexistent/key"}}}}, "", []string{"conf.auth.awsCredentials.accessKeySecret.file", "does not exist"}},
			{"bad signing algorithm", map[string]any{"signingAlgorithm": "MD5WITHRSA"}, "", []string{"conf.signingAlgorithm", "MD5WITHRSA"}},
			{"bad rate", map[string]any{"maxRequestsPerSecond": 0}, "", []string{"conf.maxRequestsPerSecond"}},
			{"bad expiration", nil, "10s", []string{"dpCert.rotation.expiration", "too short"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				mb := withConf(t, e.seedBackend(), c.set)
				if c.exp != "" {
					mb.DpCert.Rotation.Expiration = c.exp
				}
				wantErr(t, e.be.Validate(ctx, mesh, mb), c.parts...)
			})
		}
		// Inline credentials are accepted.
		mb := withConf(t, e.seedBackend(), map[string]any{"auth": map[string]any{"awsCredentials": map[string]any{
			"accessKey": map[string]any{"inlineString": testAK}, "accessKeySecret": map[string]any{"inline": base64.StdEncoding.EncodeToString([]byte(testSK))}}}})
		if err := e.be.Validate(ctx, mesh, mb); err != nil {
			t.Errorf("inline credentials: %v", err)
		}
		if err := e.be.Ensure(ctx, mesh, mb); err != nil {
			t.Errorf("inline credentials: %v", err)
		}
	})

	t.Run("ensure", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		ctx := context.Background()
		other, err := e.emu.AddCA(ctx, acmpcaemu.CASpec{ARN: "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/other"})
		if err != nil {
			t.Fatal(err)
		}
		e.putSecret("other-ca", other.ChainPEM)
		wantErr(t, e.be.Ensure(ctx, mesh, withConf(t, e.seedBackend(), map[string]any{"caCert": map[string]any{"secret": "other-ca"}})),
			"conf.caCert: the private CA's chain does not end in a certificate of caCert")
		wantErr(t, e.be.Ensure(ctx, mesh, withConf(t, e.seedBackend(), map[string]any{"arn": "arn:aws:acm-pca:region:account:certificate-authority/missing"})),
			"conf.arn: ResourceNotFoundException")

		mb := e.seedBackend()
		if err := e.emu.SetCAStatus(seedARN, "DISABLED"); err != nil {
			t.Fatal(err)
		}
		wantErr(t, e.be.Ensure(ctx, mesh, mb), "conf.arn", "DISABLED", "not ACTIVE")
		if err := e.emu.SetCAStatus(seedARN, "ACTIVE"); err != nil {
			t.Fatal(err)
		}
		if err := e.be.Ensure(ctx, mesh, mb); err != nil {
			t.Fatalf("Ensure after re-activation: %v", err)
		}
		// Disabled after a successful Ensure: Issue fails naming conf.arn,
		// and the next Ensure checks the CA again.
		if err := e.emu.SetCAStatus(seedARN, "DISABLED"); err != nil {
			t.Fatal(err)
		}
		_, err = e.be.Issue(ctx, mesh, mb, newRequest(t, "disabled", time.Hour))
		wantErr(t, err, "conf.arn", "InvalidStateException")
		wantErr(t, e.be.Ensure(ctx, mesh, mb), "conf.arn", "not ACTIVE")
	})

	t.Run("short-lived usage mode", func(t *testing.T) {
		e := newEnv(t, envOpts{spec: acmpcaemu.CASpec{UsageMode: "SHORT_LIVED_CERTIFICATE"}})
		mb := e.seedBackend()
		mb.DpCert.Rotation.Expiration = "8d"
		wantErr(t, e.be.Ensure(context.Background(), mesh, mb), "dpCert.rotation.expiration", "SHORT_LIVED_CERTIFICATE")
		mb.DpCert.Rotation.Expiration = "7d"
		if err := e.be.Ensure(context.Background(), mesh, mb); err != nil {
			t.Fatalf("7d on a short-lived CA: %v", err)
		}
	})

	t.Run("unreachable endpoint", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + l.Addr().String()
		l.Close()
		e := newEnv(t, envOpts{noEnvEndpoint: true, hooks: func(h *hooks) { h.endpoint = dead }})
		mb := e.seedBackend()
		mb.RootChain = &api.RootChain{RequestTimeout: "1s"}
		start := time.Now()
		wantErr(t, e.be.Ensure(context.Background(), mesh, mb), "conf.arn", "could not be reached", l.Addr().String())
		if time.Since(start) > 5*time.Second {
			t.Errorf("Ensure took %s against an unreachable endpoint with a 1s timeout", time.Since(start))
		}
	})
}

func TestEndpointHookWithoutEnvironment(t *testing.T) {
	e := newEnv(t, envOpts{noEnvEndpoint: true})
	e.be.hooks.endpoint = e.ts.URL // no client is built yet
	if err := e.be.Ensure(context.Background(), mesh, e.seedBackend()); err != nil {
		t.Fatalf("Ensure through the endpoint hook: %v", err)
	}
}

func TestParseCAARN(t *testing.T) {
	for _, s := range []string{seedARN, "arn:aws-us-gov:acm-pca:us-gov-west-1:123456789012:certificate-authority/abc"} {
		if _, err := parseCAARN(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"", "arn", "arn::acm-pca:r:a:certificate-authority/x", "arn:aws:acm-pca:r::certificate-authority/x",
		"arn:aws:acm-pca:r:a:certificate-authority/x/certificate/y", "arn:aws:acm-pca:r:a:template/x"} {
		if _, err := parseCAARN(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestRequestTimerExcludesPausedTime(t *testing.T) {
	ctx, rt, stop := withRequestTimer(context.Background(), 200*time.Millisecond)
	defer stop()
	rt.pause()
	select {
	case <-ctx.Done():
		t.Fatal("timer fired while paused")
	case <-time.After(400 * time.Millisecond):
	}
	rt.resume()
	select {
	case <-ctx.Done():
		if !timedOut(ctx) {
			t.Fatalf("cause = %v", context.Cause(ctx))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("timer never fired after resuming")
	}
}

func TestIdempotencyTokenFits(t *testing.T) {
	if got := idempotencyToken("short"); got != "short" {
		t.Errorf("got %q", got)
	}
	long := strings.Repeat("x", 64)
	if got := idempotencyToken(long); len(got) > maxIdempotencyToken || got != idempotencyToken(long) {
		t.Errorf("got %q", got)
	}
}

func TestDuplicateConfKeysAreRefused(t *testing.T) {
	_, err := parseConf([]byte(`{"arn":"` + seedARN + `","caCert":{"secret":"a"},"auth":{"awsCredentials":{"accessKey":{"secret":"x"},"accessKey":{"secret":"y"}}}}`))
	if f := api.Fields(err); len(f) == 0 || f[0] != fAccessKey {
		t.Fatalf("fields %q, want %s (%v)", f, fAccessKey, err)
	}
}
