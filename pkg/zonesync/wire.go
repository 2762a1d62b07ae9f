package zonesync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"meshca/pkg/store"
)

// The gRPC service (see the package doc).
const (
	ServiceName        = "meshca.zonesync.v1.ZoneSync"
	methodGlobalToZone = "/" + ServiceName + "/GlobalToZone"
	methodZoneToGlobal = "/" + ServiceName + "/ZoneToGlobal"
	// TypeURLPrefix prefixes a record type to make a discovery type URL.
	TypeURLPrefix = "type.meshca.io/"
)

// Labels sync sets on the records it writes.
const (
	LabelOrigin      = "kuma.io/origin"
	OriginGlobal     = "global"
	LabelZone        = "kuma.io/zone"
	LabelDisplayName = "kuma.io/display-name"
	// LabelSyncVersion holds the version the sending side gave a record, so
	// the receiver reports it back after a reconnect without recomputing.
	LabelSyncVersion = "meshca.io/sync-version"
)

// Types that flow each way. Secrets go before Meshes, so a Mesh's CA root
// is in the zone when the Mesh arrives. GlobalSecrets, AccessRoles and
// AccessRoleBindings let a zone authenticate and authorize the users global
// made tokens for; of the GlobalSecrets only those (see syncedGlobalSecret)
// leave global.
var (
	globalToZoneTypes = []string{"Secret", "GlobalSecret", "AccessRole", "AccessRoleBinding", "Mesh"}
	zoneToGlobalTypes = []string{"Dataplane", TypeDataplaneInsight}
)

// syncs reports whether a global record goes to zones: every record of the
// global-to-zone types but GlobalSecrets other than the user-token signing
// keys and revocations. Zone-token keys never leave global (a zone holding
// them could pass for another zone), nor do an operator's own GlobalSecrets.
func syncs(typ, name string) bool {
	if typ != "GlobalSecret" {
		return true
	}
	return strings.HasPrefix(name, "user-token-signing-key-") || name == "user-token-revocations"
}

// TypeDataplaneInsight is what a zone reports of each data plane's
// certificate (never its key): stored on global, mesh-scoped.
const TypeDataplaneInsight = "DataplaneInsight"

// refusedTypeURL marks, in a negative acknowledgement's details, the name
// of one resource refused (to be sent again later).
const refusedTypeURL = TypeURLPrefix + "RefusedResource"

// Metadata keys of a zone's streams.
const (
	mdAuthorization = "authorization"
	mdZone          = "meshca-zone"
	mdVersion       = "meshca-version"
)

// syncHandler is what the gRPC service calls on global.
type syncHandler interface {
	globalToZone(grpc.ServerStream) error
	zoneToGlobal(grpc.ServerStream) error
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*syncHandler)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "GlobalToZone", ServerStreams: true, ClientStreams: true,
			Handler: func(srv any, ss grpc.ServerStream) error { return srv.(syncHandler).globalToZone(ss) }},
		{StreamName: "ZoneToGlobal", ServerStreams: true, ClientStreams: true,
			Handler: func(srv any, ss grpc.ServerStream) error { return srv.(syncHandler).zoneToGlobal(ss) }},
	},
	Metadata: "meshca/zonesync",
}

// wireRecord is the JSON body of a synced resource.
type wireRecord struct {
	Mesh   string            `json:"mesh,omitempty"`
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Spec   json.RawMessage   `json:"spec,omitempty"`
}

func resourceName(mesh, name string) string {
	if mesh == "" {
		return name
	}
	return mesh + "/" + name
}

func splitName(s string) (mesh, name string) {
	if m, n, ok := strings.Cut(s, "/"); ok {
		return m, n
	}
	return "", s
}

// syncLabels are the labels sync adds; they are not part of the content.
func isSyncLabel(k string) bool {
	return k == LabelOrigin || k == LabelSyncVersion || k == LabelZone || k == LabelDisplayName
}

// toWire makes the wire form of a stored record, without sync labels.
func toWire(rec store.Record) wireRecord {
	w := wireRecord{Mesh: rec.Mesh, Name: rec.Name, Spec: rec.Spec}
	for k, v := range rec.Labels {
		if !isSyncLabel(k) {
			if w.Labels == nil {
				w.Labels = map[string]string{}
			}
			w.Labels[k] = v
		}
	}
	return w
}

// version is a hash of the content: equal content, equal version, on both
// sides and across restarts.
func (w wireRecord) version() string {
	h := sha256.New()
	h.Write([]byte(w.Mesh + "\x00" + w.Name + "\x00"))
	for _, k := range slices.Sorted(maps.Keys(w.Labels)) {
		h.Write([]byte(k + "=" + w.Labels[k] + "\x00"))
	}
	h.Write(w.Spec)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func encode(typ string, w wireRecord) (*discoveryv3.Resource, error) {
	body, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	return &discoveryv3.Resource{
		Name:     resourceName(w.Mesh, w.Name),
		Version:  w.version(),
		Resource: &anypb.Any{TypeUrl: TypeURLPrefix + typ, Value: body},
	}, nil
}

func decode(typ string, res *discoveryv3.Resource) (wireRecord, error) {
	var w wireRecord
	if res.GetResource().GetTypeUrl() != TypeURLPrefix+typ {
		return w, fmt.Errorf("resource %q: type %q, want %q", res.GetName(), res.GetResource().GetTypeUrl(), TypeURLPrefix+typ)
	}
	if err := json.Unmarshal(res.GetResource().GetValue(), &w); err != nil {
		return w, fmt.Errorf("resource %q: %w", res.GetName(), err)
	}
	if resourceName(w.Mesh, w.Name) != res.GetName() || w.Name == "" {
		return w, fmt.Errorf("resource %q: body names %q", res.GetName(), resourceName(w.Mesh, w.Name))
	}
	return w, nil
}

func typeOf(typeURL string) string { return strings.TrimPrefix(typeURL, TypeURLPrefix) }

// commitAllOrEach commits every change in one transaction; when that fails,
// it commits each on its own so that one bad change (a Mesh missing, a
// record changed meanwhile) does not hold back the others. Every commit
// carries fence (a leader term's). It returns each change's error, all nil
// when the one transaction succeeded.
func commitAllOrEach(ctx context.Context, st store.Store, changes [][]store.Op, fence []store.Op) []error {
	errs := make([]error, len(changes))
	var all []store.Op
	for _, c := range changes {
		all = append(all, c...)
	}
	if len(all) == 0 || st.Commit(ctx, append(all, fence...)...) == nil {
		return errs
	}
	for i, c := range changes {
		errs[i] = st.Commit(ctx, append(c[:len(c):len(c)], fence...)...)
	}
	return errs
}
