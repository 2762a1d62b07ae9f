package api

import (
	"regexp"
)

// Names that become certificate SANs.
//
// A data plane's identity is spiffe://<mesh>/<service> plus one
// kuma://<tag>/<value> URI per tag. meshca validates rather than encodes:
// a name that cannot appear in a SPIFFE ID as written is refused when the
// resource is applied, naming the field, so the identity a peer sees is
// always the name the operator wrote. Kuma's names are DNS-like and its
// tag character sets are already within these rules, except that meshca
// requires lower case of a Mesh name (the trust domain) and refuses ':' in
// a kuma.io/service value (a SPIFFE path segment); Kuma-generated service
// names such as backend_default_svc_80 are valid.

var (
	// meshNamePattern is a SPIFFE trust domain ([a-z0-9._-]) that is also a
	// resource name (a letter or digit at each end).
	meshNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)
	// servicePattern is a SPIFFE ID path segment.
	servicePattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	// Kuma's tag character sets.
	tagNamePattern  = regexp.MustCompile(`^[A-Za-z0-9._:/-]+$`)
	tagValuePattern = regexp.MustCompile(`^[A-Za-z0-9._:-]+$`)
)

// ValidateMeshName checks the name of a Mesh, which is the trust domain of
// its identities.
func ValidateMeshName(v *ValidationError, field, name string) {
	n := len(v.Causes)
	ValidateName(v, field, name)
	if len(v.Causes) > n || meshNamePattern.MatchString(name) {
		return
	}
	v.Addf(field, "%q is not a valid mesh name: it is the SPIFFE trust domain of the mesh's identities (spiffe://<mesh>/<service>), which takes only lower-case letters, digits, '.', '_' and '-'", name)
}

// ValidateServiceName checks a kuma.io/service value, the path of the
// SPIFFE ID spiffe://<mesh>/<service>.
func ValidateServiceName(v *ValidationError, field, s string) {
	switch {
	case s == "." || s == "..":
		v.Addf(field, "%q cannot be the path of a SPIFFE ID (spiffe://<mesh>/<service>): a service must not be \".\" or \"..\"", s)
	case !servicePattern.MatchString(s):
		v.Addf(field, "%q cannot be the path of a SPIFFE ID (spiffe://<mesh>/<service>): use letters, digits, '.', '_' and '-'", s)
	}
}

// validateTag checks a tag's name and value against Kuma's character sets,
// which keep kuma://<tag>/<value> a URI that parses back to the same tag.
func validateTag(v *ValidationError, field, name, value string) {
	if name != "" && !tagNamePattern.MatchString(name) {
		v.Addf(field, "tag name must consist of letters, digits, '.', '-', '_', ':' and '/', got %q", name)
	}
	if value != "" && !tagValuePattern.MatchString(value) {
		v.Addf(field, "tag value must consist of letters, digits, '.', '-', '_' and ':', got %q", value)
	}
}

// IsTagName reports whether name is within Kuma's tag-name character set.
func IsTagName(name string) bool { return tagNamePattern.MatchString(name) }

// IsTagValue reports whether value is within Kuma's tag-value character set.
func IsTagValue(value string) bool { return tagValuePattern.MatchString(value) }
