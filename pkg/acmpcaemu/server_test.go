package acmpcaemu

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/acmpca"
	"github.com/aws/aws-sdk-go-v2/service/acmpca/types"
)

var certARNPattern = regexp.MustCompile(`^` + regexp.QuoteMeta(testSubARN) + `/certificate/[0-9a-f]{32}$`)

func issue(ctx context.Context, t *testing.T, c *acmpca.Client, caARN string, csr []byte, alg types.SigningAlgorithm, v types.Validity) string {
	t.Helper()
	out, err := c.IssueCertificate(ctx, &acmpca.IssueCertificateInput{
		CertificateAuthorityArn: aws.String(caARN),
		Csr:                     csr,
		SigningAlgorithm:        alg,
		Validity:                &v,
	})
	if err != nil {
		t.Fatalf("IssueCertificate: %v", err)
	}
	return aws.ToString(out.CertificateArn)
}

func days(n int64) types.Validity {
	return types.Validity{Type: types.ValidityPeriodTypeDays, Value: aws.Int64(n)}
}

// TestIssueAndGetSubordinateChain drives issuance through the real SDK
// client in both protocols and verifies the chain of three against the
// chain file written to the state dir.
func TestIssueAndGetSubordinateChain(t *testing.T) {
	dir := t.TempDir()
	srv, ts := startServer(t, Options{StateDir: dir, InProgress: 300 * time.Millisecond},
		CASpec{ARN: testRootARN, Type: TypeRoot, KeyAlgorithm: KeyRSA2048},
		CASpec{ARN: testSubARN, Type: TypeSubordinate, KeyAlgorithm: KeyECPrime256})
	ctx := context.Background()
	for i, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := newClient(t, ts, clientConfig{json: p.json})
			csr, _ := makeCSR(t, "svc.example.org", "svc.example.org", "svc.default.svc")
			issuedAt := time.Now()
			arn := issue(ctx, t, c, testSubARN, csr, types.SigningAlgorithmSha256withecdsa, days(2))
			if !certARNPattern.MatchString(arn) {
				t.Fatalf("certificate ARN %q does not match %v", arn, certARNPattern)
			}
			_, err := c.GetCertificate(ctx, &acmpca.GetCertificateInput{CertificateAuthorityArn: aws.String(testSubARN), CertificateArn: aws.String(arn)})
			var inProgress *types.RequestInProgressException
			if !errors.As(err, &inProgress) {
				t.Fatalf("immediate GetCertificate: want RequestInProgressException, got %v", err)
			}
			waiter := acmpca.NewCertificateIssuedWaiter(c, func(o *acmpca.CertificateIssuedWaiterOptions) {
				o.MinDelay, o.MaxDelay = 100*time.Millisecond, 200*time.Millisecond
			})
			getIn := &acmpca.GetCertificateInput{CertificateAuthorityArn: aws.String(testSubARN), CertificateArn: aws.String(arn)}
			got, err := waiter.WaitForOutput(ctx, getIn, 10*time.Second)
			if err != nil {
				t.Fatalf("waiter: %v", err)
			}
			leafPEM, chainPEM := aws.ToString(got.Certificate), aws.ToString(got.CertificateChain)
			if strings.HasSuffix(leafPEM, "\n") || strings.HasSuffix(chainPEM, "\n") {
				t.Error("PEM in API output must not end with a newline")
			}
			leaf := parsePEMChain(t, leafPEM)[0]
			apiChain := parsePEMChain(t, chainPEM)
			fileChain := parsePEMChain(t, mustRead(t, filepath.Join(dir, "sub-0001-chain.pem")))
			if len(apiChain) != 2 || len(fileChain) != 2 {
				t.Fatalf("want chains of sub+root, got API %d, file %d", len(apiChain), len(fileChain))
			}
			if !apiChain[0].Equal(fileChain[0]) || !apiChain[1].Equal(fileChain[1]) {
				t.Fatal("API chain differs from chain file")
			}
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(fileChain[1])
			inter.AddCert(fileChain[0])
			chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "svc.example.org",
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if len(chains[0]) != 3 {
				t.Fatalf("want chain of 3 (leaf, sub, root), got %d", len(chains[0]))
			}
			if fileChain[1].Subject.String() != fileChain[1].Issuer.String() {
				t.Error("last chain element is not a root")
			}
			if leaf.Subject.CommonName != "svc.example.org" || len(leaf.Subject.Organization) != 1 ||
				len(leaf.URIs) != 1 || len(leaf.IPAddresses) != 1 || len(leaf.EmailAddresses) != 1 || len(leaf.DNSNames) != 2 {
				t.Errorf("subject/SANs not passed through: %v %v %v %v %v", leaf.Subject, leaf.DNSNames, leaf.URIs, leaf.IPAddresses, leaf.EmailAddresses)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment || len(leaf.ExtKeyUsage) != 2 || leaf.IsCA {
				t.Errorf("unexpected usages: %v %v CA=%v", leaf.KeyUsage, leaf.ExtKeyUsage, leaf.IsCA)
			}
			if d := issuedAt.Add(-time.Hour).Sub(leaf.NotBefore); d < -5*time.Second || d > 5*time.Second {
				t.Errorf("notBefore %v not backdated by an hour from %v", leaf.NotBefore, issuedAt)
			}
			if !strings.HasSuffix(arn, leaf.SerialNumber.Text(16)) {
				t.Errorf("ARN %s does not end with serial %x", arn, leaf.SerialNumber)
			}

			caOut, err := c.GetCertificateAuthorityCertificate(ctx, &acmpca.GetCertificateAuthorityCertificateInput{CertificateAuthorityArn: aws.String(testSubARN)})
			if err != nil {
				t.Fatal(err)
			}
			if !parsePEMChain(t, aws.ToString(caOut.Certificate))[0].Equal(fileChain[0]) ||
				!parsePEMChain(t, aws.ToString(caOut.CertificateChain))[0].Equal(fileChain[1]) {
				t.Error("GetCertificateAuthorityCertificate: wrong certificate or chain")
			}
			rootOut, err := c.GetCertificateAuthorityCertificate(ctx, &acmpca.GetCertificateAuthorityCertificateInput{CertificateAuthorityArn: aws.String(testRootARN)})
			if err != nil {
				t.Fatal(err)
			}
			if rootOut.CertificateChain != nil && *rootOut.CertificateChain != "" {
				t.Error("root CA must have no chain")
			}

			desc, err := c.DescribeCertificateAuthority(ctx, &acmpca.DescribeCertificateAuthorityInput{CertificateAuthorityArn: aws.String(testSubARN)})
			if err != nil {
				t.Fatal(err)
			}
			ca := desc.CertificateAuthority
			if ca.Status != types.CertificateAuthorityStatusActive || ca.Type != types.CertificateAuthorityTypeSubordinate ||
				ca.CertificateAuthorityConfiguration.KeyAlgorithm != types.KeyAlgorithmEcPrime256v1 ||
				ca.UsageMode != types.CertificateAuthorityUsageModeGeneralPurpose ||
				ca.NotAfter == nil || !ca.NotAfter.Equal(fileChain[0].NotAfter) || ca.CreatedAt == nil {
				t.Errorf("unexpected description: %+v", ca)
			}
			st := srv.Stats()
			if st.Issued != int64(i+1) {
				t.Errorf("issued = %d, want %d", st.Issued, i+1)
			}
			wantProto := map[bool]string{false: "rpcv2Cbor", true: "awsJson1_1"}[p.json]
			if st.Protocols[wantProto] == 0 {
				t.Errorf("no requests counted for %s: %v", wantProto, st.Protocols)
			}
		})
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRootCAChainIsItself(t *testing.T) {
	_, ts := startServer(t, Options{}, CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256})
	c := newClient(t, ts, clientConfig{})
	csr, _ := makeCSR(t, "leaf")
	ctx := context.Background()
	arn := issue(ctx, t, c, testRootARN, csr, types.SigningAlgorithmSha384withecdsa, days(1))
	out, err := c.GetCertificate(ctx, &acmpca.GetCertificateInput{CertificateAuthorityArn: aws.String(testRootARN), CertificateArn: aws.String(arn)})
	if err != nil {
		t.Fatal(err)
	}
	chain := parsePEMChain(t, aws.ToString(out.CertificateChain))
	leaf := parsePEMChain(t, aws.ToString(out.Certificate))[0]
	if len(chain) != 1 || leaf.CheckSignatureFrom(chain[0]) != nil {
		t.Fatal("chain of a root-issued certificate must be the root itself")
	}
	if leaf.SignatureAlgorithm != x509.ECDSAWithSHA384 {
		t.Errorf("signature algorithm %v", leaf.SignatureAlgorithm)
	}
}

func TestIdempotency(t *testing.T) {
	clk := newFakeClock()
	srv, ts := startServer(t, Options{Now: clk.Now}, CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256})
	ctx := context.Background()
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := newClient(t, ts, clientConfig{json: p.json})
			csr, _ := makeCSR(t, "idem")
			in := func(v int64) *acmpca.IssueCertificateInput {
				return &acmpca.IssueCertificateInput{CertificateAuthorityArn: aws.String(testRootARN), Csr: csr,
					SigningAlgorithm: types.SigningAlgorithmSha256withecdsa, Validity: &types.Validity{Type: types.ValidityPeriodTypeDays, Value: aws.Int64(v)},
					IdempotencyToken: aws.String("token-" + p.name)}
			}
			before := srv.Stats().Issued
			a, err := c.IssueCertificate(ctx, in(1))
			if err != nil {
				t.Fatal(err)
			}
			b, err := c.IssueCertificate(ctx, in(1))
			if err != nil {
				t.Fatal(err)
			}
			if *a.CertificateArn != *b.CertificateArn {
				t.Fatalf("same token and arguments gave %s and %s", *a.CertificateArn, *b.CertificateArn)
			}
			if got := srv.Stats().Issued - before; got != 1 {
				t.Fatalf("idempotent replay counted: issued %d", got)
			}
			_, err = c.IssueCertificate(ctx, in(2))
			wantCode(t, err, codeIdempotency)
			clk.Advance(idempotencyWindow + time.Second)
			d, err := c.IssueCertificate(ctx, in(1))
			if err != nil {
				t.Fatal(err)
			}
			if *d.CertificateArn == *a.CertificateArn {
				t.Fatal("token reused after the idempotency window must issue a new certificate")
			}
		})
	}
}

func TestThrottling(t *testing.T) {
	clk := newFakeClock() // frozen: the bucket never refills on its own
	srv, ts := startServer(t, Options{Now: clk.Now, Rates: map[string]float64{OpIssueCertificate: 2}},
		CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256})
	ctx := context.Background()
	c := newClient(t, ts, clientConfig{noRetry: true})
	csr, _ := makeCSR(t, "throttle")
	in := &acmpca.IssueCertificateInput{CertificateAuthorityArn: aws.String(testRootARN), Csr: csr,
		SigningAlgorithm: types.SigningAlgorithmSha256withecdsa, Validity: &types.Validity{Type: types.ValidityPeriodTypeDays, Value: aws.Int64(1)}}
	for i := range 2 {
		if _, err := c.IssueCertificate(ctx, in); err != nil {
			t.Fatalf("request %d within burst: %v", i, err)
		}
	}
	_, err := c.IssueCertificate(ctx, in)
	wantCode(t, err, codeThrottling)
	// JSON too.
	_, err = newClient(t, ts, clientConfig{json: true, noRetry: true}).IssueCertificate(ctx, in)
	wantCode(t, err, codeThrottling)
	clk.Advance(time.Second)
	if _, err := c.IssueCertificate(ctx, in); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	st := srv.Stats()
	if st.Requests[OpIssueCertificate]["ok"] != 3 || st.Requests[OpIssueCertificate][codeThrottling] != 2 {
		t.Fatalf("stats: %v", st.Requests)
	}
	// GetCertificate keeps its own, independent budget.
	if srv.Rates()[OpGetCertificate] != DefaultGetRate {
		t.Errorf("GetCertificate rate %v", srv.Rates()[OpGetCertificate])
	}
}

func TestSigningAlgorithmMismatch(t *testing.T) {
	_, ts := startServer(t, Options{}, CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256})
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := newClient(t, ts, clientConfig{json: p.json})
			csr, _ := makeCSR(t, "mismatch")
			_, err := c.IssueCertificate(context.Background(), &acmpca.IssueCertificateInput{
				CertificateAuthorityArn: aws.String(testRootARN), Csr: csr,
				SigningAlgorithm: types.SigningAlgorithmSha256withrsa, Validity: &types.Validity{Type: types.ValidityPeriodTypeDays, Value: aws.Int64(1)}})
			var ia *types.InvalidArgsException
			if !errors.As(err, &ia) || !strings.Contains(ia.ErrorMessage(), "SHA256WITHECDSA") {
				t.Fatalf("want InvalidArgsException naming valid algorithms, got %v", err)
			}
		})
	}
}

func TestDisabledCAAndErrors(t *testing.T) {
	_, ts := startServer(t, Options{}, CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256, Status: StatusDisabled})
	ctx := context.Background()
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := newClient(t, ts, clientConfig{json: p.json})
			csr, _ := makeCSR(t, "disabled")
			in := &acmpca.IssueCertificateInput{CertificateAuthorityArn: aws.String(testRootARN), Csr: csr,
				SigningAlgorithm: types.SigningAlgorithmSha256withecdsa, Validity: &types.Validity{Type: types.ValidityPeriodTypeDays, Value: aws.Int64(1)}}
			_, err := c.IssueCertificate(ctx, in)
			var is *types.InvalidStateException
			if !errors.As(err, &is) {
				t.Fatalf("want InvalidStateException, got %v", err)
			}
			in.CertificateAuthorityArn = aws.String(strings.Replace(testRootARN, "12345678-", "00000000-", 1))
			_, err = c.IssueCertificate(ctx, in)
			var nf *types.ResourceNotFoundException
			if !errors.As(err, &nf) {
				t.Fatalf("want ResourceNotFoundException, got %v", err)
			}
			in.CertificateAuthorityArn = aws.String("arn:aws:acm:us-east-1:1:certificate/x")
			_, err = c.IssueCertificate(ctx, in)
			var ia *types.InvalidArnException
			if !errors.As(err, &ia) {
				t.Fatalf("want InvalidArnException, got %v", err)
			}
			in.CertificateAuthorityArn, in.Csr = aws.String(testRootARN), []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
			_, err = c.IssueCertificate(ctx, in)
			var mc *types.MalformedCSRException
			if !errors.As(err, &mc) {
				t.Fatalf("want MalformedCSRException, got %v", err)
			}
		})
	}
}

func TestValidity(t *testing.T) {
	clk := newFakeClock()
	_, ts := startServer(t, Options{Now: clk.Now}, CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256})
	now := clk.Now().UTC()
	end := now.Add(48 * time.Hour)
	nb := now.Add(time.Hour)
	tests := []struct {
		name          string
		v             types.Validity
		notBefore     *types.Validity
		wantNotAfter  time.Time
		wantNotBefore time.Time
		wantErr       string
	}{
		{name: "days", v: days(3), wantNotAfter: now.AddDate(0, 0, 3)},
		{name: "months", v: types.Validity{Type: types.ValidityPeriodTypeMonths, Value: aws.Int64(2)}, wantNotAfter: now.AddDate(0, 2, 0)},
		{name: "years", v: types.Validity{Type: types.ValidityPeriodTypeYears, Value: aws.Int64(1)}, wantNotAfter: now.AddDate(1, 0, 0)},
		{name: "absolute", v: types.Validity{Type: types.ValidityPeriodTypeAbsolute, Value: aws.Int64(end.Unix())}, wantNotAfter: end},
		{name: "end date", v: types.Validity{Type: types.ValidityPeriodTypeEndDate, Value: aws.Int64(mustInt(end.Format("20060102150405")))}, wantNotAfter: end},
		{name: "not before", v: days(1), notBefore: &types.Validity{Type: types.ValidityPeriodTypeAbsolute, Value: aws.Int64(nb.Unix())},
			wantNotAfter: now.AddDate(0, 0, 1), wantNotBefore: nb},
		{name: "zero days", v: days(0), wantErr: codeValidation},
		{name: "past", v: types.Validity{Type: types.ValidityPeriodTypeAbsolute, Value: aws.Int64(now.Add(-time.Hour).Unix())}, wantErr: codeValidation},
		{name: "beyond CA", v: types.Validity{Type: types.ValidityPeriodTypeYears, Value: aws.Int64(11)}, wantErr: codeValidation},
	}
	ctx := context.Background()
	c := newClient(t, ts, clientConfig{})
	csr, _ := makeCSR(t, "validity")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := c.IssueCertificate(ctx, &acmpca.IssueCertificateInput{CertificateAuthorityArn: aws.String(testRootARN), Csr: csr,
				SigningAlgorithm: types.SigningAlgorithmSha256withecdsa, Validity: &tc.v, ValidityNotBefore: tc.notBefore})
			if tc.wantErr != "" {
				wantCode(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.GetCertificate(ctx, &acmpca.GetCertificateInput{CertificateAuthorityArn: aws.String(testRootARN), CertificateArn: out.CertificateArn})
			if err != nil {
				t.Fatal(err)
			}
			leaf := parsePEMChain(t, *got.Certificate)[0]
			if !leaf.NotAfter.Equal(tc.wantNotAfter) {
				t.Errorf("notAfter %v, want %v", leaf.NotAfter, tc.wantNotAfter)
			}
			wantNB := tc.wantNotBefore
			if wantNB.IsZero() {
				wantNB = now.Add(-time.Hour)
			}
			if !leaf.NotBefore.Equal(wantNB) {
				t.Errorf("notBefore %v, want %v", leaf.NotBefore, wantNB)
			}
		})
	}
}

func mustInt(s string) int64 {
	var n int64
	for _, r := range s {
		n = n*10 + int64(r-'0')
	}
	return n
}

func TestShortLivedMode(t *testing.T) {
	_, ts := startServer(t, Options{}, CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256, UsageMode: ModeShortLived})
	c := newClient(t, ts, clientConfig{})
	csr, _ := makeCSR(t, "short")
	ctx := context.Background()
	issue(ctx, t, c, testRootARN, csr, types.SigningAlgorithmSha256withecdsa, days(7))
	v := days(8)
	_, err := c.IssueCertificate(ctx, &acmpca.IssueCertificateInput{CertificateAuthorityArn: aws.String(testRootARN), Csr: csr,
		SigningAlgorithm: types.SigningAlgorithmSha256withecdsa, Validity: &v})
	wantCode(t, err, codeValidation)
}

func TestSigV4(t *testing.T) {
	srv, ts := startServer(t, Options{Credentials: map[string]string{testAKID: testSecret, "AKIDOTHER": "other"}},
		CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256})
	ctx := context.Background()
	in := &acmpca.DescribeCertificateAuthorityInput{CertificateAuthorityArn: aws.String(testRootARN)}
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			if _, err := newClient(t, ts, clientConfig{json: p.json}).DescribeCertificateAuthority(ctx, in); err != nil {
				t.Fatalf("good credentials: %v", err)
			}
			if _, err := newClient(t, ts, clientConfig{json: p.json, akid: "AKIDOTHER", secret: "other"}).DescribeCertificateAuthority(ctx, in); err != nil {
				t.Fatalf("second credentials: %v", err)
			}
			_, err := newClient(t, ts, clientConfig{json: p.json, akid: testAKID, secret: "wrong", noRetry: true}).DescribeCertificateAuthority(ctx, in)
			wantCode(t, err, codeInvalidSignature)
			_, err = newClient(t, ts, clientConfig{json: p.json, akid: "AKIDUNKNOWN", secret: "x", noRetry: true}).DescribeCertificateAuthority(ctx, in)
			wantCode(t, err, codeUnrecognizedClient)
		})
	}
	st := srv.Stats()
	if st.AccessKeys[testAKID] != 4 || st.AccessKeys["AKIDOTHER"] != 2 || st.AccessKeys["AKIDUNKNOWN"] != 2 {
		t.Fatalf("access key stats: %v", st.AccessKeys)
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	specs := []CASpec{{ARN: testRootARN, KeyAlgorithm: KeyECPrime256}, {ARN: testSubARN, Type: TypeSubordinate, KeyAlgorithm: KeyECPrime256}}
	_, ts := startServer(t, Options{StateDir: dir}, specs...)
	ctx := context.Background()
	csr, _ := makeCSR(t, "persist")
	arn := issue(ctx, t, newClient(t, ts, clientConfig{}), testSubARN, csr, types.SigningAlgorithmSha256withecdsa, days(1))
	chainBefore := mustRead(t, filepath.Join(dir, "sub-0001-chain.pem"))
	ts.Close()

	fi, err := os.Stat(filepath.Join(dir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	srv2, ts2 := startServer(t, Options{StateDir: dir}, specs...)
	if chainAfter := mustRead(t, filepath.Join(dir, "sub-0001-chain.pem")); chainAfter != chainBefore {
		t.Fatal("CA chain changed across restart")
	}
	c := newClient(t, ts2, clientConfig{json: true})
	out, err := c.GetCertificate(ctx, &acmpca.GetCertificateInput{CertificateAuthorityArn: aws.String(testSubARN), CertificateArn: aws.String(arn)})
	if err != nil {
		t.Fatalf("certificate lost across restart: %v", err)
	}
	leaf := parsePEMChain(t, *out.Certificate)[0]
	chain := parsePEMChain(t, chainBefore)
	if err := leaf.CheckSignatureFrom(chain[0]); err != nil {
		t.Fatal(err)
	}
	// The restarted CA still issues under the same key.
	arn2 := issue(ctx, t, c, testSubARN, csr, types.SigningAlgorithmSha256withecdsa, days(1))
	if arn2 == arn || srv2.Stats().Issued != 1 {
		t.Fatal("issuance after restart")
	}
}

// TestRootActivationWalkthrough follows the AWS CLI walk-through: create a
// root CA, fetch its CSR, self-issue with the RootCACertificate template,
// import, then issue a leaf.
func TestRootActivationWalkthrough(t *testing.T) {
	dir := t.TempDir()
	_, ts := startServer(t, Options{StateDir: dir})
	ctx := context.Background()
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := newClient(t, ts, clientConfig{json: p.json})
			created, err := c.CreateCertificateAuthority(ctx, &acmpca.CreateCertificateAuthorityInput{
				CertificateAuthorityType: types.CertificateAuthorityTypeRoot,
				CertificateAuthorityConfiguration: &types.CertificateAuthorityConfiguration{
					KeyAlgorithm: types.KeyAlgorithmEcPrime256v1, SigningAlgorithm: types.SigningAlgorithmSha256withecdsa,
					Subject: &types.ASN1Subject{CommonName: aws.String("Walkthrough Root"), Organization: aws.String("Example")},
				},
				IdempotencyToken: aws.String("create-1"),
			})
			if err != nil {
				t.Fatal(err)
			}
			caARN := created.CertificateAuthorityArn
			if !strings.HasPrefix(*caARN, "arn:aws:acm-pca:us-east-1:") {
				t.Errorf("created ARN %s", *caARN)
			}
			desc, err := c.DescribeCertificateAuthority(ctx, &acmpca.DescribeCertificateAuthorityInput{CertificateAuthorityArn: caARN})
			if err != nil || desc.CertificateAuthority.Status != types.CertificateAuthorityStatusPendingCertificate {
				t.Fatalf("describe pending: %v %+v", err, desc)
			}
			csr, err := c.GetCertificateAuthorityCsr(ctx, &acmpca.GetCertificateAuthorityCsrInput{CertificateAuthorityArn: caARN})
			if err != nil {
				t.Fatal(err)
			}
			issued, err := c.IssueCertificate(ctx, &acmpca.IssueCertificateInput{CertificateAuthorityArn: caARN, Csr: []byte(*csr.Csr),
				SigningAlgorithm: types.SigningAlgorithmSha256withecdsa, TemplateArn: aws.String(TemplateRootCA),
				Validity: &types.Validity{Type: types.ValidityPeriodTypeYears, Value: aws.Int64(10)}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.GetCertificate(ctx, &acmpca.GetCertificateInput{CertificateAuthorityArn: caARN, CertificateArn: issued.CertificateArn})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.ImportCertificateAuthorityCertificate(ctx, &acmpca.ImportCertificateAuthorityCertificateInput{
				CertificateAuthorityArn: caARN, Certificate: []byte(*got.Certificate)}); err != nil {
				t.Fatal(err)
			}
			desc, err = c.DescribeCertificateAuthority(ctx, &acmpca.DescribeCertificateAuthorityInput{CertificateAuthorityArn: caARN})
			if err != nil || desc.CertificateAuthority.Status != types.CertificateAuthorityStatusActive {
				t.Fatalf("describe active: %v %+v", err, desc)
			}
			if cn := aws.ToString(desc.CertificateAuthority.CertificateAuthorityConfiguration.Subject.CommonName); cn != "Walkthrough Root" {
				t.Errorf("subject CN %q", cn)
			}
			leafCSR, _ := makeCSR(t, "after-walkthrough")
			leafARN := issue(ctx, t, c, *caARN, leafCSR, types.SigningAlgorithmSha256withecdsa, days(1))
			leaf, err := c.GetCertificate(ctx, &acmpca.GetCertificateInput{CertificateAuthorityArn: caARN, CertificateArn: aws.String(leafARN)})
			if err != nil {
				t.Fatal(err)
			}
			root := parsePEMChain(t, *got.Certificate)[0]
			if err := parsePEMChain(t, *leaf.Certificate)[0].CheckSignatureFrom(root); err != nil {
				t.Fatal(err)
			}
			id := (*caARN)[strings.LastIndex(*caARN, "/")+1:]
			if _, err := os.Stat(filepath.Join(dir, id+"-chain.pem")); err != nil {
				t.Errorf("chain file of activated CA: %v", err)
			}
		})
	}
	list, err := newClient(t, ts, clientConfig{}).ListCertificateAuthorities(ctx, &acmpca.ListCertificateAuthoritiesInput{MaxResults: aws.Int32(1)})
	if err != nil || len(list.CertificateAuthorities) != 1 || list.NextToken == nil {
		t.Fatalf("list page 1: %v %+v", err, list)
	}
	list2, err := newClient(t, ts, clientConfig{json: true}).ListCertificateAuthorities(ctx, &acmpca.ListCertificateAuthoritiesInput{NextToken: list.NextToken})
	if err != nil || len(list2.CertificateAuthorities) != 1 || list2.NextToken != nil {
		t.Fatalf("list page 2: %v %+v", err, list2)
	}
}

func TestRevoke(t *testing.T) {
	_, ts := startServer(t, Options{}, CASpec{ARN: testRootARN, KeyAlgorithm: KeyECPrime256})
	ctx := context.Background()
	c := newClient(t, ts, clientConfig{})
	csr, _ := makeCSR(t, "revoke")
	arn := issue(ctx, t, c, testRootARN, csr, types.SigningAlgorithmSha256withecdsa, days(1))
	out, err := c.GetCertificate(ctx, &acmpca.GetCertificateInput{CertificateAuthorityArn: aws.String(testRootARN), CertificateArn: aws.String(arn)})
	if err != nil {
		t.Fatal(err)
	}
	serial := colonHex(parsePEMChain(t, *out.Certificate)[0].SerialNumber)
	in := &acmpca.RevokeCertificateInput{CertificateAuthorityArn: aws.String(testRootARN), CertificateSerial: aws.String(serial),
		RevocationReason: types.RevocationReasonKeyCompromise}
	if _, err := c.RevokeCertificate(ctx, in); err != nil {
		t.Fatal(err)
	}
	_, err = newClient(t, ts, clientConfig{json: true}).RevokeCertificate(ctx, in)
	var done *types.RequestAlreadyProcessedException
	if !errors.As(err, &done) {
		t.Fatalf("second revoke: %v", err)
	}
}
