package acmpcaemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/acmpca"
	"github.com/fxamacker/cbor/v2"
)

func postJSON(t *testing.T, url string, body any) *http.Response {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %s: %s", url, resp.Status, msg)
	}
	return resp
}

func TestAdminFaultsAndRates(t *testing.T) {
	_, ts := startServer(t, Options{}, CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256})
	ctx := context.Background()
	in := &acmpca.DescribeCertificateAuthorityInput{CertificateAuthorityArn: aws.String(testRootARN)}

	postJSON(t, ts.URL+AdminPrefix+"faults", map[string]any{"outageFor": "1h"})
	_, err := newClient(t, ts, clientConfig{noRetry: true}).DescribeCertificateAuthority(ctx, in)
	wantCode(t, err, codeServiceUnavailable)
	postJSON(t, ts.URL+AdminPrefix+"faults", map[string]any{"outageFor": "0s", "errorRate": 1.0})
	// The SDK retries 503s; with every request failing it gives up after
	// its attempts, all counted by the server.
	_, err = newClient(t, ts, clientConfig{retryAttempts: 2}).DescribeCertificateAuthority(ctx, in)
	wantCode(t, err, codeServiceUnavailable)
	postJSON(t, ts.URL+AdminPrefix+"faults", map[string]any{"errorRate": 0, "latency": "20ms"})
	start := time.Now()
	if _, err := newClient(t, ts, clientConfig{}).DescribeCertificateAuthority(ctx, in); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Error("latency not applied")
	}
	postJSON(t, ts.URL+AdminPrefix+"rates", map[string]float64{OpDescribeCertificateAuthority: 0.001})
	c := newClient(t, ts, clientConfig{noRetry: true, json: true})
	if _, err := c.DescribeCertificateAuthority(ctx, in); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeCertificateAuthority(ctx, in)
	wantCode(t, err, codeThrottling)

	resp, err := http.Get(ts.URL + AdminPrefix + "stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	got := st.Requests[OpDescribeCertificateAuthority]
	if got[codeServiceUnavailable] != 3 || got["ok"] != 2 || got[codeThrottling] != 1 {
		t.Fatalf("stats: %v", got)
	}
}

// signedRequest builds a request by hand and signs it with the SDK signer,
// to check the raw wire format independent of the SDK's parsers.
func signedRequest(t *testing.T, url, op string, cborProto bool, body []byte) *http.Response {
	t.Helper()
	path, ct := "/", contentTypeJSON11
	if cborProto {
		path, ct = cborPathPrefix+op, contentTypeCBOR
	}
	req, err := http.NewRequest(http.MethodPost, url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ct)
	if cborProto {
		req.Header.Set(smithyProtocolHeader, smithyProtocolRPCv2CBOR)
	} else {
		req.Header.Set("X-Amz-Target", serviceTargetPrefix+op)
	}
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret},
		req, hex.EncodeToString(sum[:]), "acm-pca", "us-east-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestWireFormat(t *testing.T) {
	_, ts := startServer(t, Options{Credentials: map[string]string{testAKID: testSecret}},
		CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256, Status: StatusDisabled})
	csr, _ := makeCSR(t, "wire")
	input := map[string]any{"CertificateAuthorityArn": testRootARN, "Csr": csr, "SigningAlgorithm": "SHA256WITHECDSA",
		"Validity": map[string]any{"Type": "DAYS", "Value": 1}}

	jb, _ := json.Marshal(input)
	resp := signedRequest(t, ts.URL, OpIssueCertificate, false, jb)
	var jerr errorBody
	if err := json.NewDecoder(resp.Body).Decode(&jerr); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 400 || resp.Header.Get(errorTypeHeader) != codeInvalidState || jerr.Type != codeInvalidState ||
		jerr.Message == "" || resp.Header.Get(requestIDHeader) == "" || resp.Header.Get("Content-Type") != contentTypeJSON11 {
		t.Fatalf("JSON error: %s %v %+v", resp.Status, resp.Header, jerr)
	}

	cb, _ := cbor.Marshal(input)
	resp = signedRequest(t, ts.URL, OpIssueCertificate, true, cb)
	raw, _ := io.ReadAll(resp.Body)
	var cerr map[string]any
	if err := cbor.Unmarshal(raw, &cerr); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 400 || cerr["__type"] != modeledErrorNamespace+codeInvalidState ||
		resp.Header.Get(smithyProtocolHeader) != smithyProtocolRPCv2CBOR || resp.Header.Get(requestIDHeader) == "" {
		t.Fatalf("CBOR error: %s %v %v", resp.Status, resp.Header, cerr)
	}

	// Timestamps travel as CBOR tag 1 and JSON numbers.
	cb, _ = cbor.Marshal(map[string]any{"CertificateAuthorityArn": testRootARN})
	resp = signedRequest(t, ts.URL, OpDescribeCertificateAuthority, true, cb)
	raw, _ = io.ReadAll(resp.Body)
	if !bytes.Contains(raw, []byte{0xc1}) {
		t.Errorf("no CBOR tag 1 in %x", raw)
	}
	jb, _ = json.Marshal(map[string]any{"CertificateAuthorityArn": testRootARN})
	resp = signedRequest(t, ts.URL, OpDescribeCertificateAuthority, false, jb)
	var desc struct{ CertificateAuthority struct{ CreatedAt float64 } }
	if err := json.NewDecoder(resp.Body).Decode(&desc); err != nil || desc.CertificateAuthority.CreatedAt < 1e9 {
		t.Errorf("JSON CreatedAt: %v %v", err, desc)
	}

	// Unsigned requests are refused when credentials are configured.
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/", strings.NewReader("{}"))
	req.Header.Set("X-Amz-Target", serviceTargetPrefix+OpListCertificateAuthorities)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.Header.Get(errorTypeHeader) != codeMissingAuthentication {
		t.Errorf("unsigned request: %s %v", r2.Status, r2.Header)
	}
}

func TestParseCASpecAndConfig(t *testing.T) {
	spec, err := ParseCASpec("arn=" + testRootARN + ",type=ROOT,key=EC_prime256v1,mode=SHORT_LIVED_CERTIFICATE,status=DISABLED")
	if err != nil {
		t.Fatal(err)
	}
	want := CASpec{ARN: testRootARN, Type: TypeRoot, KeyAlgorithm: KeyECPrime256, UsageMode: ModeShortLived, Status: StatusDisabled}
	if spec != want {
		t.Fatalf("got %+v", spec)
	}
	for _, bad := range []string{"arn=nope", "arn=" + testRootARN + ",key=DSA", "arn=" + testRootARN + ",type=LEAF", "arn=" + testRootARN + ",color=blue"} {
		if _, err := ParseCASpec(bad); err == nil {
			t.Errorf("ParseCASpec(%q) accepted", bad)
		}
	}
	dir := t.TempDir()
	yml := "- arn: " + testRootARN + "\n  key: EC_prime256v1\n- \"arn=" + testSubARN + ",type=SUBORDINATE,key=RSA_2048\"\n"
	path := filepath.Join(dir, "cas.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	specs, err := LoadCASpecs(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[0].Type != TypeRoot || specs[0].Status != StatusActive || specs[1].Type != TypeSubordinate {
		t.Fatalf("specs: %+v", specs)
	}
	jsonPath := filepath.Join(dir, "cas.json")
	if err := os.WriteFile(jsonPath, []byte(`[{"arn":"`+testRootARN+`","type":"ROOT","key":"RSA_2048","mode":"GENERAL_PURPOSE"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if specs, err := LoadCASpecs(jsonPath); err != nil || len(specs) != 1 {
		t.Fatalf("json config: %v %+v", err, specs)
	}
}

func TestParseARN(t *testing.T) {
	for _, ok := range []string{testRootARN, testSubARN, testSubARN + "/certificate/0123456789abcdef0123456789abcdef"} {
		if _, err := parseARN(ok); err != nil {
			t.Errorf("parseARN(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "arn:aws:acm:us-east-1:1:certificate-authority/x", "arn:aws:acm-pca::1:certificate-authority/x",
		"arn:aws:acm-pca:r:a:certificate-authority/", "arn:aws:acm-pca:r:a:certificate-authority/x/cert/y"} {
		if _, err := parseARN(bad); err == nil {
			t.Errorf("parseARN(%q) accepted", bad)
		}
	}
	if got, _ := parseEndDate(491231235959); got.Year() != 2049 {
		t.Errorf("UTCTime 49 -> %d", got.Year())
	}
	if got, _ := parseEndDate(501231235959); got.Year() != 1950 {
		t.Errorf("UTCTime 50 -> %d", got.Year())
	}
}
