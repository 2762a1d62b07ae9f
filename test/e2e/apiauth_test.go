package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// httpsClient trusts the control plane's generated API CA.
func (cp *controlPlane) httpsClient(t *testing.T) *http.Client {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(cp.dataDir, "api-server-ca.pem"))
	if err != nil {
		t.Fatalf("API CA not persisted: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("api-server-ca.pem holds no certificate")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// call sends one request and returns the status and body.
func call(t *testing.T, c *http.Client, method, url, token, contentType, body string, mod ...func(*http.Request)) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, m := range mod {
		m(req)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAPIListeners(t *testing.T) {
	t.Parallel()
	cp := startCP(t, filepath.Join(t.TempDir(), "data"))
	cp.apply(t, "type: GlobalSecret\nname: g1\ndata: c2VjcmV0LXZhbHVl\n")

	// Plain listener: a rebound DNS name gets nothing.
	status, body := call(t, http.DefaultClient, "GET", "http://"+cp.api+"/global-secrets/g1", "", "", "", func(r *http.Request) { r.Host = "evil.example" })
	if status != http.StatusForbidden || strings.Contains(body, "c2VjcmV0") {
		t.Fatalf("foreign Host: %d %s", status, body)
	}
	// A cross-site form post (text/plain) is refused.
	if status, body := call(t, http.DefaultClient, "PUT", "http://"+cp.api+"/meshes/evil", "", "text/plain", "{}"); status != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain PUT: %d %s", status, body)
	}

	// HTTPS listener: the certificate verifies against the persisted CA, and
	// nothing but the index answers without a token.
	hc := cp.httpsClient(t)
	if status, body := call(t, hc, "GET", "https://"+cp.apiTLS+"/", "", "", ""); status != 200 || !strings.Contains(body, "meshca") {
		t.Fatalf("GET / over HTTPS: %d %s", status, body)
	}
	for _, p := range []string{"/meshes", "/global-secrets/g1", "/metrics"} {
		if status, body := call(t, hc, "GET", "https://"+cp.apiTLS+p, "", "", ""); status != http.StatusUnauthorized {
			t.Fatalf("anonymous GET %s over HTTPS: %d %s", p, status, body)
		}
	}
	if status, _ := call(t, hc, "PUT", "https://"+cp.apiTLS+"/meshes/m", "", "application/json", "{}"); status != http.StatusUnauthorized {
		t.Fatalf("anonymous PUT over HTTPS: %d", status)
	}

	// The CA survives a restart: clients keep trusting the API.
	ca1, _ := os.ReadFile(filepath.Join(cp.dataDir, "api-server-ca.pem"))
	cp.restart(t)
	ca2, _ := os.ReadFile(filepath.Join(cp.dataDir, "api-server-ca.pem"))
	if string(ca1) != string(ca2) {
		t.Fatal("api-server-ca.pem changed across a restart")
	}
	if status, _ := call(t, hc, "GET", "https://"+cp.apiTLS+"/", "", "", ""); status != 200 {
		t.Fatalf("GET / over HTTPS after restart: %d", status)
	}
}

func TestPlainAPIOnNetworkNeedsExplicitFlag(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	_, p, _ := net.SplitHostPort(port)
	args := []string{"run", "--data-dir", filepath.Join(t.TempDir(), "data"), "--api-address", "0.0.0.0:" + p,
		"--dp-server-address", freePort(t), "--api-tls-address", freePort(t)}
	refused := start(t, "meshca-cp", nil, args...)
	done, err := refused.exited(15 * time.Second)
	if !done || err == nil {
		t.Fatalf("meshca-cp --api-address 0.0.0.0: exited=%v err=%v, want a refusal", done, err)
	}
	if out := refused.out.String(); !strings.Contains(out, `--api-address "0.0.0.0:`+p+`"`) || !strings.Contains(out, "--api-allow-insecure-remote") {
		t.Fatalf("refusal does not explain itself:\n%s", out)
	}

	allowed := start(t, "meshca-cp", nil, append(args, "--api-allow-insecure-remote")...)
	waitFor(t, 30*time.Second, "control plane ready", func() bool {
		resp, err := http.Get("http://127.0.0.1:" + p + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if out := allowed.out.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "non-loopback") {
		t.Fatalf("no warning about the insecure listener:\n%s", out)
	}
}
