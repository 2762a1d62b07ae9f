package sds_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"meshca/internal/syncbuf"
	"meshca/pkg/api"
	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
	"meshca/pkg/tokens"
)

type env struct {
	t      *testing.T
	st     store.Store
	tokens *tokens.Tokens
	src    *sdstest.Source
	reg    *prometheus.Registry
	client secretv3.SecretDiscoveryServiceClient
	cc     *grpc.ClientConn
	addr   string
	caPEM  []byte
	cancel context.CancelFunc
	served chan error
	logs   *syncbuf.Buffer // the server's log, warnings and errors
}

func newEnv(t *testing.T, opts ...sds.Option) *env {
	t.Helper()
	return newEnvAuth(t, nil, opts...)
}

// newEnvAuth is newEnv with an authenticator made from the env's Tokens
// (TokenAuthenticator if auth is nil).
func newEnvAuth(t *testing.T, auth func(*tokens.Tokens) sds.Authenticator, opts ...sds.Option) *env {
	t.Helper()
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	spec, err := api.MarshalSpec(&api.Mesh{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Create(context.Background(), st, store.Record{Key: store.Key{Type: api.TypeMesh, Name: "default"}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, tokens: tokens.New(st, nil), src: sdstest.NewSource(), reg: prometheus.NewRegistry(), served: make(chan error, 1), logs: &syncbuf.Buffer{}}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(os.Stderr, e.logs), &slog.HandlerOptions{Level: slog.LevelWarn}))
	var a sds.Authenticator = sds.TokenAuthenticator{Tokens: e.tokens}
	if auth != nil {
		a = auth(e.tokens)
	}
	srv := sds.NewServer(e.src, a, logger, e.reg, opts...)

	tlsConf, caPEM, err := sds.LoadOrCreateServerTLS(t.TempDir(), "", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.served <- srv.Serve(ctx, lis, tlsConf) }()
	t.Cleanup(func() {
		cancel()
		if err := <-e.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	e.client = secretv3.NewSecretDiscoveryServiceClient(cc)
	e.cc, e.addr, e.caPEM = cc, lis.Addr().String(), caPEM
	return e
}

func (e *env) token(name string) string {
	e.t.Helper()
	tok, err := e.tokens.Generate(context.Background(), "default", name, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) revoke(tok string) {
	e.t.Helper()
	cl, err := e.tokens.Verify(context.Background(), tok)
	if err != nil {
		e.t.Fatal(err)
	}
	spec, err := api.MarshalSpec(&api.Secret{Data: base64.StdEncoding.EncodeToString([]byte(cl.ID))})
	if err != nil {
		e.t.Fatal(err)
	}
	err = store.Upsert(context.Background(), e.st, store.Record{Key: store.Key{Type: api.TypeSecret, Mesh: "default", Name: tokens.RevocationsName("default")}, Spec: spec})
	if err != nil {
		e.t.Fatal(err)
	}
}

func authCtx(t *testing.T, tok string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if tok == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

var names = []string{sds.IdentityCertName("default"), sds.MeshCAName("default")}

func sotwRequest(nodeID string, prev *discoveryv3.DiscoveryResponse) *discoveryv3.DiscoveryRequest {
	req := &discoveryv3.DiscoveryRequest{ResourceNames: names, TypeUrl: sds.SecretTypeURL}
	if nodeID != "" {
		req.Node = &corev3.Node{Id: nodeID}
	}
	if prev != nil {
		req.VersionInfo, req.ResponseNonce = prev.GetVersionInfo(), prev.GetNonce()
	}
	return req
}

// checkSecrets asserts that resources are exactly the two secrets of want.
func checkSecrets(t *testing.T, resources []*anypb.Any, want sds.Secrets) {
	t.Helper()
	if len(resources) != 2 {
		t.Fatalf("%d resources, want 2", len(resources))
	}
	got := map[string]*tlsv3.Secret{}
	for _, a := range resources {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		got[s.GetName()] = &s
	}
	id := got[sds.IdentityCertName("default")]
	ca := got[sds.MeshCAName("default")]
	if id == nil || ca == nil {
		t.Fatalf("got secrets %v", got)
	}
	if !bytes.Equal(id.GetTlsCertificate().GetCertificateChain().GetInlineBytes(), want.CertChainPEM) ||
		!bytes.Equal(id.GetTlsCertificate().GetPrivateKey().GetInlineBytes(), want.KeyPEM) {
		t.Fatal("identity cert secret does not hold the source's chain and key")
	}
	if !bytes.Equal(ca.GetValidationContext().GetTrustedCa().GetInlineBytes(), want.TrustBundlePEM) {
		t.Fatal("mesh CA secret does not hold the source's trust bundle")
	}
}

func wantCode(t *testing.T, err error, codes ...codes.Code) {
	t.Helper()
	for _, c := range codes {
		if status.Code(err) == c {
			return
		}
	}
	t.Fatalf("err = %v, want code in %v", err, codes)
}

func TestStreamSecrets(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, now)
	e.src.Set("default", "web-1", s1)

	stream, r1 := openFirst(t, e, e.token("web-1"), "default.web-1")
	checkSecrets(t, r1.GetResources(), s1)
	if got := metricValue(t, e.reg, "meshca_sds_connections"); got != 1 {
		t.Fatalf("connections = %v, want 1", got)
	}

	// ACK, then the source rotates: pushed without asking.
	if err := stream.Send(sotwRequest("", r1)); err != nil {
		t.Fatal(err)
	}
	s2 := sdstest.NewSecrets(t, "default", "web-1", 2, now)
	e.src.Set("default", "web-1", s2)
	r2, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	checkSecrets(t, r2.GetResources(), s2)
	if r2.GetVersionInfo() == r1.GetVersionInfo() {
		t.Fatal("version did not change")
	}

	// Another push; once it arrives, the previous push has been accounted.
	if err := stream.Send(sotwRequest("", r2)); err != nil {
		t.Fatal(err)
	}
	s3 := sdstest.NewSecrets(t, "default", "web-1", 3, now)
	e.src.Set("default", "web-1", s3)
	r3, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	checkSecrets(t, r3.GetResources(), s3)
	if got := metricValue(t, e.reg, "meshca_sds_pushes_total"); got < 2 {
		t.Fatalf("pushes = %v, want >= 2", got)
	}
	if n := metricValue(t, e.reg, "meshca_sds_push_latency_seconds"); n < 1 {
		t.Fatalf("latency observations = %v, want >= 1", n)
	}
}

func TestStreamWaitsForFirstIssue(t *testing.T) {
	e := newEnv(t)
	stream, err := e.client.StreamSecrets(authCtx(t, e.token("web-1")))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(sotwRequest("default.web-1", nil)); err != nil {
		t.Fatal(err)
	}
	// Nothing issued yet: the response comes once the source has secrets.
	// Set only after the server subscribed, so the push path is exercised.
	if err := e.src.AwaitSubscribers(authCtx(t, ""), "default", "web-1", 1); err != nil {
		t.Fatal(err)
	}
	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, time.Now())
	e.src.Set("default", "web-1", s1)
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	checkSecrets(t, r.GetResources(), s1)
}

func TestDeltaSecrets(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, now)
	e.src.Set("default", "web-1", s1)

	stream, err := e.client.DeltaSecrets(authCtx(t, e.token("web-1")))
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node:                   &corev3.Node{Id: "default.web-1"},
		TypeUrl:                sds.SecretTypeURL,
		ResourceNamesSubscribe: names,
	})
	if err != nil {
		t.Fatal(err)
	}
	r1, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	checkSecrets(t, deltaAnys(r1), s1)

	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: sds.SecretTypeURL, ResponseNonce: r1.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	s2 := sdstest.NewSecrets(t, "default", "web-1", 2, now)
	e.src.Set("default", "web-1", s2)
	r2, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	checkSecrets(t, deltaAnys(r2), s2)
}

func deltaAnys(r *discoveryv3.DeltaDiscoveryResponse) []*anypb.Any {
	var out []*anypb.Any
	for _, res := range r.GetResources() {
		out = append(out, res.GetResource())
	}
	return out
}

func TestRefusals(t *testing.T) {
	e := newEnv(t)
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, time.Now()))
	web1 := e.token("web-1")

	cases := []struct {
		name   string
		token  string
		node   string
		code   codes.Code
		delta  bool
		nilNod bool
	}{
		{name: "no token", token: "", node: "default.web-1", code: codes.Unauthenticated},
		{name: "garbage token", token: "garbage", node: "default.web-1", code: codes.Unauthenticated},
		{name: "other dataplane's node", token: web1, node: "default.backend-1", code: codes.PermissionDenied},
		{name: "other dataplane's node (delta)", token: web1, node: "default.backend-1", code: codes.PermissionDenied, delta: true},
		{name: "other mesh", token: web1, node: "other.web-1", code: codes.PermissionDenied},
		{name: "no node", token: web1, nilNod: true, code: codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := authCtx(t, tc.token)
			var err error
			if tc.delta {
				var s secretv3.SecretDiscoveryService_DeltaSecretsClient
				s, err = e.client.DeltaSecrets(ctx)
				if err == nil {
					_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: tc.node}, TypeUrl: sds.SecretTypeURL, ResourceNamesSubscribe: names})
					_, err = s.Recv()
				}
			} else {
				var s secretv3.SecretDiscoveryService_StreamSecretsClient
				s, err = e.client.StreamSecrets(ctx)
				if err == nil {
					req := sotwRequest(tc.node, nil)
					if tc.nilNod {
						req.Node = nil
					}
					_ = s.Send(req)
					_, err = s.Recv()
				}
			}
			wantCode(t, err, tc.code)
			if tc.token != "" && bytes.Contains([]byte(err.Error()), []byte(tc.token)) {
				t.Fatal("error echoes the token")
			}
		})
	}
}

func TestRevokedTokenRefusedAndOpenStreamClosedOnPush(t *testing.T) {
	e := newEnv(t, sds.WithReverifyInterval(0))
	now := time.Now()
	open, tok := openAcked(t, e, now)

	e.revoke(tok)

	// New streams are refused at once.
	fresh, err := e.client.StreamSecrets(authCtx(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	_ = fresh.Send(sotwRequest("default.web-1", nil))
	_, err = fresh.Recv()
	wantCode(t, err, codes.Unauthenticated)

	// The open stream is closed instead of receiving the next push.
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 2, now))
	_, err = open.Recv()
	wantCode(t, err, codes.Unauthenticated)
}

func TestRevokedOpenStreamClosedPeriodically(t *testing.T) {
	e := newEnv(t, sds.WithReverifyInterval(20*time.Millisecond))
	open, tok := openAcked(t, e, time.Now())
	e.revoke(tok)
	_, err := open.Recv() // no push: the periodic re-verification ends it
	wantCode(t, err, codes.Unauthenticated)
}

func TestShutdownEndsStreams(t *testing.T) {
	e := newEnv(t)
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, time.Now()))
	s, _ := openFirst(t, e, e.token("web-1"), "default.web-1")
	e.cancel()
	wantClosed(t, s, codes.Unavailable, "a stream after shutdown")
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
