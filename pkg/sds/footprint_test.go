package sds_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"meshca/pkg/sds"
	"meshca/pkg/sds/sdstest"
)

// nameAuth accepts the token "<mesh>.<name>". Like a real dataplane token
// check it verifies an RS256 signature (a fixed one: the footprint test
// measures the SDS server, not tokens), which needs a deep stack.
type nameAuth struct {
	pub    *rsa.PublicKey
	digest []byte
	sig    []byte
}

func newNameAuth(t testing.TB) nameAuth {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("footprint"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return nameAuth{pub: &key.PublicKey, digest: digest[:], sig: sig}
}

func (a nameAuth) Verify(_ context.Context, tok string) (string, string, error) {
	if err := rsa.VerifyPKCS1v15(a.pub, crypto.SHA256, a.digest, a.sig); err != nil {
		return "", "", err
	}
	mesh, name, ok := strings.Cut(tok, ".")
	if !ok {
		return "", "", sds.ErrRejected
	}
	return mesh, name, nil
}

const footprintClientEnv = "MESHCA_SDS_FOOTPRINT_CLIENT"

// TestStreamFootprint opens many SotW streams (from a child process so
// that only the server's goroutines and heap are counted), then measures
// goroutines, heap and stack per stream, and the bytes allocated per push
// for a rotation of all of them: 100 streams per gRPC connection, and one
// stream per connection as Envoys connect.
//
//	MESHCA_SDS_FOOTPRINT_STREAMS=10000 go test ./pkg/sds -run TestStreamFootprint -v
func TestStreamFootprint(t *testing.T) {
	if os.Getenv(footprintClientEnv) != "" {
		footprintClient(t)
		return
	}
	if testing.Short() {
		t.Skip("short")
	}
	for _, tc := range []struct {
		name       string
		n, perConn int
		// bounds per stream, set at about 1.25 times what was measured
		maxGoroutines, maxBytes float64
	}{
		// An idle stream has no goroutine (work runs on a worker that
		// exists only while there is some) and an idle connection none
		// either (one epoll poller waits for all of them): what is left
		// is TLS state (AES-GCM, record and handshake buffers), the HTTP/2
		// reader and HPACK table, and the stream's protocol state. When
		// these bounds were set: 2.3-2.6 KB per stream multiplexed, 12-14 KB
		// per connection (grpc-go's transport cost 14.7 and 40 KB, with one
		// and four goroutines).
		{name: "100 streams per connection", n: 2000, perConn: 100, maxGoroutines: 0.1, maxBytes: 4096},
		{name: "a connection per stream", n: 500, perConn: 1, maxGoroutines: 0.1, maxBytes: 20480},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.n
			if raceEnabled {
				n = min(n, 300)
			}
			if v, err := strconv.Atoi(os.Getenv("MESHCA_SDS_FOOTPRINT_STREAMS")); err == nil && v > 0 {
				n = v
			}
			goroutines, bytes := streamFootprint(t, n, tc.perConn)
			if goroutines > tc.maxGoroutines {
				t.Errorf("%.2f goroutines per stream, want at most %.1f", goroutines, tc.maxGoroutines)
			}
			if !raceEnabled && bytes > tc.maxBytes {
				t.Errorf("%.0f bytes per stream, want at most %.0f", bytes, tc.maxBytes)
			}
		})
	}
}

// streamFootprint measures n streams, perConn per connection, and returns
// the goroutines and bytes (heap and stack) per stream.
func streamFootprint(t *testing.T, n, perConn int) (goroutines, bytes float64) {
	src := sdstest.NewSource()
	secrets := sdstest.NewSecrets(t, "default", "dp", 1, time.Now())
	for i := range n {
		src.Set("default", fmt.Sprintf("dp-%05d", i), secrets)
	}
	srv := sds.NewServer(src, newNameAuth(t), slog.New(slog.DiscardHandler), nil)
	dir := t.TempDir()
	tlsConf, caPEM, err := sds.LoadOrCreateServerTLS(dir, "", "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	caFile := dir + "/client-ca.pem"
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis, tlsConf) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	if os.Getenv("MESHCA_SDS_FOOTPRINT_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	time.Sleep(50 * time.Millisecond)
	g0, m0 := settle()

	cmd := exec.Command(os.Args[0], "-test.run=^TestStreamFootprint$", "-test.v")
	cmd.Env = append(os.Environ(), footprintClientEnv+"="+lis.Addr().String(),
		"MESHCA_SDS_FOOTPRINT_CA="+caFile,
		"MESHCA_SDS_FOOTPRINT_STREAMS="+strconv.Itoa(n),
		"MESHCA_SDS_FOOTPRINT_PERCONN="+strconv.Itoa(perConn))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	await := func(want string) {
		t.Helper()
		for lines.Scan() {
			if l := lines.Text(); l == want {
				return
			} else if strings.HasPrefix(l, "FAIL:") {
				t.Fatal("client: " + l)
			}
		}
		t.Fatalf("client ended before %s: %v", want, lines.Err())
	}
	start := time.Now()
	await("READY")
	opened := time.Since(start)
	g1, m1 := settle()
	if f := os.Getenv("MESHCA_SDS_FOOTPRINT_HEAPPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(out); err != nil {
			t.Fatal(err)
		}
		_ = out.Close()
	}

	perStream := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	goroutines = float64(g1-g0) / float64(n)
	heap := perStream(m0.HeapInuse, m1.HeapInuse)
	stack := perStream(m0.StackInuse, m1.StackInuse)
	t.Logf("%d streams (%d per connection) opened in %v", n, perConn, opened.Round(time.Millisecond))
	t.Logf("per stream: %.2f goroutines, %.0f B heap in use, %.0f B stack, %.0f B total (heap+stack)",
		goroutines, heap, stack, heap+stack)

	// Rotation: every dataplane's secrets change; all streams get a push.
	rot := sdstest.NewSecrets(t, "default", "dp", 2, time.Now())
	start = time.Now()
	for i := range n {
		src.Set("default", fmt.Sprintf("dp-%05d", i), rot)
	}
	await("ROTATED")
	var m2 runtime.MemStats
	runtime.ReadMemStats(&m2)
	t.Logf("rotation of %d streams in %v: %.0f B allocated per push", n, time.Since(start).Round(time.Millisecond),
		perStream(m1.TotalAlloc, m2.TotalAlloc))

	return goroutines, heap + stack
}

func settle() (int, runtime.MemStats) {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	runtime.ReadMemStats(&m)
	return runtime.NumGoroutine(), m
}

// footprintClient is the child process of TestStreamFootprint.
func footprintClient(t *testing.T) {
	fail := func(err error) { fmt.Printf("FAIL: %v\n", err); os.Exit(1) }
	n, _ := strconv.Atoi(os.Getenv("MESHCA_SDS_FOOTPRINT_STREAMS"))
	perConn, _ := strconv.Atoi(os.Getenv("MESHCA_SDS_FOOTPRINT_PERCONN"))
	caPEM, err := os.ReadFile(os.Getenv("MESHCA_SDS_FOOTPRINT_CA"))
	if err != nil {
		fail(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool})
	var clients []secretv3.SecretDiscoveryServiceClient
	for range (n + perConn - 1) / perConn {
		cc, err := grpc.NewClient(os.Getenv(footprintClientEnv), grpc.WithTransportCredentials(creds))
		if err != nil {
			fail(err)
		}
		defer cc.Close()
		clients = append(clients, secretv3.NewSecretDiscoveryServiceClient(cc))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var first, second atomic.Int64
	var once1, once2 sync.Once
	names := []string{sds.IdentityCertName("default"), sds.MeshCAName("default")}
	sem := make(chan struct{}, 200)
	for i := range n {
		sem <- struct{}{}
		go func() {
			id := fmt.Sprintf("default.dp-%05d", i)
			s, err := clients[i/perConn].StreamSecrets(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+id))
			if err != nil {
				fail(err)
			}
			req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id}, ResourceNames: names, TypeUrl: sds.SecretTypeURL}
			if err := s.Send(req); err != nil {
				fail(err)
			}
			for k := 0; ; k++ {
				r, err := s.Recv()
				if err != nil {
					if ctx.Err() == nil {
						fail(err)
					}
					return
				}
				if k == 0 {
					<-sem
				}
				_ = s.Send(&discoveryv3.DiscoveryRequest{TypeUrl: sds.SecretTypeURL, ResourceNames: names, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
				switch k {
				case 0:
					if first.Add(1) == int64(n) {
						once1.Do(func() { fmt.Println("READY") })
					}
				case 1:
					if second.Add(1) == int64(n) {
						once2.Do(func() { fmt.Println("ROTATED") })
					}
				}
			}
		}()
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	os.Exit(0)
}
