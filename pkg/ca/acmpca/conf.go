package acmpca

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	pcatypes "github.com/aws/aws-sdk-go-v2/service/acmpca/types"

	"meshca/pkg/api"
)

// Conf is the `conf` of a backend of type acmpca. arn, commonName, caCert
// and auth are the fields Kong Mesh documents; the others are meshca
// extensions with defaults.
type Conf struct {
	// Arn is the ARN of the private CA,
	// arn:<partition>:acm-pca:<region>:<account>:certificate-authority/<id>.
	Arn string `json:"arn"`
	// CommonName is a template rendered by the identity layer; the CSR the
	// backend receives already carries the rendered CN.
	CommonName string `json:"commonName,omitempty"`
	// CaCert is the root certificate chain of the private CA: it becomes the
	// trust bundle and every chain ACM returns is verified against it.
	CaCert *api.DataSource `json:"caCert"`
	// Auth holds static credentials; unset means the default AWS chain.
	Auth *Auth `json:"auth,omitempty"`

	// TemplateArn is the ACM PCA certificate template (default
	// arn:<partition>:acm-pca:::template/EndEntityCertificate/V1).
	TemplateArn string `json:"templateArn,omitempty"`
	// SigningAlgorithm defaults to SHA256WITHECDSA for EC CA keys and
	// SHA256WITHRSA for RSA CA keys (from DescribeCertificateAuthority).
	SigningAlgorithm string `json:"signingAlgorithm,omitempty"`
	// MaxRequestsPerSecond bounds IssueCertificate requests of the backend
	// (retries included); other calls get three times it, as ACM's default
	// quotas do. Default DefaultMaxRequestsPerSecond.
	MaxRequestsPerSecond *float64 `json:"maxRequestsPerSecond,omitempty"`
	// MaxConcurrentIssues bounds issuances in flight. Default
	// DefaultMaxConcurrentIssues.
	MaxConcurrentIssues *int `json:"maxConcurrentIssues,omitempty"`
}

// Auth is conf.auth.
type Auth struct {
	AWSCredentials *AWSCredentials `json:"awsCredentials,omitempty"`
}

// AWSCredentials are static AWS credentials read from DataSources.
type AWSCredentials struct {
	AccessKey       *api.DataSource `json:"accessKey,omitempty"`
	AccessKeySecret *api.DataSource `json:"accessKeySecret,omitempty"`
}

// Defaults of the meshca extensions.
const (
	// DefaultMaxRequestsPerSecond stays below ACM PCA's smallest per-account
	// quota (IssueCertificate, 25/s in most regions) so that other clients of
	// the account keep some room.
	DefaultMaxRequestsPerSecond = 20.0
	DefaultMaxConcurrentIssues  = 50
	// MaxShortLivedValidity is ACM PCA's limit for CAs in
	// SHORT_LIVED_CERTIFICATE usage mode.
	MaxShortLivedValidity = 7 * 24 * time.Hour
	// MinValidity is the shortest dpCert.rotation.expiration accepted.
	MinValidity = time.Minute
	// maxIdempotencyToken is ACM PCA's limit on IdempotencyToken.
	maxIdempotencyToken = 36
)

// Field paths, relative to the backend.
const (
	fConf            = "conf"
	fArn             = "conf.arn"
	fCaCert          = "conf.caCert"
	fAuth            = "conf.auth"
	fAWSCredentials  = "conf.auth.awsCredentials"
	fAccessKey       = "conf.auth.awsCredentials.accessKey"
	fAccessKeySecret = "conf.auth.awsCredentials.accessKeySecret"
	fTemplateArn     = "conf.templateArn"
	fSigningAlg      = "conf.signingAlgorithm"
	fMaxRPS          = "conf.maxRequestsPerSecond"
	fMaxConcurrent   = "conf.maxConcurrentIssues"
	fExpiration      = "dpCert.rotation.expiration"
)

// caARN is a parsed certificate-authority ARN.
type caARN struct {
	Partition, Region, Account, ID string
}

// parseCAARN checks arn:<partition>:acm-pca:<region>:<account>:certificate-authority/<id>.
// Any non-empty region and account are accepted (the seed's literal
// "region" and "account" included): AWS decides whether they exist.
func parseCAARN(s string) (caARN, error) {
	const want = "want arn:<partition>:acm-pca:<region>:<account>:certificate-authority/<id>"
	if s == "" {
		return caARN{}, fmt.Errorf("must be set: the ARN of the private CA (%s)", want)
	}
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return caARN{}, fmt.Errorf("%q is not an ARN: %s", s, want)
	}
	for i, name := range []string{1: "partition", 3: "region", 4: "account"} {
		if name == "" {
			continue
		}
		if parts[i] == "" {
			return caARN{}, fmt.Errorf("%q has an empty %s: %s", s, name, want)
		}
		if strings.ContainsAny(parts[i], "/ \t") {
			return caARN{}, fmt.Errorf("%q has an invalid %s %q: %s", s, name, parts[i], want)
		}
	}
	if parts[2] != "acm-pca" {
		return caARN{}, fmt.Errorf("%q is not an ACM Private CA ARN (service %q, want acm-pca)", s, parts[2])
	}
	id, ok := strings.CutPrefix(parts[5], "certificate-authority/")
	if !ok || id == "" || strings.ContainsAny(id, "/ \t") {
		return caARN{}, fmt.Errorf("%q does not name a certificate authority: %s", s, want)
	}
	return caARN{Partition: parts[1], Region: parts[3], Account: parts[4], ID: id}, nil
}

// parsedConf is a syntactically valid conf with defaults applied.
type parsedConf struct {
	Conf
	arn         caARN
	templateArn string
	rps         float64
	concurrency int
}

// parseConf decodes conf strictly (unknown fields are refused with their
// path) and checks its syntax. It resolves nothing.
func parseConf(raw json.RawMessage) (*parsedConf, error) {
	v := &api.ValidationError{}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		v.Addf(fConf, "must be set: arn and caCert are required")
		return nil, v
	}
	api.DuplicateKeys(v, trimmed, fConf)
	api.UnknownFields(v, trimmed, reflect.TypeFor[Conf](), fConf)
	if err := v.OrNil(); err != nil {
		return nil, err
	}
	var c Conf
	if err := json.Unmarshal(trimmed, &c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, api.FieldErr(api.JoinPath(fConf, te.Field), "must be %s, got %s", te.Type.String(), te.Value)
		}
		return nil, api.FieldErr(fConf, "must be an object: %v", err)
	}
	p := &parsedConf{Conf: c}
	a, err := parseCAARN(c.Arn)
	if err != nil {
		v.AddErr(fArn, err)
	}
	p.arn = a
	api.ValidateDataSource(v, fCaCert, c.CaCert, true)
	if c.Auth != nil {
		if c.Auth.AWSCredentials == nil {
			v.Addf(fAWSCredentials, "must be set when auth is given (or remove auth to use the default AWS credential chain)")
		} else {
			ak, sk := c.Auth.AWSCredentials.AccessKey, c.Auth.AWSCredentials.AccessKeySecret
			switch {
			case ak == nil && sk == nil:
				v.Addf(fAWSCredentials, "accessKey and accessKeySecret must be set (or remove auth to use the default AWS credential chain)")
			case ak == nil:
				v.Addf(fAccessKey, "must be set: accessKeySecret is given without accessKey")
			case sk == nil:
				v.Addf(fAccessKeySecret, "must be set: accessKey is given without accessKeySecret")
			default:
				api.ValidateDataSource(v, fAccessKey, ak, true)
				api.ValidateDataSource(v, fAccessKeySecret, sk, true)
			}
		}
	}
	p.templateArn = c.TemplateArn
	if p.templateArn == "" && a.Partition != "" {
		p.templateArn = "arn:" + a.Partition + ":acm-pca:::template/EndEntityCertificate/V1"
	} else if c.TemplateArn != "" {
		if tp := strings.SplitN(c.TemplateArn, ":", 6); len(tp) != 6 || tp[0] != "arn" || tp[1] == "" ||
			tp[2] != "acm-pca" || !strings.HasPrefix(tp[5], "template/") {
			v.Addf(fTemplateArn, "%q is not an ACM PCA template ARN (e.g. arn:aws:acm-pca:::template/EndEntityCertificate/V1)", c.TemplateArn)
		}
	}
	if c.SigningAlgorithm != "" {
		algs := pcatypes.SigningAlgorithm("").Values()
		if !slices.Contains(algs, pcatypes.SigningAlgorithm(c.SigningAlgorithm)) {
			names := make([]string, len(algs))
			for i, a := range algs {
				names[i] = string(a)
			}
			v.Addf(fSigningAlg, "unknown signing algorithm %q: must be one of %s", c.SigningAlgorithm, strings.Join(names, ", "))
		}
	}
	p.rps = DefaultMaxRequestsPerSecond
	if c.MaxRequestsPerSecond != nil {
		if r := *c.MaxRequestsPerSecond; r <= 0 || r > 10000 {
			v.Addf(fMaxRPS, "must be greater than 0 and at most 10000, got %v", r)
		}
		p.rps = *c.MaxRequestsPerSecond
	}
	p.concurrency = DefaultMaxConcurrentIssues
	if c.MaxConcurrentIssues != nil {
		if n := *c.MaxConcurrentIssues; n < 1 || n > 10000 {
			v.Addf(fMaxConcurrent, "must be between 1 and 10000, got %d", n)
		}
		p.concurrency = *c.MaxConcurrentIssues
	}
	if err := v.OrNil(); err != nil {
		return nil, err
	}
	return p, nil
}

// staticCredentials reports whether conf.auth carries static credentials.
func (p *parsedConf) staticCredentials() bool {
	return p.Auth != nil && p.Auth.AWSCredentials != nil
}

// validateExpiration checks dpCert.rotation.expiration of a backend.
func validateExpiration(mb api.MTLSBackend) error {
	if mb.DpCert == nil || mb.DpCert.Rotation == nil || mb.DpCert.Rotation.Expiration == "" {
		return nil
	}
	d, err := api.ParseDuration(mb.DpCert.Rotation.Expiration)
	if err != nil {
		return api.FieldErr(fExpiration, "%v", err)
	}
	if d < MinValidity {
		return api.FieldErr(fExpiration, "%s is too short: ACM PCA certificates must live at least %s", mb.DpCert.Rotation.Expiration, MinValidity)
	}
	return nil
}
