package acmpcaemu

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// CASpec describes a certificate authority the emulator serves from start,
// as given on the command line or in a config file.
type CASpec struct {
	// ARN of the CA, e.g.
	// arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/<id>.
	// Any non-empty partition, region and account tokens are accepted.
	ARN string `json:"arn"`
	// Type is ROOT (self-signed) or SUBORDINATE (signed by Parent, or by an
	// internal emulated root when Parent is empty). Default ROOT.
	Type string `json:"type,omitempty"`
	// KeyAlgorithm is RSA_2048, RSA_3072, RSA_4096, EC_prime256v1,
	// EC_secp384r1 or EC_secp521r1. Default RSA_2048.
	KeyAlgorithm string `json:"key,omitempty"`
	// UsageMode is GENERAL_PURPOSE or SHORT_LIVED_CERTIFICATE. Default
	// GENERAL_PURPOSE.
	UsageMode string `json:"mode,omitempty"`
	// Status is the CA status (ACTIVE, DISABLED, ...). Default ACTIVE.
	Status string `json:"status,omitempty"`
	// CommonName of the CA certificate subject; derived from the ARN if empty.
	CommonName string `json:"cn,omitempty"`
	// Parent is the ARN of an emulated ROOT CA that signs this SUBORDINATE.
	Parent string `json:"parent,omitempty"`
}

// withDefaults fills defaults and validates the spec.
func (s CASpec) withDefaults() (CASpec, error) {
	if s.Type == "" {
		s.Type = TypeRoot
	}
	if s.KeyAlgorithm == "" {
		s.KeyAlgorithm = KeyRSA2048
	}
	if s.UsageMode == "" {
		s.UsageMode = ModeGeneralPurpose
	}
	if s.Status == "" {
		s.Status = StatusActive
	}
	p, err := parseARN(s.ARN)
	if err != nil || p.CertID != "" {
		return s, fmt.Errorf("CA spec: invalid CA ARN %q", s.ARN)
	}
	switch {
	case s.Type != TypeRoot && s.Type != TypeSubordinate:
		return s, fmt.Errorf("CA spec %s: type must be ROOT or SUBORDINATE, got %q", s.ARN, s.Type)
	case !validKeyAlgorithm(s.KeyAlgorithm):
		return s, fmt.Errorf("CA spec %s: unsupported key %q", s.ARN, s.KeyAlgorithm)
	case s.UsageMode != ModeGeneralPurpose && s.UsageMode != ModeShortLived:
		return s, fmt.Errorf("CA spec %s: mode must be GENERAL_PURPOSE or SHORT_LIVED_CERTIFICATE, got %q", s.ARN, s.UsageMode)
	case !validStatus(s.Status) || s.Status == StatusPendingCertificate || s.Status == StatusCreating:
		return s, fmt.Errorf("CA spec %s: unsupported status %q", s.ARN, s.Status)
	case s.Parent != "" && s.Type != TypeSubordinate:
		return s, fmt.Errorf("CA spec %s: parent is only valid for SUBORDINATE CAs", s.ARN)
	}
	return s, nil
}

// ParseCASpec parses the command-line form of a CA spec:
// "arn=ARN,type=ROOT|SUBORDINATE,key=RSA_2048|EC_prime256v1,mode=GENERAL_PURPOSE|SHORT_LIVED_CERTIFICATE[,status=ACTIVE][,cn=NAME][,parent=ARN]".
func ParseCASpec(s string) (CASpec, error) {
	var spec CASpec
	for field := range strings.SplitSeq(s, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return spec, fmt.Errorf("CA spec %q: field %q is not key=value", s, field)
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "arn":
			spec.ARN = v
		case "type":
			spec.Type = strings.ToUpper(v)
		case "key":
			spec.KeyAlgorithm = v
		case "mode":
			spec.UsageMode = strings.ToUpper(v)
		case "status":
			spec.Status = strings.ToUpper(v)
		case "cn":
			spec.CommonName = v
		case "parent":
			spec.Parent = v
		default:
			return spec, fmt.Errorf("CA spec %q: unknown field %q", s, k)
		}
	}
	return spec.withDefaults()
}

// LoadCASpecs reads a YAML or JSON config file holding a list of CA specs.
// Each item is either an object with the fields of [CASpec] (arn, type, key,
// mode, status, cn, parent) or a string in the command-line form. A top-level
// object with a "cas" list is accepted too.
func LoadCASpecs(path string) ([]CASpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA config: %w", err)
	}
	// sigs.k8s.io/yaml converts YAML to JSON, and JSON is valid YAML, so one
	// decoder handles both formats.
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("parse CA config %s: %w", path, err)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(js, &items); err != nil {
		var wrapped struct {
			CAs []json.RawMessage `json:"cas"`
		}
		if err2 := json.Unmarshal(js, &wrapped); err2 != nil {
			return nil, fmt.Errorf("CA config %s: want a list of CA specs: %w", path, err)
		}
		items = wrapped.CAs
	}
	specs := make([]CASpec, 0, len(items))
	for i, raw := range items {
		var (
			spec CASpec
			str  string
		)
		if json.Unmarshal(raw, &str) == nil {
			spec, err = ParseCASpec(str)
		} else {
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.DisallowUnknownFields()
			if err = dec.Decode(&spec); err == nil {
				spec, err = spec.withDefaults()
			}
		}
		if err != nil {
			return nil, fmt.Errorf("CA config %s: item %d: %w", path, i, err)
		}
		specs = append(specs, spec)
	}
	return specs, nil
}
