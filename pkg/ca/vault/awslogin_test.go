package vault

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"meshca/pkg/ca/vault/vaulttest"
)

// checkSigV4 checks that an IAM login carries a sts:GetCallerIdentity
// request for us-east-1 signed with the given credentials: it signs the
// same request at the time the login states and compares, and checks that
// the server id header is covered by the signature.
func checkSigV4(t *testing.T, l vaulttest.AWSLogin, accessKey, secret string) {
	t.Helper()
	if l.URL != "https://sts.amazonaws.com/" || l.Body != "Action=GetCallerIdentity&Version=2011-06-15" {
		t.Fatalf("login request %s %s, want the global sts:GetCallerIdentity", l.URL, l.Body)
	}
	when, err := time.Parse("20060102T150405Z", l.Headers.Get("X-Amz-Date"))
	if err != nil {
		t.Fatalf("X-Amz-Date: %v", err)
	}
	req, err := http.NewRequest(l.Method, l.URL, strings.NewReader(l.Body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range l.Headers {
		if k != "Authorization" {
			req.Header[k] = v
		}
	}
	sum := sha256.Sum256([]byte(l.Body))
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secret},
		req, hex.EncodeToString(sum[:]), "sts", "us-east-1", when); err != nil {
		t.Fatal(err)
	}
	got, want := l.Headers.Get("Authorization"), req.Header.Get("Authorization")
	if got != want {
		t.Fatalf("Authorization %q\nwant (signed with the test credentials) %q", got, want)
	}
	if !strings.Contains(got, "/us-east-1/sts/aws4_request") || !strings.Contains(got, "x-vault-aws-iam-server-id") {
		t.Fatalf("Authorization %q: want the us-east-1 sts scope, with the server id header signed", got)
	}
}

// fakeIMDS is an EC2 instance metadata service (IMDSv2) serving doc as the
// PKCS#7 instance identity document.
func fakeIMDS(t *testing.T, doc string) *httptest.Server {
	t.Helper()
	const token = "imds-session-token"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
			if r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") == "" {
				http.Error(w, "missing ttl", http.StatusBadRequest)
				return
			}
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600")
			_, _ = w.Write([]byte(token))
		case r.Method == http.MethodGet && r.URL.Path == "/latest/dynamic/instance-identity/pkcs7":
			if r.Header.Get("X-Aws-Ec2-Metadata-Token") != token {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			_, _ = w.Write([]byte(doc))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAWSAuthEC2(t *testing.T) {
	const doc = "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABIIB\n" +
		"ZXlKaGJXa3RhV1FpT2lKaGJXa3RNR0ZqWlRVMk55SjkK\n"
	imds := fakeIMDS(t, doc)
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.URL)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "false")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	e := newEnv(t, vaulttest.Options{AWSRole: "my-role", AWSPKCS7: strings.ReplaceAll(doc, "\n", "")})

	// Two backends in one process log in with the same nonce: Vault binds
	// the instance to the first one.
	for _, name := range []string{"vault-ec2-a", "vault-ec2-b"} {
		mb := mtlsBackend(t, e.fromCp(func(m map[string]any) {
			m["auth"] = map[string]any{"aws": map[string]any{"type": "EC2", "role": "my-role"}}
		}), "")
		mb.Name = name
		if err := e.b.Ensure(context.Background(), mesh, mb); err != nil {
			t.Fatalf("Ensure %s: %v", name, err)
		}
	}
	logins := e.srv.AWSLogins()
	if len(logins) != 2 {
		t.Fatalf("%d logins at auth/aws/login, want 2", len(logins))
	}
	for _, l := range logins {
		if l.PKCS7 != strings.ReplaceAll(doc, "\n", "") || l.Role != "my-role" || l.Method != "" {
			t.Fatalf("login %+v: want an EC2 login with the document, newlines removed, for my-role", l)
		}
	}
	if logins[0].Nonce == "" || logins[0].Nonce != logins[1].Nonce {
		t.Fatalf("nonces %q and %q: want one non-empty nonce", logins[0].Nonce, logins[1].Nonce)
	}

	// Not on EC2 (no document): a clear error on the auth field.
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", fakeIMDS(t, "").URL+"/nowhere")
	mb := mtlsBackend(t, e.fromCp(func(m map[string]any) {
		m["auth"] = map[string]any{"aws": map[string]any{"type": "EC2", "role": "my-role"}}
	}), "")
	mb.Name = "vault-ec2-c"
	err := e.b.Ensure(context.Background(), mesh, mb)
	wantField(t, err, "conf.fromCp.auth.aws", "EC2 metadata service")
}

func TestAWSAuthNoCredentials(t *testing.T) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	e := newEnv(t, vaulttest.Options{AWSRole: "my-role"})
	mb := mtlsBackend(t, e.fromCp(func(m map[string]any) {
		m["auth"] = map[string]any{"aws": map[string]any{"role": "my-role"}}
	}), "")
	err := e.b.Ensure(context.Background(), mesh, mb)
	wantField(t, err, "conf.fromCp.auth.aws", "credentials")
	if n := len(e.srv.AWSLogins()); n != 0 {
		t.Fatalf("%d logins reached Vault without credentials", n)
	}
}
