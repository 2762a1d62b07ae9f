package api

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// ValidateName checks a resource or backend name.
func ValidateName(v *ValidationError, field, name string) {
	switch {
	case name == "":
		v.Addf(field, "must not be empty")
	case len(name) > 253:
		v.Addf(field, "must be at most 253 characters, got %d", len(name))
	case !namePattern.MatchString(name):
		v.Addf(field, "%q is not a valid name: use letters, digits, '.', '_' and '-', starting and ending with a letter or digit", name)
	}
}

func validateMeta(v *ValidationError, m *Meta, meshScoped bool) {
	if m.Type == TypeMesh {
		ValidateMeshName(v, "name", m.Name)
	} else {
		ValidateName(v, "name", m.Name)
	}
	if meshScoped {
		if m.Mesh == "" {
			v.Addf("mesh", "must not be empty")
		} else {
			ValidateMeshName(v, "mesh", m.Mesh)
		}
	} else if m.Mesh != "" {
		v.Addf("mesh", "must be empty: %s is not mesh-scoped", m.Type)
	}
}

// Validate checks the Mesh's structure, including its mTLS backends' common
// fields; each backend's conf is checked by that backend.
func (m *Mesh) Validate() error {
	v := &ValidationError{}
	meta := m.Meta
	meta.Type = TypeMesh // its name is checked as a trust domain however it was built
	validateMeta(v, &meta, false)
	if m.MTLS != nil {
		validateMTLS(v, "mtls", m.MTLS)
	}
	return v.OrNil()
}

func validateMTLS(v *ValidationError, path string, mt *MTLS) {
	names := map[string]int{}
	for i, b := range mt.Backends {
		p := fmt.Sprintf("%s.backends[%d]", path, i)
		ValidateName(v, p+".name", b.Name)
		if j, dup := names[b.Name]; dup && b.Name != "" {
			v.Addf(p+".name", "duplicate backend name %q (also used by %s.backends[%d])", b.Name, path, j)
		} else {
			names[b.Name] = i
		}
		switch {
		case b.Type == "":
			v.Addf(p+".type", "must not be empty: one of %s", strings.Join(KnownBackendTypes(), ", "))
		case !IsKnownBackendType(b.Type):
			v.Addf(p+".type", "unknown backend type %q: must be one of %s", b.Type, strings.Join(KnownBackendTypes(), ", "))
		}
		if b.Mode != "" && b.Mode != ModeStrict && b.Mode != ModePermissive {
			v.Addf(p+".mode", "unknown mode %q: must be %s or %s", b.Mode, ModeStrict, ModePermissive)
		}
		if b.DpCert != nil {
			if b.DpCert.Rotation != nil && b.DpCert.Rotation.Expiration != "" {
				if _, err := ParseDuration(b.DpCert.Rotation.Expiration); err != nil {
					v.AddErr(p+".dpCert.rotation.expiration", err)
				}
			}
			if k := b.DpCert.KeyType; k != "" && k != KeyTypeECDSAP256 && k != KeyTypeRSA2048 {
				v.Addf(p+".dpCert.keyType", "unknown key type %q: must be %s or %s", k, KeyTypeECDSAP256, KeyTypeRSA2048)
			}
			if b.DpCert.RequestTimeout != "" {
				if _, err := ParseDuration(b.DpCert.RequestTimeout); err != nil {
					v.AddErr(p+".dpCert.requestTimeout", err)
				}
			}
		}
		if b.RootChain != nil && b.RootChain.RequestTimeout != "" {
			if _, err := ParseDuration(b.RootChain.RequestTimeout); err != nil {
				v.AddErr(p+".rootChain.requestTimeout", err)
			}
		}
		if len(b.Conf) > 0 && string(b.Conf) != "null" {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(b.Conf, &obj); err != nil {
				v.Addf(p+".conf", "must be an object")
			}
		}
	}
	validateSVIDFormat(v, path+".svidFormat", mt.SVIDFormat)
	if mt.EnabledBackend != "" {
		if _, ok := names[mt.EnabledBackend]; !ok {
			v.Addf(path+".enabledBackend", "backend %q is not among %s.backends", mt.EnabledBackend, path)
		}
	}
}

// ValidateDataSource checks that exactly one source is set and that inline
// data is valid base64. required=false accepts a DataSource with no source
// only when ds is nil.
func ValidateDataSource(v *ValidationError, field string, ds *DataSource, required bool) {
	if ds == nil {
		if required {
			v.Addf(field, "must be set: one of secret, file, inline, inlineString")
		}
		return
	}
	n := 0
	for _, s := range []string{ds.Secret, ds.File, ds.Inline, ds.InlineString} {
		if s != "" {
			n++
		}
	}
	switch {
	case n == 0:
		v.Addf(field, "exactly one of secret, file, inline, inlineString must be set, got none")
	case n > 1:
		v.Addf(field, "exactly one of secret, file, inline, inlineString must be set, got %d", n)
	}
	if ds.Inline != "" {
		if _, err := base64.StdEncoding.DecodeString(ds.Inline); err != nil {
			v.Addf(field+".inline", "not valid base64: %v", err)
		}
	}
}

func validateSecretData(v *ValidationError, data string) {
	if _, err := base64.StdEncoding.DecodeString(data); err != nil {
		v.Addf("data", "not valid base64: %v", err)
	}
}

// Validate checks the Secret.
func (s *Secret) Validate() error {
	v := &ValidationError{}
	validateMeta(v, &s.Meta, true)
	validateSecretData(v, s.Data)
	return v.OrNil()
}

// Validate checks the GlobalSecret.
func (s *GlobalSecret) Validate() error {
	v := &ValidationError{}
	validateMeta(v, &s.Meta, false)
	validateSecretData(v, s.Data)
	return v.OrNil()
}

// Validate checks the Dataplane.
func (d *Dataplane) Validate() error {
	v := &ValidationError{}
	validateMeta(v, &d.Meta, true)
	n := d.Networking
	if n.Address == "" {
		v.Addf("networking.address", "must not be empty")
	}
	if len(n.Inbound) == 0 && n.Gateway == nil {
		v.Addf("networking", "must have at least one inbound or a gateway")
	}
	for i, in := range n.Inbound {
		p := fmt.Sprintf("networking.inbound[%d]", i)
		if in.Port == 0 || in.Port > 65535 {
			v.Addf(p+".port", "must be in 1..65535, got %d", in.Port)
		}
		if in.ServicePort > 65535 {
			v.Addf(p+".servicePort", "must be in 1..65535, got %d", in.ServicePort)
		}
		validateTags(v, p+".tags", in.Tags)
	}
	if n.Gateway != nil {
		validateTags(v, "networking.gateway.tags", n.Gateway.Tags)
	}
	for i, out := range n.Outbound {
		if out.Port == 0 || out.Port > 65535 {
			v.Addf(fmt.Sprintf("networking.outbound[%d].port", i), "must be in 1..65535, got %d", out.Port)
		}
	}
	return v.OrNil()
}

func validateTags(v *ValidationError, field string, tags map[string]string) {
	if tags[ServiceTag] == "" {
		v.Addf(field, "tag %q is required", ServiceTag)
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys) // errors in a stable order
	for _, k := range keys {
		val := tags[k]
		kf := field + "[" + strconv.Quote(k) + "]"
		if k == "" {
			v.Addf(field, "tag name must not be empty")
		}
		if val == "" {
			v.Addf(kf, "tag value must not be empty")
		}
		switch {
		case k == ServiceTag && val != "":
			ValidateServiceName(v, kf, val) // within the tag value set, and stricter
		default:
			validateTag(v, kf, k, val)
		}
	}
}
