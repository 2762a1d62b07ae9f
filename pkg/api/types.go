package api

import (
	"encoding/json"
	"time"
)

// Resource type names, as they appear in the Universal form's `type:` field.
const (
	TypeMesh         = "Mesh"
	TypeSecret       = "Secret"
	TypeGlobalSecret = "GlobalSecret"
	TypeDataplane    = "Dataplane"
)

// Meta is common to every resource. Mesh is empty for global resources.
type Meta struct {
	Type             string            `json:"type"`
	Mesh             string            `json:"mesh,omitempty"`
	Name             string            `json:"name"`
	CreationTime     time.Time         `json:"creationTime,omitzero"`
	ModificationTime time.Time         `json:"modificationTime,omitzero"`
	Labels           map[string]string `json:"labels,omitempty"`
	KumaReadOnly
}

// GetMeta gives access to the Meta of any resource that embeds it.
func (m *Meta) GetMeta() *Meta { return m }

// Resource is implemented by every resource type.
type Resource interface {
	GetMeta() *Meta
	// Validate checks the resource's own structure (not references to other
	// resources, not backend-specific conf).
	Validate() error
}

// Mesh is a service mesh: a trust domain with its mTLS configuration.
type Mesh struct {
	Meta
	MeshSpec
}

// MeshSpec is the part of a Mesh that the Kubernetes form keeps under `spec`.
type MeshSpec struct {
	MTLS *MTLS `json:"mtls,omitempty"`
	// Kuma fields meshca does not act on are kept as they were written so that
	// Kuma's Mesh examples apply unchanged.
	Logging                     json.RawMessage `json:"logging,omitempty"`
	Metrics                     json.RawMessage `json:"metrics,omitempty"`
	Tracing                     json.RawMessage `json:"tracing,omitempty"`
	Networking                  json.RawMessage `json:"networking,omitempty"`
	Routing                     json.RawMessage `json:"routing,omitempty"`
	Constraints                 json.RawMessage `json:"constraints,omitempty"`
	MeshServices                json.RawMessage `json:"meshServices,omitempty"`
	SkipCreatingInitialPolicies json.RawMessage `json:"skipCreatingInitialPolicies,omitempty"`
}

// MTLS is a Mesh's mutual TLS configuration.
type MTLS struct {
	EnabledBackend string        `json:"enabledBackend,omitempty"`
	Backends       []MTLSBackend `json:"backends,omitempty"`
	SkipValidation bool          `json:"skipValidation,omitempty"`
	// SVIDFormat is the form of data-plane certificates: SVIDFormatSPIFFE
	// or SVIDFormatKuma; empty means DefaultSVIDFormat (meshca extension).
	SVIDFormat string `json:"svidFormat,omitempty"`
}

// mTLS modes of a backend.
const (
	ModeStrict     = "STRICT"
	ModePermissive = "PERMISSIVE"
)

// MTLSBackend is one certificate authority a Mesh may use. Conf is
// type-specific and validated by the backend of that type.
type MTLSBackend struct {
	Name      string          `json:"name"`
	Type      string          `json:"type"`
	Mode      string          `json:"mode,omitempty"`
	DpCert    *DpCert         `json:"dpCert,omitempty"`
	RootChain *RootChain      `json:"rootChain,omitempty"`
	Conf      json.RawMessage `json:"conf,omitempty"`
}

// DpCert configures data-plane certificates.
type DpCert struct {
	Rotation       *Rotation `json:"rotation,omitempty"`
	RequestTimeout string    `json:"requestTimeout,omitempty"`
	// KeyType is a meshca extension: the data-plane key algorithm,
	// KeyTypeECDSAP256 (default) or KeyTypeRSA2048.
	KeyType string `json:"keyType,omitempty"`
}

// Data-plane key types.
const (
	KeyTypeECDSAP256 = "EC_P256"
	KeyTypeRSA2048   = "RSA_2048"
)

// Rotation says how long a data-plane certificate lives.
type Rotation struct {
	Expiration string `json:"expiration,omitempty"`
}

// RootChain configures how the CA's root chain is fetched.
type RootChain struct {
	RequestTimeout string `json:"requestTimeout,omitempty"`
}

// Defaults applied when a field is unset (Kuma's defaults).
const (
	DefaultCertExpiration = 24 * time.Hour
	DefaultRequestTimeout = 10 * time.Second
)

// CertExpiration is the data-plane certificate lifetime of the backend.
func (b MTLSBackend) CertExpiration() time.Duration {
	if b.DpCert == nil || b.DpCert.Rotation == nil || b.DpCert.Rotation.Expiration == "" {
		return DefaultCertExpiration
	}
	d, err := ParseDuration(b.DpCert.Rotation.Expiration)
	if err != nil {
		return DefaultCertExpiration
	}
	return d
}

// CertRequestTimeout bounds one data-plane certificate request.
func (b MTLSBackend) CertRequestTimeout() time.Duration {
	if b.DpCert == nil || b.DpCert.RequestTimeout == "" {
		return DefaultRequestTimeout
	}
	d, err := ParseDuration(b.DpCert.RequestTimeout)
	if err != nil {
		return DefaultRequestTimeout
	}
	return d
}

// RootChainRequestTimeout bounds fetching the CA's root chain.
func (b MTLSBackend) RootChainRequestTimeout() time.Duration {
	if b.RootChain == nil || b.RootChain.RequestTimeout == "" {
		return DefaultRequestTimeout
	}
	d, err := ParseDuration(b.RootChain.RequestTimeout)
	if err != nil {
		return DefaultRequestTimeout
	}
	return d
}

// EnabledMTLSBackend returns the enabled backend and its index, or ok=false
// when mTLS is off.
func (m *Mesh) EnabledMTLSBackend() (MTLSBackend, int, bool) {
	if m.MTLS == nil || m.MTLS.EnabledBackend == "" {
		return MTLSBackend{}, -1, false
	}
	for i, b := range m.MTLS.Backends {
		if b.Name == m.MTLS.EnabledBackend {
			return b, i, true
		}
	}
	return MTLSBackend{}, -1, false
}

// DataSource says where a credential or certificate is read from. Exactly one
// field is set.
type DataSource struct {
	Secret       string `json:"secret,omitempty"`
	File         string `json:"file,omitempty"`
	Inline       string `json:"inline,omitempty"` // base64
	InlineString string `json:"inlineString,omitempty"`
}

// IsSet reports whether any source is given.
func (d *DataSource) IsSet() bool {
	return d != nil && (d.Secret != "" || d.File != "" || d.Inline != "" || d.InlineString != "")
}

// IsInline reports whether the data is written in the configuration itself
// (which, for credentials, deserves a warning).
func (d *DataSource) IsInline() bool {
	return d != nil && (d.Inline != "" || d.InlineString != "")
}

// Secret is mesh-scoped opaque data (base64 in Data). Data is empty (and
// left out) where it is not shown: in lists, and to those without
// VIEW_SECRET_DATA.
type Secret struct {
	Meta
	Data string `json:"data,omitempty"`
}

// GlobalSecret is a Secret that belongs to no mesh.
type GlobalSecret struct {
	Meta
	Data string `json:"data,omitempty"`
}

// Dataplane is one data-plane proxy registered in a mesh.
type Dataplane struct {
	Meta
	DataplaneSpec
}

// DataplaneSpec is the part of a Dataplane that the Kubernetes form keeps under `spec`.
type DataplaneSpec struct {
	Networking Networking      `json:"networking"`
	Metrics    json.RawMessage `json:"metrics,omitempty"`
	Probes     json.RawMessage `json:"probes,omitempty"`
}

// Networking describes a Dataplane's addresses and listeners.
type Networking struct {
	Address             string          `json:"address,omitempty"`
	AdvertisedAddress   string          `json:"advertisedAddress,omitempty"`
	Inbound             []Inbound       `json:"inbound,omitempty"`
	Outbound            []Outbound      `json:"outbound,omitempty"`
	Gateway             *Gateway        `json:"gateway,omitempty"`
	TransparentProxying json.RawMessage `json:"transparentProxying,omitempty"`
	Admin               json.RawMessage `json:"admin,omitempty"`
}

// Inbound is one service the Dataplane serves.
type Inbound struct {
	Port           uint32            `json:"port,omitempty"`
	ServicePort    uint32            `json:"servicePort,omitempty"`
	ServiceAddress string            `json:"serviceAddress,omitempty"`
	Address        string            `json:"address,omitempty"`
	Tags           map[string]string `json:"tags"`
	Health         json.RawMessage   `json:"health,omitempty"`
	ServiceProbe   json.RawMessage   `json:"serviceProbe,omitempty"`
	State          string            `json:"state,omitempty"`
}

// Outbound is one service the Dataplane consumes.
type Outbound struct {
	Port    uint32            `json:"port"`
	Address string            `json:"address,omitempty"`
	Service string            `json:"service,omitempty"`
	Tags    map[string]string `json:"tags,omitempty"`
}

// Gateway marks a Dataplane as a gateway.
type Gateway struct {
	Type string            `json:"type,omitempty"`
	Tags map[string]string `json:"tags"`
}

// ServiceTag is the tag that names a service.
const ServiceTag = "kuma.io/service"

// Services returns the distinct kuma.io/service values of the Dataplane's
// inbounds (or gateway), in order of first appearance.
func (d *Dataplane) Services() []string {
	var out []string
	seen := map[string]bool{}
	add := func(tags map[string]string) {
		if s, ok := tags[ServiceTag]; ok && s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, in := range d.Networking.Inbound {
		add(in.Tags)
	}
	if d.Networking.Gateway != nil {
		add(d.Networking.Gateway.Tags)
	}
	return out
}

// Tags returns every tag of the Dataplane with all its distinct values, sorted.
func (d *Dataplane) Tags() map[string][]string {
	set := map[string]map[string]bool{}
	add := func(tags map[string]string) {
		for k, v := range tags {
			if set[k] == nil {
				set[k] = map[string]bool{}
			}
			set[k][v] = true
		}
	}
	for _, in := range d.Networking.Inbound {
		add(in.Tags)
	}
	if d.Networking.Gateway != nil {
		add(d.Networking.Gateway.Tags)
	}
	out := make(map[string][]string, len(set))
	for k, vs := range set {
		for v := range vs {
			out[k] = append(out[k], v)
		}
		sortStrings(out[k])
	}
	return out
}
