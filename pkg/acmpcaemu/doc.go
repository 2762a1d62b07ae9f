// Package acmpcaemu implements an emulator of AWS Certificate Manager Private
// Certificate Authority (ACM PCA) that is faithful enough for the real AWS
// clients (aws-sdk-go-v2's service/acmpca and the AWS CLI) to be pointed at
// it with a custom endpoint.
//
// One HTTP handler serves both wire protocols the clients speak:
//
//   - AWS JSON 1.1: POST / with X-Amz-Target: ACMPrivateCA.<Operation>
//     (the AWS CLI and older SDKs).
//   - Smithy RPC v2 CBOR: POST /service/ACMPrivateCA/operation/<Operation>
//     with Smithy-Protocol: rpc-v2-cbor (aws-sdk-go-v2 service/acmpca since
//     it switched to CBOR by default).
//
// Supported operations are CreateCertificateAuthority,
// DescribeCertificateAuthority, ListCertificateAuthorities,
// GetCertificateAuthorityCertificate, GetCertificateAuthorityCsr,
// ImportCertificateAuthorityCertificate, UpdateCertificateAuthority (status
// only), IssueCertificate, GetCertificate and RevokeCertificate. Certificates
// are real X.509 certificates signed by real keys, so chains verify with
// crypto/x509 or openssl.
//
// Beyond the AWS behaviour the server offers test hooks: SigV4 verification
// against configured credentials, per-operation rate limits answered with
// ThrottlingException, injectable errors, latency and outages, a delay during
// which GetCertificate answers RequestInProgressException, and counters
// (see [Server.Stats]). They are reachable both from Go and from a small admin
// HTTP API under /_acmpca-local/ (see [Server.Handler]).
//
// Typical in-process use from a Go test:
//
//	srv, err := acmpcaemu.New(acmpcaemu.Options{})
//	ca, err := srv.AddCA(ctx, acmpcaemu.CASpec{ARN: arn, Type: "ROOT"})
//	ts := httptest.NewServer(srv.Handler())
//	client := acmpca.New(acmpca.Options{BaseEndpoint: aws.String(ts.URL), ...})
//
// The command cmd/acmpca-local wraps the package in a standalone binary.
package acmpcaemu
