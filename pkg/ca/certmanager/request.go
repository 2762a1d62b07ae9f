package certmanager

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Labels and annotations meshca puts on its CertificateRequests.
const (
	LabelMesh          = "kuma.io/mesh"
	LabelDataplane     = "meshca.io/dataplane"
	LabelPurpose       = "meshca.io/purpose"
	AnnotationIdemKey  = "meshca.io/idempotency-key"
	PurposeDataplane   = "dataplane"
	PurposeCAProbe     = "ca-probe"
	certificateRequest = "CertificateRequest"
)

// CertificateRequestResource is the cert-manager CertificateRequest resource.
func CertificateRequestResource() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificaterequests"}
}

// Default usages: those of a data-plane certificate (mTLS both ways).
var defaultUsages = []string{"digital signature", "key encipherment", "server auth", "client auth"}

// requestSpec is what one CertificateRequest asks for.
type requestSpec struct {
	mesh, dataplane, purpose string
	idempotencyKey           string
	csr                      *x509.CertificateRequest
	csrPEM                   []byte
	validity                 time.Duration
	issuer                   IssuerRef
}

// newCertificateRequest renders the unstructured cert-manager.io/v1
// CertificateRequest of spec in namespace.
func newCertificateRequest(namespace string, s requestSpec) *unstructured.Unstructured {
	gvr := CertificateRequestResource()
	usages := csrUsages(s.csr)
	us := make([]any, len(usages))
	for i, u := range usages {
		us[i] = u
	}
	name := s.dataplane
	if s.purpose == PurposeCAProbe {
		name = PurposeCAProbe
	}
	labels := map[string]any{
		LabelMesh:    labelValue(s.mesh),
		LabelPurpose: s.purpose,
	}
	annotations := map[string]any{LabelMesh: s.mesh}
	if s.dataplane != "" {
		labels[LabelDataplane] = labelValue(s.dataplane)
		annotations[LabelDataplane] = s.dataplane
	}
	if s.idempotencyKey != "" {
		annotations[AnnotationIdemKey] = s.idempotencyKey
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(),
		"kind":       certificateRequest,
		"metadata": map[string]any{
			"generateName": generateName(s.mesh, name),
			"namespace":    namespace,
			"labels":       labels,
			"annotations":  annotations,
		},
		"spec": map[string]any{
			// []byte fields are base64 in JSON: cert-manager expects the PEM
			// bytes of the CSR, base64-encoded.
			"request": base64.StdEncoding.EncodeToString(s.csrPEM),
			"issuerRef": map[string]any{
				"name":  s.issuer.Name,
				"kind":  s.issuer.Kind,
				"group": s.issuer.Group,
			},
			"duration": s.validity.String(),
			"isCA":     false,
			"usages":   us,
		},
	}}
}

// maxGenerateName is what the API server keeps of a generateName before
// appending its 5 random characters (63-character names).
const maxGenerateName = 58

// generateName returns "meshca-<mesh>-<name>-" made a valid Kubernetes name.
func generateName(mesh, name string) string {
	g := sanitizeName("meshca-" + mesh + "-" + name)
	if len(g) > maxGenerateName-1 {
		g = strings.TrimRight(g[:maxGenerateName-1], "-.")
	}
	return g + "-"
}

// sanitizeName lower-cases s and replaces characters a DNS-1123 name cannot
// hold with '-'.
func sanitizeName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}

// labelValue makes s a valid label value (at most 63 characters of
// [A-Za-z0-9._-], alphanumeric at both ends). The full value is kept in an
// annotation of the same key.
func labelValue(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	v := b.String()
	if len(v) > 63 {
		v = v[:63]
	}
	return strings.Trim(v, "-._")
}

var (
	oidKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// cert-manager's names of the key usage bits, in bit order.
var keyUsageNames = []string{
	"digital signature", "content commitment", "key encipherment", "data encipherment",
	"key agreement", "cert sign", "crl sign", "encipher only", "decipher only",
}

var extKeyUsageNames = []struct {
	oid  asn1.ObjectIdentifier
	name string
}{
	{asn1.ObjectIdentifier{2, 5, 29, 37, 0}, "any"},
	{asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}, "server auth"},
	{asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}, "client auth"},
	{asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 3}, "code signing"},
	{asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 4}, "email protection"},
	{asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}, "timestamping"},
	{asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 9}, "ocsp signing"},
}

// csrUsages returns the cert-manager usages matching the key usage and
// extended key usage extensions the CSR requests. cert-manager refuses a
// request whose spec.usages disagree with its CSR. A CSR without such
// extensions gets the usages of a data-plane certificate.
func csrUsages(csr *x509.CertificateRequest) []string {
	if csr == nil {
		return slices.Clone(defaultUsages)
	}
	var out []string
	found := false
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidKeyUsage):
			var bits asn1.BitString
			if _, err := asn1.Unmarshal(ext.Value, &bits); err != nil {
				continue
			}
			found = true
			for i, n := range keyUsageNames {
				if bits.At(i) == 1 {
					out = append(out, n)
				}
			}
		case ext.Id.Equal(oidExtKeyUsage):
			var oids []asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(ext.Value, &oids); err != nil {
				continue
			}
			found = true
			for _, o := range oids {
				for _, e := range extKeyUsageNames {
					if o.Equal(e.oid) {
						out = append(out, e.name)
					}
				}
			}
		}
	}
	if !found {
		return slices.Clone(defaultUsages)
	}
	return out
}

// condition is one entry of status.conditions.
type condition struct {
	Type, Status, Reason, Message string
}

func (c condition) String() string {
	s := c.Type + "=" + c.Status
	if c.Reason != "" {
		s += " (" + c.Reason + ")"
	}
	if c.Message != "" {
		s += ": " + c.Message
	}
	return s
}

func conditions(obj *unstructured.Unstructured) []condition {
	list, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	var out []condition
	for _, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			continue
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		out = append(out, condition{Type: str("type"), Status: str("status"), Reason: str("reason"), Message: str("message")})
	}
	return out
}

// requestState is what a CertificateRequest's status says.
type requestState struct {
	// done is set once the request reached a final state.
	done bool
	// err is the terminal failure, if any.
	err error
	// certPEM and caPEM are status.certificate and status.ca, decoded.
	certPEM, caPEM []byte
	// pending describes a non-final state for timeout messages.
	pending string
}

// evaluate reads the status of a CertificateRequest.
func evaluate(obj *unstructured.Unstructured) requestState {
	name := obj.GetName()
	conds := conditions(obj)
	get := func(typ string) (condition, bool) {
		for _, c := range conds {
			if c.Type == typ {
				return c, true
			}
		}
		return condition{}, false
	}
	if c, ok := get("Denied"); ok && c.Status == "True" {
		// By cert-manager's convention an approver puts its own name in the
		// reason ("cert-manager.io", "policy.cert-manager.io") and why in
		// the message.
		by := c.Reason
		if by == "" {
			by = "an approver"
		}
		why := c.Message
		if why == "" {
			why = "no message"
		}
		return requestState{done: true, err: fmt.Errorf("certificate request %s denied by %s: %s", name, by, why)}
	}
	if c, ok := get("InvalidRequest"); ok && c.Status == "True" {
		return requestState{done: true, err: fmt.Errorf("certificate request %s is invalid: %s", name, reasonMessage(c))}
	}
	ready, hasReady := get("Ready")
	if hasReady && ready.Status == "False" && ready.Reason == "Failed" {
		return requestState{done: true, err: fmt.Errorf("certificate request %s failed: %s", name, reasonMessage(ready))}
	}
	if hasReady && ready.Status == "True" {
		certB64, _, _ := unstructured.NestedString(obj.Object, "status", "certificate")
		if certB64 == "" {
			// cert-manager writes both together; wait for the certificate.
			return requestState{pending: "Ready=True but status.certificate is empty"}
		}
		cert, err := base64.StdEncoding.DecodeString(certB64)
		if err != nil {
			return requestState{done: true, err: fmt.Errorf("certificate request %s: status.certificate is not valid base64: %w", name, err)}
		}
		st := requestState{done: true, certPEM: cert}
		if caB64, _, _ := unstructured.NestedString(obj.Object, "status", "ca"); caB64 != "" {
			ca, err := base64.StdEncoding.DecodeString(caB64)
			if err != nil {
				return requestState{done: true, err: fmt.Errorf("certificate request %s: status.ca is not valid base64: %w", name, err)}
			}
			st.caPEM = ca
		}
		return st
	}
	approved, hasApproved := get("Approved")
	switch {
	case hasReady:
		p := ready.String()
		if !hasApproved {
			p += "; not approved yet"
		}
		return requestState{pending: p}
	case hasApproved:
		return requestState{pending: approved.String() + "; no Ready condition yet"}
	default:
		// cert-manager's signers leave a request that nothing approved
		// without conditions (only a WaitingForApproval event).
		return requestState{pending: "no approver approved or denied it and no Ready condition yet " +
			"(is cert-manager running, with its built-in approver or a policy approver that selects this issuer?)"}
	}
}

func reasonMessage(c condition) string {
	switch {
	case c.Message != "" && c.Reason != "":
		return c.Message + " (reason " + c.Reason + ")"
	case c.Message != "":
		return c.Message
	case c.Reason != "":
		return "reason " + c.Reason
	default:
		return "no message"
	}
}
