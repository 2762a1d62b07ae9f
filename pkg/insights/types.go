package insights

import (
	"encoding/json"
	"time"

	"meshca/pkg/identity"
)

// Resource type names of Kuma's insight resources.
const (
	TypeDataplaneOverview = "DataplaneOverview"
	TypeMeshInsight       = "MeshInsight"
)

// Subscription is one SDS stream of a data plane, as Kuma's
// DiscoverySubscription: connected now when DisconnectTime is absent.
type Subscription struct {
	ID                     string             `json:"id"`
	ControlPlaneInstanceID string             `json:"controlPlaneInstanceId"`
	ConnectTime            time.Time          `json:"connectTime"`
	DisconnectTime         *time.Time         `json:"disconnectTime,omitempty"`
	Status                 SubscriptionStatus `json:"status"`
}

// SubscriptionStatus is Kuma's DiscoverySubscriptionStatus. meshca does not
// count responses per xDS type, so Total is empty, as Kuma sends it before
// the first response.
type SubscriptionStatus struct {
	LastUpdateTime time.Time `json:"lastUpdateTime"`
	Total          struct{}  `json:"total"`
}

// DataplaneInsight is Kuma's DataplaneInsight: the data plane's SDS streams
// and its certificate state. MTLS carries Kuma's fields
// (certificateExpirationTime, lastCertificateRegeneration,
// certificateRegenerations, issuedBackend, supportedBackends) and meshca's
// details of the certificate beside them, which kumactl ignores.
type DataplaneInsight struct {
	Subscriptions []Subscription        `json:"subscriptions,omitempty"`
	MTLS          *identity.MTLSInsight `json:"mTLS,omitempty"`
	// Connected says whether the data plane has an SDS stream open now
	// (meshca extension; Kuma derives it from the subscriptions).
	Connected bool `json:"connected"`
}

// DataplaneOverview is one item of Kuma's `_overview` and `+insights` lists.
type DataplaneOverview struct {
	Type             string            `json:"type"`
	Mesh             string            `json:"mesh"`
	Name             string            `json:"name"`
	CreationTime     time.Time         `json:"creationTime"`
	ModificationTime time.Time         `json:"modificationTime"`
	Labels           map[string]string `json:"labels,omitempty"`
	// Dataplane is the Dataplane's spec (networking, metrics, probes)
	// without its type, mesh and name.
	Dataplane        json.RawMessage  `json:"dataplane"`
	DataplaneInsight DataplaneInsight `json:"dataplaneInsight"`
}

// DataplaneStat counts data planes by status, as Kuma's MeshInsight does.
type DataplaneStat struct {
	Total             uint32 `json:"total"`
	Online            uint32 `json:"online"`
	Offline           uint32 `json:"offline"`
	PartiallyDegraded uint32 `json:"partiallyDegraded"`
}

// MeshInsight is Kuma's MeshInsight for one mesh.
type MeshInsight struct {
	Type             string           `json:"type"`
	Name             string           `json:"name"`
	CreationTime     time.Time        `json:"creationTime"`
	ModificationTime time.Time        `json:"modificationTime"`
	Dataplanes       DataplaneStat    `json:"dataplanes"`
	DataplanesByType DataplanesByType `json:"dataplanesByType"`
	Policies         map[string]Total `json:"policies"`
	MTLS             MeshMTLS         `json:"mTLS"`
	Services         ServiceStat      `json:"services"`
	Resources        map[string]Total `json:"resources"`
	DpVersions       DpVersions       `json:"dpVersions"`
}

// DpVersions counts data planes by agent and Envoy version. meshca-dp
// reports no version, so every data plane counts as "unknown", as Kuma
// counts a data plane that did not report one.
type DpVersions struct {
	KumaDp map[string]DataplaneStat `json:"kumaDp,omitempty"`
	Envoy  map[string]DataplaneStat `json:"envoy,omitempty"`
}

// DataplanesByType splits MeshInsight.Dataplanes into proxies and gateways.
type DataplanesByType struct {
	Standard         DataplaneStat `json:"standard"`
	Gateway          DataplaneStat `json:"gateway"`
	GatewayBuiltin   DataplaneStat `json:"gatewayBuiltin"`
	GatewayDelegated DataplaneStat `json:"gatewayDelegated"`
}

// MeshMTLS counts data planes by the backend that issued their certificate
// and by the backends they support.
type MeshMTLS struct {
	IssuedBackends    map[string]DataplaneStat `json:"issuedBackends"`
	SupportedBackends map[string]DataplaneStat `json:"supportedBackends"`
}

// ServiceStat counts a mesh's services (kuma.io/service values).
type ServiceStat struct {
	Total    uint32 `json:"total"`
	Internal uint32 `json:"internal"`
	External uint32 `json:"external"`
}

// Total is a count of resources.
type Total struct {
	Total uint32 `json:"total"`
}
