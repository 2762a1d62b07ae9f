package acmpcaemu

// Request and response shapes of the ACM PCA API. Field names are the
// member names of the Smithy model, which both protocols use verbatim.
// Only the members the emulator understands are declared; unknown members
// are ignored by both decoders, as AWS ignores what it does not use.

type validityShape struct {
	Value *int64 `json:"Value,omitempty"`
	Type  string `json:"Type,omitempty"`
}

type asn1Subject struct {
	Country                    string `json:"Country,omitempty"`
	Organization               string `json:"Organization,omitempty"`
	OrganizationalUnit         string `json:"OrganizationalUnit,omitempty"`
	DistinguishedNameQualifier string `json:"DistinguishedNameQualifier,omitempty"`
	State                      string `json:"State,omitempty"`
	CommonName                 string `json:"CommonName,omitempty"`
	SerialNumber               string `json:"SerialNumber,omitempty"`
	Locality                   string `json:"Locality,omitempty"`
}

type caConfiguration struct {
	KeyAlgorithm     string       `json:"KeyAlgorithm,omitempty"`
	SigningAlgorithm string       `json:"SigningAlgorithm,omitempty"`
	Subject          *asn1Subject `json:"Subject,omitempty"`
}

type enabledShape struct {
	Enabled bool `json:"Enabled"`
}

type revocationConfiguration struct {
	CrlConfiguration  *enabledShape `json:"CrlConfiguration,omitempty"`
	OcspConfiguration *enabledShape `json:"OcspConfiguration,omitempty"`
}

type certificateAuthorityShape struct {
	Arn                               string                   `json:"Arn,omitempty"`
	OwnerAccount                      string                   `json:"OwnerAccount,omitempty"`
	CreatedAt                         *epochTime               `json:"CreatedAt,omitempty"`
	LastStateChangeAt                 *epochTime               `json:"LastStateChangeAt,omitempty"`
	Type                              string                   `json:"Type,omitempty"`
	Serial                            string                   `json:"Serial,omitempty"`
	Status                            string                   `json:"Status,omitempty"`
	NotBefore                         *epochTime               `json:"NotBefore,omitempty"`
	NotAfter                          *epochTime               `json:"NotAfter,omitempty"`
	CertificateAuthorityConfiguration *caConfiguration         `json:"CertificateAuthorityConfiguration,omitempty"`
	RevocationConfiguration           *revocationConfiguration `json:"RevocationConfiguration,omitempty"`
	KeyStorageSecurityStandard        string                   `json:"KeyStorageSecurityStandard,omitempty"`
	UsageMode                         string                   `json:"UsageMode,omitempty"`
}

type caArnInput struct {
	CertificateAuthorityArn string `json:"CertificateAuthorityArn,omitempty"`
}

type describeCAOutput struct {
	CertificateAuthority *certificateAuthorityShape `json:"CertificateAuthority,omitempty"`
}

type listCAsInput struct {
	MaxResults *int32 `json:"MaxResults,omitempty"`
	NextToken  string `json:"NextToken,omitempty"`
}

type listCAsOutput struct {
	CertificateAuthorities []*certificateAuthorityShape `json:"CertificateAuthorities"`
	NextToken              string                       `json:"NextToken,omitempty"`
}

type createCAInput struct {
	CertificateAuthorityConfiguration *caConfiguration `json:"CertificateAuthorityConfiguration,omitempty"`
	CertificateAuthorityType          string           `json:"CertificateAuthorityType,omitempty"`
	IdempotencyToken                  string           `json:"IdempotencyToken,omitempty"`
	UsageMode                         string           `json:"UsageMode,omitempty"`
}

type createCAOutput struct {
	CertificateAuthorityArn string `json:"CertificateAuthorityArn,omitempty"`
}

type updateCAInput struct {
	CertificateAuthorityArn string `json:"CertificateAuthorityArn,omitempty"`
	Status                  string `json:"Status,omitempty"`
}

type getCACertificateOutput struct {
	Certificate      string `json:"Certificate,omitempty"`
	CertificateChain string `json:"CertificateChain,omitempty"`
}

type getCACsrOutput struct {
	Csr string `json:"Csr,omitempty"`
}

type importCACertificateInput struct {
	CertificateAuthorityArn string `json:"CertificateAuthorityArn,omitempty"`
	Certificate             []byte `json:"Certificate,omitempty"`
	CertificateChain        []byte `json:"CertificateChain,omitempty"`
}

type issueCertificateInput struct {
	CertificateAuthorityArn string         `json:"CertificateAuthorityArn,omitempty"`
	Csr                     []byte         `json:"Csr,omitempty"`
	SigningAlgorithm        string         `json:"SigningAlgorithm,omitempty"`
	TemplateArn             string         `json:"TemplateArn,omitempty"`
	Validity                *validityShape `json:"Validity,omitempty"`
	ValidityNotBefore       *validityShape `json:"ValidityNotBefore,omitempty"`
	IdempotencyToken        string         `json:"IdempotencyToken,omitempty"`
}

type issueCertificateOutput struct {
	CertificateArn string `json:"CertificateArn,omitempty"`
}

type getCertificateInput struct {
	CertificateAuthorityArn string `json:"CertificateAuthorityArn,omitempty"`
	CertificateArn          string `json:"CertificateArn,omitempty"`
}

type getCertificateOutput struct {
	Certificate      string `json:"Certificate,omitempty"`
	CertificateChain string `json:"CertificateChain,omitempty"`
}

type revokeCertificateInput struct {
	CertificateAuthorityArn string `json:"CertificateAuthorityArn,omitempty"`
	CertificateSerial       string `json:"CertificateSerial,omitempty"`
	RevocationReason        string `json:"RevocationReason,omitempty"`
}

// emptyOutput is the response of operations without output members.
type emptyOutput struct{}
