package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"text/template"

	"meshca/pkg/api"
	"meshca/pkg/ca"
)

// SpiffeID returns spiffe://<mesh>/<service>. Check the names with
// CheckSpiffeID first: the URL is built as given.
func SpiffeID(mesh, service string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: mesh, Path: "/" + service}
}

// CheckSpiffeID says why spiffe://<mesh>/<service> would not be a valid
// SPIFFE ID (nil if it is). The API refuses such names when a resource is
// applied (see package api); this catches data planes stored before it did.
func CheckSpiffeID(mesh, service string) error {
	v := &api.ValidationError{}
	api.ValidateMeshName(v, "mesh", mesh)
	api.ValidateServiceName(v, "service", service)
	return v.OrNil()
}

// KumaURI returns kuma://<tag>/<value>, Kuma's URI SAN for a tag, or an
// error when the tag is outside Kuma's character sets or the URI would not
// parse back to exactly this tag and value (a '?', '#', '@' or a host:port
// look-alike would make it name something else).
func KumaURI(tag, value string) (*url.URL, error) {
	if !api.IsTagName(tag) || !api.IsTagValue(value) {
		return nil, fmt.Errorf("tag %q: %q: outside Kuma's tag character sets, no kuma:// URI", tag, value)
	}
	s := "kuma://" + tag + "/" + value
	u, err := url.Parse(s)
	if err != nil || u.String() != s || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Host+u.Path != tag+"/"+value {
		return nil, fmt.Errorf("tag %q: %q: kuma://%s/%s would not parse back to this tag", tag, value, tag, value)
	}
	return u, nil
}

// BuildIdentity derives the identity of a Dataplane: its services, tags,
// URI SANs and rendered commonName (cnTemplate may be empty). svid is the
// mesh's api.SVIDFormat*: the SPIFFE form has exactly one URI SAN, the
// SPIFFE ID of the data plane's first service (an X509-SVID holds one
// SPIFFE ID); the Kuma form has one per service and a kuma:// SAN per tag.
func BuildIdentity(dp *api.Dataplane, cnTemplate, svid string) (ca.Identity, error) {
	id := ca.Identity{Mesh: dp.Mesh, Dataplane: dp.Name, Services: dp.Services(), Tags: dp.Tags()}
	if len(id.Services) == 0 {
		return id, fmt.Errorf("dataplane %q has no %s tag", dp.Name, api.ServiceTag)
	}
	services := id.Services
	if svid != api.SVIDFormatKuma {
		services = services[:1]
	}
	for _, s := range services {
		if err := CheckSpiffeID(dp.Mesh, s); err != nil {
			return id, fmt.Errorf("dataplane %q: no valid SPIFFE ID for service %q of mesh %q: %w", dp.Name, s, dp.Mesh, err)
		}
		id.URIs = append(id.URIs, SpiffeID(dp.Mesh, s))
	}
	if svid != api.SVIDFormatKuma {
		return id, commonName(&id, cnTemplate)
	}
	keys := make([]string, 0, len(id.Tags))
	for k := range id.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range id.Tags[k] {
			u, err := KumaURI(k, v)
			if err != nil {
				continue // a tag that is no valid URI gets no kuma:// SAN; the SPIFFE ID still identifies
			}
			id.URIs = append(id.URIs, u)
		}
	}
	return id, commonName(&id, cnTemplate)
}

// commonName renders cnTemplate (when set) into id.CommonName.
func commonName(id *ca.Identity, cnTemplate string) error {
	if cnTemplate == "" {
		return nil
	}
	cn, err := RenderCommonName(cnTemplate, id.Tags)
	if err != nil {
		return err
	}
	id.CommonName = cn
	return nil
}

// ParseCommonName checks a commonName template without data-plane tags.
func ParseCommonName(tmpl string) error {
	_, err := parseCN(tmpl, nil)
	return err
}

func parseCN(tmpl string, tags map[string][]string) (*template.Template, error) {
	return template.New("commonName").Option("missingkey=error").Funcs(template.FuncMap{
		"tag": func(name string) (string, error) {
			if tags == nil {
				return "x", nil
			}
			vs := tags[name]
			switch len(vs) {
			case 0:
				return "", fmt.Errorf("tag %q is not set on the dataplane", name)
			case 1:
				return vs[0], nil
			default:
				return "", fmt.Errorf("tag %q has several values (%s): a commonName needs exactly one", name, strings.Join(vs, ", "))
			}
		},
	}).Parse(tmpl)
}

// RenderCommonName renders a commonName template such as
// '{{ tag "kuma.io/service" }}.mesh' with the data plane's tags.
func RenderCommonName(tmpl string, tags map[string][]string) (string, error) {
	t, err := parseCN(tmpl, tags)
	if err != nil {
		return "", fmt.Errorf("commonName template %q: %w", tmpl, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, nil); err != nil {
		return "", fmt.Errorf("commonName %q: %w", tmpl, unwrapExec(err))
	}
	cn := b.String()
	if len(cn) > 64 {
		return "", fmt.Errorf("commonName %q renders to %d characters, more than the 64 X.509 allows", tmpl, len(cn))
	}
	return cn, nil
}

func unwrapExec(err error) error {
	var ee template.ExecError
	if e, ok := err.(template.ExecError); ok {
		ee = e
		if u := ee.Unwrap(); u != nil {
			return u
		}
	}
	return err
}

// NewKey generates a data-plane key of the backend's key type.
func NewKey(rnd io.Reader, keyType string) (crypto.Signer, error) {
	if keyType == api.KeyTypeRSA2048 {
		return rsa.GenerateKey(rnd, 2048)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rnd)
}

// NewCSR builds a PEM CSR for id signed by key.
func NewCSR(key crypto.Signer, id ca.Identity) (*x509.CertificateRequest, []byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.CommonName},
		URIs:    id.URIs,
	}, key)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, err
	}
	return csr, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// EncodeKey renders a private key as PKCS#8 PEM.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey parses a PKCS#8, PKCS#1 or SEC1 PEM private key.
func ParseKey(pemData []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, fmt.Errorf("no PEM private key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("unsupported private key in %s block", block.Type)
}

func pemBlock(p []byte, typ string) ([]byte, error) {
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			return nil, fmt.Errorf("no PEM %s block", typ)
		}
		if b.Type == typ {
			return b.Bytes, nil
		}
	}
}
