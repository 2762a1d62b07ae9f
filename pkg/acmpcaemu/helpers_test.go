package acmpcaemu

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/acmpca"
	"github.com/aws/aws-sdk-go-v2/service/acmpca/schemas"
	smithy "github.com/aws/smithy-go"
	"github.com/aws/smithy-go/transport/http/protocol/awsjson"
)

const (
	testRootARN = "arn:aws:acm-pca:region:account:certificate-authority/12345678-1234-1234-1234-123456789012"
	testSubARN  = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/sub-0001"
	testAKID    = "AKIDTEST"
	testSecret  = "test-secret"
)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startServer runs a server over httptest with the given CAs.
func startServer(t *testing.T, opts Options, specs ...CASpec) (*Server, *httptest.Server) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, spec := range specs {
		if _, err := srv.AddCA(context.Background(), spec); err != nil {
			t.Fatalf("AddCA(%s): %v", spec.ARN, err)
		}
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return srv, ts
}

type clientConfig struct {
	json          bool
	akid, secret  string
	noRetry       bool
	retryAttempts int
}

// newClient builds a real SDK client; json switches it from the default
// RPC v2 CBOR protocol to AWS JSON 1.1 via Options.Protocol.
func newClient(t *testing.T, ts *httptest.Server, cc clientConfig) *acmpca.Client {
	t.Helper()
	if cc.akid == "" {
		cc.akid, cc.secret = testAKID, testSecret
	}
	return acmpca.New(acmpca.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(ts.URL),
		HTTPClient:   ts.Client(),
		Credentials:  credentials.NewStaticCredentialsProvider(cc.akid, cc.secret, ""),
	}, func(o *acmpca.Options) {
		if cc.json {
			o.Protocol = awsjson.New11(schemas.ACMPrivateCA)
		}
		if cc.noRetry {
			o.Retryer = aws.NopRetryer{}
		}
		if cc.retryAttempts > 0 {
			o.RetryMaxAttempts = cc.retryAttempts
		}
	})
}

func protocols() []struct {
	name string
	json bool
} {
	return []struct {
		name string
		json bool
	}{{"cbor", false}, {"json", true}}
}

func makeCSR(t *testing.T, cn string, dns ...string) ([]byte, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://example.org/ns/default/sa/test")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: cn, Organization: []string{"Test Org"}},
		DNSNames:       dns,
		URIs:           []*url.URL{u},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"ops@example.org"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}

func parsePEMChain(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	_, certs, err := splitPEMCerts([]byte(s))
	if err != nil {
		t.Fatalf("parse PEM chain: %v\n%s", err, s)
	}
	return certs
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := errorCode(err); got != code {
		t.Fatalf("want error %s, got %v", code, err)
	}
}
