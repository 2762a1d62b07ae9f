package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"strings"

	"meshca/pkg/api"
)

// Issuing modes of conf.fromCp.mode.
const (
	// ModeIssue lets Vault generate the data-plane key (POST <pki>/issue/<role>);
	// the key is returned in ca.Issued.KeyPEM. This is what Kong Mesh does.
	ModeIssue = "issue"
	// ModeSign sends meshca's CSR (POST <pki>/sign/<role>); the key never
	// leaves meshca.
	ModeSign = "sign"
)

// AWS auth types of conf.fromCp.auth.aws.type.
const (
	AWSTypeIAM = "IAM"
	AWSTypeEC2 = "EC2"
)

// Conf is the `conf` of a backend of type vault, as Kong Mesh documents it.
type Conf struct {
	FromCp *FromCp `json:"fromCp"`
}

// FromCp says how the control plane reaches Vault.
type FromCp struct {
	Address      string `json:"address"`
	AgentAddress string `json:"agentAddress,omitempty"`
	Namespace    string `json:"namespace,omitempty"`
	Pki          string `json:"pki"`
	Role         string `json:"role"`
	CommonName   string `json:"commonName,omitempty"`
	// Mode is a meshca extension: issue (default) or sign.
	Mode string `json:"mode,omitempty"`
	TLS  *TLS   `json:"tls,omitempty"`
	Auth *Auth  `json:"auth"`
}

// TLS configures the connection to Vault.
type TLS struct {
	CaCert     *api.DataSource `json:"caCert,omitempty"`
	SkipVerify bool            `json:"skipVerify,omitempty"`
	ServerName string          `json:"serverName,omitempty"`
}

// Auth holds exactly one authentication method.
type Auth struct {
	Token *api.DataSource `json:"token,omitempty"`
	TLS   *TLSAuth        `json:"tls,omitempty"`
	AWS   *AWSAuth        `json:"aws,omitempty"`
}

// TLSAuth is Vault's TLS certificate auth method (auth/cert/login).
type TLSAuth struct {
	ClientKey  *api.DataSource `json:"clientKey"`
	ClientCert *api.DataSource `json:"clientCert"`
}

// AWSAuth is Vault's AWS auth method (auth/aws/login).
type AWSAuth struct {
	Type              string `json:"type,omitempty"`
	Role              string `json:"role,omitempty"`
	IAMServerIDHeader string `json:"iamServerIdHeader,omitempty"`
}

// Field paths, relative to the backend.
const (
	fConf         = "conf"
	fFromCp       = "conf.fromCp"
	fAddress      = "conf.fromCp.address"
	fAgentAddress = "conf.fromCp.agentAddress"
	fNamespace    = "conf.fromCp.namespace"
	fPki          = "conf.fromCp.pki"
	fRole         = "conf.fromCp.role"
	fCommonName   = "conf.fromCp.commonName"
	fMode         = "conf.fromCp.mode"
	fCaCert       = "conf.fromCp.tls.caCert"
	fServerName   = "conf.fromCp.tls.serverName"
	fAuth         = "conf.fromCp.auth"
	fAuthToken    = "conf.fromCp.auth.token"
	fAuthTLS      = "conf.fromCp.auth.tls"
	fClientKey    = "conf.fromCp.auth.tls.clientKey"
	fClientCert   = "conf.fromCp.auth.tls.clientCert"
	fAuthAWS      = "conf.fromCp.auth.aws"
	fExpiration   = "dpCert.rotation.expiration"
)

// ParseConf decodes and checks the syntax of a backend's conf strictly:
// unknown fields are refused with their path. It resolves nothing.
func ParseConf(raw json.RawMessage) (*FromCp, error) {
	v := &api.ValidationError{}
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		v.Addf(fFromCp, "must be set")
		return nil, v
	}
	api.DuplicateKeys(v, raw, fConf)
	api.UnknownFields(v, raw, reflect.TypeFor[Conf](), fConf)
	if err := v.OrNil(); err != nil {
		return nil, err
	}
	var c Conf
	if err := json.Unmarshal(raw, &c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, api.FieldErr(api.JoinPath(fConf, te.Field), "must be %s, got %s", te.Type.String(), te.Value)
		}
		return nil, api.PrefixErr(fConf, err)
	}
	if c.FromCp == nil {
		return nil, api.FieldErr(fFromCp, "must be set")
	}
	f := c.FromCp
	checkURL(v, fAddress, f.Address, true)
	checkURL(v, fAgentAddress, f.AgentAddress, false)
	if strings.Trim(f.Pki, "/") == "" {
		v.Addf(fPki, "must be set: the mount path of Vault's PKI secrets engine")
	}
	if f.Role == "" {
		v.Addf(fRole, "must be set: the PKI role data-plane certificates are issued with")
	} else if strings.Contains(f.Role, "/") {
		v.Addf(fRole, "must not contain '/'")
	}
	switch f.Mode {
	case "", ModeIssue, ModeSign:
	default:
		v.Addf(fMode, "unknown mode %q: must be %s or %s", f.Mode, ModeIssue, ModeSign)
	}
	if f.TLS != nil {
		if f.TLS.CaCert != nil {
			api.ValidateDataSource(v, fCaCert, f.TLS.CaCert, true)
		}
	}
	if f.Auth == nil {
		v.Addf(fAuth, "must be set: exactly one of token, tls, aws")
		return nil, v
	}
	n := 0
	if f.Auth.Token != nil {
		n++
		api.ValidateDataSource(v, fAuthToken, f.Auth.Token, true)
	}
	if f.Auth.TLS != nil {
		n++
		api.ValidateDataSource(v, fClientKey, f.Auth.TLS.ClientKey, true)
		api.ValidateDataSource(v, fClientCert, f.Auth.TLS.ClientCert, true)
		if !strings.HasPrefix(f.Address, "https://") && f.AgentAddress == "" {
			v.Addf(fAuthTLS, "TLS certificate auth needs an https address")
		}
	}
	if f.Auth.AWS != nil {
		n++
		switch f.Auth.AWS.Type {
		case "", AWSTypeIAM, AWSTypeEC2:
		default:
			v.Addf(fAuthAWS+".type", "unknown type %q: must be %s or %s", f.Auth.AWS.Type, AWSTypeIAM, AWSTypeEC2)
		}
	}
	if n != 1 {
		v.Addf(fAuth, "exactly one of token, tls, aws must be set")
	}
	if err := v.OrNil(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FromCp) mode() string {
	if f.Mode == "" {
		return ModeIssue
	}
	return f.Mode
}

func (f *FromCp) mount() string { return strings.Trim(f.Pki, "/") }

func checkURL(v *api.ValidationError, field, s string, required bool) {
	if s == "" {
		if required {
			v.Addf(field, "must be set: the http(s) URL of Vault, e.g. https://vault.example:8200")
		}
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.Addf(field, "%q is not an http(s) URL", s)
		return
	}
	if u.User != nil {
		v.Addf(field, "must not carry credentials")
	}
}
