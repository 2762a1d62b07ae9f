package certmanager

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"meshca/pkg/api"
)

// Defaults of conf.issuerRef, as Kong Mesh documents them.
const (
	DefaultIssuerKind  = "Issuer"
	DefaultIssuerGroup = "cert-manager.io"
)

// Conf is the `conf` of a certmanager mTLS backend:
//
//	conf:
//	  issuerRef:
//	    name: my-issuer          # required
//	    kind: ClusterIssuer      # default Issuer
//	    group: cert-manager.io   # default cert-manager.io
//	  caCert:                    # optional DataSource
//	    secret: my-ca
//	  commonName: '{{ tag "kuma.io/service" }}.mesh'  # optional template
type Conf struct {
	IssuerRef IssuerRef `json:"issuerRef"`
	// CACert is the trust root of the issued certificates. When unset the
	// root comes from the `status.ca` of the CertificateRequests.
	CACert *api.DataSource `json:"caCert,omitempty"`
	// CommonName is a template rendered by the identity layer.
	CommonName string `json:"commonName,omitempty"`
}

// IssuerRef names the cert-manager issuer that signs the requests.
type IssuerRef struct {
	Name  string `json:"name"`
	Kind  string `json:"kind,omitempty"`
	Group string `json:"group,omitempty"`
}

// rawConf decodes one level at a time, so unknown fields are reported with
// their full path.
type rawConf struct {
	IssuerRef  json.RawMessage `json:"issuerRef"`
	CACert     json.RawMessage `json:"caCert"`
	CommonName json.RawMessage `json:"commonName"`
}

// parseConf decodes conf strictly, applies defaults and checks its syntax.
// DataSources are not resolved. Every error is an *api.ValidationError with
// fields rooted at "conf".
func parseConf(raw json.RawMessage) (Conf, error) {
	v := &api.ValidationError{}
	var c Conf
	var rc rawConf
	if len(bytes.TrimSpace(raw)) > 0 && string(bytes.TrimSpace(raw)) != "null" {
		if err := api.DecodeStrict(raw, &rc, "conf"); err != nil {
			return Conf{}, err
		}
	}
	if isSet(rc.IssuerRef) {
		v.AddErr("", api.DecodeStrict(rc.IssuerRef, &c.IssuerRef, "conf.issuerRef"))
	}
	if isSet(rc.CACert) {
		c.CACert = &api.DataSource{}
		if err := api.DecodeStrict(rc.CACert, c.CACert, "conf.caCert"); err != nil {
			v.AddErr("", err)
		} else {
			api.ValidateDataSource(v, "conf.caCert", c.CACert, false)
		}
	}
	if isSet(rc.CommonName) {
		v.AddErr("", api.DecodeStrict(rc.CommonName, &c.CommonName, "conf.commonName"))
	}
	if err := v.OrNil(); err != nil {
		return Conf{}, err
	}

	if c.IssuerRef.Kind == "" {
		c.IssuerRef.Kind = DefaultIssuerKind
	}
	if c.IssuerRef.Group == "" {
		c.IssuerRef.Group = DefaultIssuerGroup
	}
	switch {
	case c.IssuerRef.Name == "":
		v.Addf("conf.issuerRef.name", "must be set: the name of the cert-manager Issuer or ClusterIssuer")
	default:
		if msgs := validation.IsDNS1123Subdomain(c.IssuerRef.Name); len(msgs) > 0 {
			v.Addf("conf.issuerRef.name", "%q is not a valid Kubernetes name: %s", c.IssuerRef.Name, strings.Join(msgs, "; "))
		}
	}
	// Any kind is accepted so external issuers (e.g. AWSPCAIssuer) work;
	// only its shape is checked.
	if !kindPattern.MatchString(c.IssuerRef.Kind) {
		v.Addf("conf.issuerRef.kind", "%q is not a valid Kubernetes kind (e.g. Issuer, ClusterIssuer)", c.IssuerRef.Kind)
	}
	if msgs := validation.IsDNS1123Subdomain(c.IssuerRef.Group); len(msgs) > 0 {
		v.Addf("conf.issuerRef.group", "%q is not a valid API group: %s", c.IssuerRef.Group, strings.Join(msgs, "; "))
	}
	if err := v.OrNil(); err != nil {
		return Conf{}, err
	}
	return c, nil
}

var kindPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*$`)

func isSet(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && string(t) != "null"
}
