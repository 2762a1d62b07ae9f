package sds_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
	"meshca/pkg/tokens"
)

// quiet is how long a test waits to conclude that nothing is sent.
const quiet = 200 * time.Millisecond

type msg[T any] struct {
	m   T
	err error
}

// receiver reads a client stream in the background.
type receiver[T any] struct {
	t  *testing.T
	ch chan msg[T]
}

func receive[T any](t *testing.T, recv func() (T, error)) *receiver[T] {
	r := &receiver[T]{t: t, ch: make(chan msg[T], 16)}
	go func() {
		for {
			m, err := recv()
			r.ch <- msg[T]{m, err}
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *receiver[T]) next() (T, error) {
	r.t.Helper()
	select {
	case m := <-r.ch:
		return m.m, m.err
	case <-time.After(20 * time.Second):
		r.t.Fatal("no response")
		panic("unreachable")
	}
}

func (r *receiver[T]) must() T {
	r.t.Helper()
	m, err := r.next()
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

func (r *receiver[T]) none() {
	r.t.Helper()
	select {
	case m := <-r.ch:
		r.t.Fatalf("unexpected response %v (err %v)", m.m, m.err)
	case <-time.After(quiet):
	}
}

// genAuth is a GenerationAuthenticator over Tokens with a generation the
// test controls, counting verifications.
type genAuth struct {
	sds.TokenAuthenticator
	gen      *atomic.Uint64
	verifies *atomic.Int64
}

func (a genAuth) VerifyUntil(ctx context.Context, tok string) (string, string, time.Time, error) {
	a.verifies.Add(1)
	return a.TokenAuthenticator.VerifyUntil(ctx, tok)
}

func (a genAuth) Generation(string) (uint64, bool) { return a.gen.Load(), true }

func TestPushVerifiesOnlyWhenGenerationChanges(t *testing.T) {
	var gen atomic.Uint64
	var verifies atomic.Int64
	e := newEnvAuth(t, func(tk *tokens.Tokens) sds.Authenticator {
		return genAuth{TokenAuthenticator: sds.TokenAuthenticator{Tokens: tk}, gen: &gen, verifies: &verifies}
	}, sds.WithReverifyInterval(0))
	now := time.Now()
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, now))
	tok := e.token("web-1")
	s, err := e.client.StreamSecrets(authCtx(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	rx := receive(t, s.Recv)
	if err := s.Send(sotwRequest("default.web-1", nil)); err != nil {
		t.Fatal(err)
	}
	prev := rx.must()
	for i := range int64(3) {
		if err := s.Send(sotwRequest("", prev)); err != nil {
			t.Fatal(err)
		}
		sec := sdstest.NewSecrets(t, "default", "web-1", 2+i, now)
		e.src.Set("default", "web-1", sec)
		prev = rx.must()
		checkSecrets(t, prev.GetResources(), sec)
	}
	if n := verifies.Load(); n != 1 {
		t.Fatalf("%d verifications for one stream open and 4 responses with an unchanged generation, want 1", n)
	}
	gen.Add(1)
	if err := s.Send(sotwRequest("", prev)); err != nil {
		t.Fatal(err)
	}
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 10, now))
	prev = rx.must()
	if n := verifies.Load(); n != 2 {
		t.Fatalf("%d verifications after a generation change, want 2", n)
	}
	if err := s.Send(sotwRequest("", prev)); err != nil {
		t.Fatal(err)
	}
	e.revoke(tok)
	gen.Add(1)
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 11, now))
	_, err = rx.next()
	wantCode(t, err, codes.Unauthenticated)
}

// runTokens runs e.tokens' store watch for the test and waits until it
// reports generations.
func runTokens(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.tokens.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for {
		if _, ok := e.tokens.Generation("default"); ok {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// openAcked opens web-1's SotW stream, receives its secrets and ACKs them.
func openAcked(t *testing.T, e *env, now time.Time) (secretv3.SecretDiscoveryService_StreamSecretsClient, string) {
	t.Helper()
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, now))
	tok := e.token("web-1")
	s, r1 := openFirst(t, e, tok, "default.web-1")
	if err := s.Send(sotwRequest("", r1)); err != nil {
		t.Fatal(err)
	}
	return s, tok
}

func TestRevocationSeenThroughTokensRun(t *testing.T) {
	e := newEnv(t, sds.WithReverifyInterval(0))
	runTokens(t, e)
	now := time.Now()
	s, tok := openAcked(t, e, now)
	g, _ := e.tokens.Generation("default")
	e.revoke(tok)
	for {
		if g2, _ := e.tokens.Generation("default"); g2 > g {
			break
		}
		time.Sleep(time.Millisecond)
	}
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 2, now))
	_, err := s.Recv()
	wantCode(t, err, codes.Unauthenticated)
}

// A revocation cuts off an open stream at once even when nothing is pushed
// to it: the tokens' change signal wakes the re-verification (the periodic
// one is an hour away here).
func TestRevocationWithoutPushClosesStream(t *testing.T) {
	e := newEnv(t, sds.WithReverifyInterval(time.Hour))
	runTokens(t, e)
	s, tok := openAcked(t, e, time.Now())
	e.revoke(tok)
	wantClosed(t, s, codes.Unauthenticated, "the revoked stream")
}

// openFirst opens a SotW stream with tok for node and receives its first
// response.
func openFirst(t *testing.T, e *env, tok, node string) (secretv3.SecretDiscoveryService_StreamSecretsClient, *discoveryv3.DiscoveryResponse) {
	t.Helper()
	s, err := e.client.StreamSecrets(authCtx(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(sotwRequest(node, nil)); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

// wantClosed waits (10 s at most) for the server to end s with code.
func wantClosed(t *testing.T, s secretv3.SecretDiscoveryService_StreamSecretsClient, code codes.Code, what string) {
	t.Helper()
	got := make(chan error, 1)
	go func() { _, err := s.Recv(); got <- err }()
	select {
	case err := <-got:
		wantCode(t, err, code)
	case <-time.After(10 * time.Second):
		t.Fatal(what + " stayed open")
	}
}

func TestSotWNACKNotResent(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, now))
	s, err := e.client.StreamSecrets(authCtx(t, e.token("web-1")))
	if err != nil {
		t.Fatal(err)
	}
	rx := receive(t, s.Recv)
	if err := s.Send(sotwRequest("default.web-1", nil)); err != nil {
		t.Fatal(err)
	}
	r1 := rx.must()
	nack := sotwRequest("", r1)
	nack.VersionInfo = ""
	nack.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "bad certificate"}
	if err := s.Send(nack); err != nil {
		t.Fatal(err)
	}
	rx.none()
	// A signal without a change does not resend the NACKed version either.
	e.src.Set("default", "web-1", e.current(t))
	rx.none()
	s2 := sdstest.NewSecrets(t, "default", "web-1", 2, now)
	e.src.Set("default", "web-1", s2)
	r2 := rx.must()
	checkSecrets(t, r2.GetResources(), s2)
}

func (e *env) current(t *testing.T) sds.Secrets {
	sec, ok := e.src.Current("default", "web-1")
	if !ok {
		t.Fatal("no secrets")
	}
	return sec
}

func TestSotWResourceNames(t *testing.T) {
	e := newEnv(t)
	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, time.Now())
	e.src.Set("default", "web-1", s1)
	s, err := e.client.StreamSecrets(authCtx(t, e.token("web-1")))
	if err != nil {
		t.Fatal(err)
	}
	rx := receive(t, s.Recv)
	req := sotwRequest("default.web-1", nil)
	req.ResourceNames = []string{sds.MeshCAName("default")}
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	r1 := rx.must()
	if len(r1.GetResources()) != 1 {
		t.Fatalf("%d resources for one requested name", len(r1.GetResources()))
	}
	var ca tlsv3.Secret
	if err := r1.GetResources()[0].UnmarshalTo(&ca); err != nil || ca.GetName() != sds.MeshCAName("default") {
		t.Fatalf("got %v (%v)", ca.GetName(), err)
	}
	// ACK, then ask for everything (empty resource_names: wildcard).
	ack := sotwRequest("", r1)
	ack.ResourceNames = req.ResourceNames
	if err := s.Send(ack); err != nil {
		t.Fatal(err)
	}
	rx.none()
	all := sotwRequest("", r1)
	all.ResourceNames = nil
	if err := s.Send(all); err != nil {
		t.Fatal(err)
	}
	r2 := rx.must()
	checkSecrets(t, r2.GetResources(), s1)
}

func TestSotWReconnectWithCurrentVersion(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, now))
	tok := e.token("web-1")
	first, err := e.client.StreamSecrets(authCtx(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Send(sotwRequest("default.web-1", nil)); err != nil {
		t.Fatal(err)
	}
	r1, err := first.Recv()
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.client.StreamSecrets(authCtx(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	rx := receive(t, s.Recv)
	req := sotwRequest("default.web-1", nil)
	req.VersionInfo = r1.GetVersionInfo() // what the client already holds
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	rx.none()
	s2 := sdstest.NewSecrets(t, "default", "web-1", 2, now)
	e.src.Set("default", "web-1", s2)
	checkSecrets(t, rx.must().GetResources(), s2)
}

func TestDeltaProtocol(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	s1 := sdstest.NewSecrets(t, "default", "web-1", 1, now)
	e.src.Set("default", "web-1", s1)
	tok := e.token("web-1")
	node := &corev3.Node{Id: "default.web-1"}

	// A first stream learns the versions.
	first, err := e.client.DeltaSecrets(authCtx(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: sds.SecretTypeURL}); err != nil { // wildcard
		t.Fatal(err)
	}
	r1, err := first.Recv()
	if err != nil {
		t.Fatal(err)
	}
	checkSecrets(t, deltaAnys(r1), s1)
	versions := map[string]string{"some-other-secret": "1"}
	for _, r := range r1.GetResources() {
		versions[r.GetName()] = r.GetVersion()
	}

	// Reconnecting with them: only the unknown resource is removed.
	s, err := e.client.DeltaSecrets(authCtx(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	rx := receive(t, s.Recv)
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: sds.SecretTypeURL,
		ResourceNamesSubscribe: names, InitialResourceVersions: versions}); err != nil {
		t.Fatal(err)
	}
	r := rx.must()
	if len(r.GetResources()) != 0 || !equalStrings(r.GetRemovedResources(), []string{"some-other-secret"}) {
		t.Fatalf("response to known versions: %d resources, removed %v", len(r.GetResources()), r.GetRemovedResources())
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	rx.none()

	// Only the trust bundle changes: only it is sent.
	s2 := s1
	s2.TrustBundlePEM = append(append([]byte(nil), s1.TrustBundlePEM...), s1.TrustBundlePEM...)
	e.src.Set("default", "web-1", s2)
	r = rx.must()
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != sds.MeshCAName("default") {
		t.Fatalf("after a CA change: %v", r.GetResources())
	}

	// NACK: not resent until the content changes.
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "bad"}}); err != nil {
		t.Fatal(err)
	}
	rx.none()

	// Unsubscribed from the identity: a new identity is not sent.
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{sds.IdentityCertName("default")}}); err != nil {
		t.Fatal(err)
	}
	rx.none()
	s3 := sdstest.NewSecrets(t, "default", "web-1", 3, now)
	e.src.Set("default", "web-1", s3)
	r = rx.must()
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != sds.MeshCAName("default") {
		t.Fatalf("after unsubscribing the identity: %v", r.GetResources())
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	// The data plane is deleted: what was sent is removed.
	e.src.Delete("default", "web-1")
	r = rx.must()
	if len(r.GetResources()) != 0 || !equalStrings(r.GetRemovedResources(), []string{sds.MeshCAName("default")}) {
		t.Fatalf("after deletion: %d resources, removed %v", len(r.GetResources()), r.GetRemovedResources())
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// With a GenerationAuthenticator, the periodic pass re-verifies only the
// verdicts that went stale: a stream whose verdict holds costs no signature
// check, and a stream whose token expired is closed.
func TestPeriodicPassChecksOnlyStaleVerdicts(t *testing.T) {
	var gen atomic.Uint64
	var verifies atomic.Int64
	e := newEnvAuth(t, func(tk *tokens.Tokens) sds.Authenticator {
		return genAuth{TokenAuthenticator: sds.TokenAuthenticator{Tokens: tk}, gen: &gen, verifies: &verifies}
	}, sds.WithReverifyInterval(50*time.Millisecond))
	now := time.Now()
	e.src.Set("default", "web-1", sdstest.NewSecrets(t, "default", "web-1", 1, now))
	e.src.Set("default", "backend-1", sdstest.NewSecrets(t, "default", "backend-1", 1, now))

	openFirst(t, e, e.token("web-1"), "default.web-1") // kept open: its verdict holds
	short, err := e.tokens.Generate(context.Background(), "default", "backend-1", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := openFirst(t, e, short, "default.backend-1")
	opened := verifies.Load()
	wantClosed(t, s, codes.Unauthenticated, "the stream of an expired token")
	// Dozens of passes ran; only the expired verdict was checked again.
	if n := verifies.Load() - opened; n != 1 {
		t.Fatalf("%d verifications by the periodic passes, want 1 (the expired token's)", n)
	}
}
