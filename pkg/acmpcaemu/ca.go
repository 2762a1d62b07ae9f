package acmpcaemu

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Values of the ACM PCA enums the emulator supports.
const (
	TypeRoot        = "ROOT"
	TypeSubordinate = "SUBORDINATE"

	KeyRSA2048     = "RSA_2048"
	KeyRSA3072     = "RSA_3072"
	KeyRSA4096     = "RSA_4096"
	KeyECPrime256  = "EC_prime256v1"
	KeyECSecp384r1 = "EC_secp384r1"
	KeyECSecp521r1 = "EC_secp521r1"

	ModeGeneralPurpose = "GENERAL_PURPOSE"
	ModeShortLived     = "SHORT_LIVED_CERTIFICATE"

	StatusCreating           = "CREATING"
	StatusPendingCertificate = "PENDING_CERTIFICATE"
	StatusActive             = "ACTIVE"
	StatusDeleted            = "DELETED"
	StatusDisabled           = "DISABLED"
	StatusExpired            = "EXPIRED"
	StatusFailed             = "FAILED"
)

// Certificate templates, see the ACM PCA "Understanding certificate
// templates" documentation.
const (
	templatePrefix          = "arn:aws:acm-pca:::template/"
	TemplateEndEntity       = templatePrefix + "EndEntityCertificate/V1"
	TemplateEndEntityClient = templatePrefix + "EndEntityClientAuthCertificate/V1"
	TemplateEndEntityServer = templatePrefix + "EndEntityServerAuthCertificate/V1"
	TemplateRootCA          = templatePrefix + "RootCACertificate/V1"
	templateSubordinatePfx  = templatePrefix + "SubordinateCACertificate_PathLen"
)

func validKeyAlgorithm(k string) bool {
	switch k {
	case KeyRSA2048, KeyRSA3072, KeyRSA4096, KeyECPrime256, KeyECSecp384r1, KeyECSecp521r1:
		return true
	}
	return false
}

func validStatus(s string) bool {
	switch s {
	case StatusCreating, StatusPendingCertificate, StatusActive, StatusDeleted,
		StatusDisabled, StatusExpired, StatusFailed:
		return true
	}
	return false
}

func isECKey(k string) bool { return strings.HasPrefix(k, "EC_") }

// defaultSigningAlgorithm is the algorithm a CA of key family k signs its
// own certificate with.
func defaultSigningAlgorithm(k string) string {
	if isECKey(k) {
		return "SHA256WITHECDSA"
	}
	return "SHA256WITHRSA"
}

// signingAlgorithm maps an ACM PCA SigningAlgorithm to x509's, checking that
// it fits the CA key family the way AWS does.
func signingAlgorithm(alg, keyAlg string) (x509.SignatureAlgorithm, error) {
	ec := map[string]x509.SignatureAlgorithm{
		"SHA256WITHECDSA": x509.ECDSAWithSHA256,
		"SHA384WITHECDSA": x509.ECDSAWithSHA384,
		"SHA512WITHECDSA": x509.ECDSAWithSHA512,
	}
	rs := map[string]x509.SignatureAlgorithm{
		"SHA256WITHRSA": x509.SHA256WithRSA,
		"SHA384WITHRSA": x509.SHA384WithRSA,
		"SHA512WITHRSA": x509.SHA512WithRSA,
	}
	family, valid := rs, "SHA256WITHRSA, SHA384WITHRSA, SHA512WITHRSA"
	if isECKey(keyAlg) {
		family, valid = ec, "SHA256WITHECDSA, SHA384WITHECDSA, SHA512WITHECDSA"
	}
	if sa, ok := family[alg]; ok {
		return sa, nil
	}
	if _, ok := ec[alg]; !ok {
		if _, ok := rs[alg]; !ok {
			return 0, newAPIError(codeValidation,
				"1 validation error detected: Value '%s' at 'signingAlgorithm' failed to satisfy constraint: Member must satisfy enum value set", alg)
		}
	}
	return 0, newAPIError(codeInvalidArgs,
		"Signing algorithm %s cannot be used with key type %s. Valid signing algorithms are: %s.", alg, keyAlg, valid)
}

func generateKey(keyAlg string) (crypto.Signer, error) {
	switch keyAlg {
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	case KeyECPrime256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECSecp384r1:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyECSecp521r1:
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	}
	return nil, fmt.Errorf("unsupported key algorithm %q", keyAlg)
}

func encodeKey(k crypto.Signer) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", fmt.Errorf("marshal private key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

func decodeKey(s string) (crypto.Signer, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("no PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", k)
	}
	return signer, nil
}

// certPEM encodes DER without the trailing newline, which is how ACM PCA
// returns certificates in its API.
func certPEM(der []byte) string {
	return strings.TrimRight(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), "\n")
}

func parseCertPEM(s string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// splitPEMCerts splits a PEM bundle into its certificates, each in API form.
func splitPEMCerts(data []byte) ([]string, []*x509.Certificate, error) {
	var (
		pems  []string
		certs []*x509.Certificate
	)
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("parse certificate: %w", err)
		}
		pems = append(pems, certPEM(b.Bytes))
		certs = append(certs, c)
	}
	if len(strings.TrimSpace(string(data))) != 0 || len(certs) == 0 {
		return nil, nil, errors.New("malformed PEM certificate data")
	}
	return pems, certs, nil
}

// newSerial returns a positive 128-bit serial whose hex form is exactly 32
// characters, matching the certificate ids in ACM PCA certificate ARNs.
func newSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("read random serial: %w", err)
	}
	b[0] = b[0]&0x7f | 0x10
	return new(big.Int).SetBytes(b), nil
}

func serialHex(n *big.Int) string { return fmt.Sprintf("%032x", n) }

// colonHex renders a serial the way ACM PCA shows it (aa:bb:...).
func colonHex(n *big.Int) string {
	h := hex.EncodeToString(n.Bytes())
	var sb strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}

// subjectKeyID follows RFC 5280 section 4.2.1.2 method 1. Go only adds it to
// CA certificates on its own; ACM PCA adds it to all certificates.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}

func subjectFromName(n pkix.Name) *asn1Subject {
	first := func(v []string) string {
		if len(v) == 0 {
			return ""
		}
		return v[0]
	}
	return &asn1Subject{
		Country:            first(n.Country),
		Organization:       first(n.Organization),
		OrganizationalUnit: first(n.OrganizationalUnit),
		State:              first(n.Province),
		CommonName:         n.CommonName,
		SerialNumber:       n.SerialNumber,
		Locality:           first(n.Locality),
	}
}

func nameFromSubject(s *asn1Subject) pkix.Name {
	var n pkix.Name
	if s == nil {
		return n
	}
	add := func(dst *[]string, v string) {
		if v != "" {
			*dst = append(*dst, v)
		}
	}
	add(&n.Country, s.Country)
	add(&n.Organization, s.Organization)
	add(&n.OrganizationalUnit, s.OrganizationalUnit)
	add(&n.Province, s.State)
	add(&n.Locality, s.Locality)
	n.CommonName = s.CommonName
	n.SerialNumber = s.SerialNumber
	return n
}

// parsedARN is a CA or certificate ARN split into its parts.
type parsedARN struct {
	Partition, Region, Account string
	CAID                       string
	CertID                     string // empty for a CA ARN
}

// CAArn renders the CA part of the ARN.
func (p parsedARN) CAArn() string {
	return fmt.Sprintf("arn:%s:acm-pca:%s:%s:%s%s", p.Partition, p.Region, p.Account, certificateAuthorityPrefix, p.CAID)
}

func validID(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.+=@", r)) {
			return false
		}
	}
	return true
}

// parseARN accepts any non-empty partition, region and account tokens, so
// placeholder ARNs such as arn:aws:acm-pca:region:account:... work.
func parseARN(s string) (parsedARN, error) {
	parts := strings.SplitN(s, ":", 6)
	bad := func() (parsedARN, error) {
		return parsedARN{}, newAPIError(codeInvalidArn, "The ARN %q is not valid.", s)
	}
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[2] != "acm-pca" ||
		parts[3] == "" || parts[4] == "" || strings.ContainsAny(parts[3]+parts[4], "/ ") {
		return bad()
	}
	p := parsedARN{Partition: parts[1], Region: parts[3], Account: parts[4]}
	res, ok := strings.CutPrefix(parts[5], certificateAuthorityPrefix)
	if !ok {
		return bad()
	}
	segs := strings.Split(res, "/")
	switch {
	case len(segs) == 1 && validID(segs[0]):
		p.CAID = segs[0]
	case len(segs) == 3 && validID(segs[0]) && segs[1] == "certificate" && validID(segs[2]):
		p.CAID, p.CertID = segs[0], segs[2]
	default:
		return bad()
	}
	return p, nil
}

// createCACert creates a CA certificate for pub, signed by signerKey with
// parent as issuer (self-signed when parent is nil). maxPathLen -1 means
// unlimited.
func createCACert(signerKey crypto.Signer, pub crypto.PublicKey, subject pkix.Name,
	notBefore, notAfter time.Time, parent *x509.Certificate, maxPathLen int) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signerKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return der, nil
}
