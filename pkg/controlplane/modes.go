package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/insights"
	"meshca/pkg/leader"
	"meshca/pkg/resources"
	"meshca/pkg/sds"
	"meshca/pkg/store"
	"meshca/pkg/zonesync"
)

// Modes of `meshca-cp run --mode`.
const (
	// ModeStandalone is one control plane that does everything (the default).
	ModeStandalone = "standalone"
	// ModeGlobal owns Meshes and their Secrets, serves the zone sync and
	// serves no data plane.
	ModeGlobal = "global"
	// ModeZone issues its own data planes' certificates from what it syncs
	// from a global control plane.
	ModeZone = "zone"
)

// DefaultKDSAddress is where a global control plane serves zones.
const DefaultKDSAddress = "127.0.0.1:5685"

func (cfg Config) mode() string {
	if cfg.Mode == "" {
		return ModeStandalone
	}
	return cfg.Mode
}

// checkMode refuses a mode and flags that do not go together, before
// anything is created.
func (cfg Config) checkMode() error {
	zoneFlags := map[string]string{"--zone": cfg.Zone, "--global-address": cfg.GlobalAddress,
		"--global-ca-cert": cfg.GlobalCACert, "--zone-token-file": cfg.ZoneTokenFile}
	switch cfg.mode() {
	case ModeStandalone, ModeGlobal:
		for flag, v := range zoneFlags {
			if v != "" {
				return fmt.Errorf("%s is for --mode zone (this control plane is %s)", flag, cfg.mode())
			}
		}
	case ModeZone:
		var missing []string
		for _, flag := range []string{"--zone", "--global-address", "--global-ca-cert", "--zone-token-file"} {
			if zoneFlags[flag] == "" {
				missing = append(missing, flag)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("--mode zone needs %s", strings.Join(missing, ", "))
		}
		v := &api.ValidationError{}
		api.ValidateName(v, "--zone", cfg.Zone)
		if err := v.OrNil(); err != nil {
			return err
		}
		if _, _, err := net.SplitHostPort(cfg.GlobalAddress); err != nil {
			return fmt.Errorf("--global-address %q: want HOST:PORT: %w", cfg.GlobalAddress, err)
		}
	default:
		return fmt.Errorf("--mode %q: must be standalone, global or zone", cfg.Mode)
	}
	return nil
}

// readOnlyGuard is what the mode forbids local writes of: on a zone, what
// its global control plane owns; on global, Dataplanes.
func readOnlyGuard(cfg Config, st store.Store) func(ctx context.Context, key store.Key) error {
	switch cfg.mode() {
	case ModeGlobal:
		return func(_ context.Context, key store.Key) error {
			if key.Type == api.TypeDataplane {
				return fmt.Errorf("%w: Dataplane %q: data planes are registered with the zone control plane they run in; this control plane is global", resources.ErrReadOnly, key.Name)
			}
			return nil
		}
	case ModeZone:
		owned := func(key store.Key) error {
			return fmt.Errorf("%w: %s is managed by the global control plane (%s): apply it there", resources.ErrReadOnly, key, cfg.GlobalAddress)
		}
		return func(ctx context.Context, key store.Key) error {
			switch key.Type {
			case api.TypeMesh, api.TypeGlobalSecret, api.TypeAccessRole, api.TypeAccessRoleBinding:
				return owned(key)
			case api.TypeSecret:
				rec, err := st.Get(ctx, key)
				if err == nil && rec.Labels[zonesync.LabelOrigin] == zonesync.OriginGlobal {
					return owned(key)
				}
			}
			return nil
		}
	}
	return nil
}

// kdsServerFiles are the zone sync server's TLS files under the data
// directory; its CA is what zones pin (--global-ca-cert), so it is created
// once and kept.
func kdsServerFiles() sds.ServerFiles {
	return sds.ServerFiles{CA: "kds-server-ca.pem", CAKey: "kds-server-ca.key", Cert: "kds-server.pem", CertKey: "kds-server.key", Name: "meshca zone sync server"}
}

// listenKDS binds a global control plane's zone sync server.
func listenKDS(cfg Config) (net.Listener, *tls.Config, error) {
	addr := cfg.KDSAddress
	if addr == "" {
		addr = DefaultKDSAddress
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--kds-address %q: %w", addr, err)
	}
	hosts := []string{host}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		hosts = nil
		if name, err := os.Hostname(); err == nil && name != "" {
			hosts = append(hosts, name)
		}
	}
	conf, _, err := sds.LoadOrCreateTLS(kdsServerFiles(), cfg.DataDir, cfg.KDSTLSCert, cfg.KDSTLSKey, hosts, time.Now)
	if err != nil {
		return nil, nil, fmt.Errorf("zone sync TLS (--kds-tls-cert/--kds-tls-key): %w", err)
	}
	conf.NextProtos = []string{"h2"}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--kds-address %q: %w", addr, err)
	}
	return lis, conf, nil
}

// newZoneSync prepares a zone's link to its global control plane.
func newZoneSync(cfg Config, st store.Store, ins *insights.Service, logger *slog.Logger) (*zonesync.Zone, error) {
	caPEM, err := os.ReadFile(cfg.GlobalCACert)
	if err != nil {
		return nil, fmt.Errorf("--global-ca-cert: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--global-ca-cert %q: no PEM certificate in it (use the global's <data-dir>/kds-server-ca.pem)", cfg.GlobalCACert)
	}
	host, _, _ := net.SplitHostPort(cfg.GlobalAddress)
	token := func() (string, error) {
		b, err := os.ReadFile(cfg.ZoneTokenFile)
		if err != nil {
			return "", fmt.Errorf("--zone-token-file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", errors.New("--zone-token-file is empty")
		}
		return t, nil
	}
	if _, err := token(); err != nil {
		return nil, err
	}
	return zonesync.NewZone(st, zonesync.ZoneConfig{
		Zone:          cfg.Zone,
		GlobalAddress: cfg.GlobalAddress,
		TLS:           &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
		Token:         token,
		Version:       cfg.Version,
		Insight: func(rec store.Record) ([]byte, bool) {
			r, err := resources.FromRecord(rec)
			if err != nil {
				return nil, false
			}
			in := ins.InsightOf(r.(*api.Dataplane))
			if in.MTLS != nil {
				mtls := *in.MTLS
				mtls.History = nil // global shows the state, not each rotation
				in.MTLS = &mtls
			}
			b, err := json.Marshal(in)
			return b, err == nil
		},
		Logger: logger,
	}), nil
}

// zoneStatusHandler serves GET /zone/_status on a zone: its link to global.
// runZoneSync runs the zone's sync client while this instance leads (one
// per zone), its writes fenced by the leader term, until ctx ends.
func runZoneSync(ctx context.Context, el *leader.Elector, z *zonesync.Zone) {
	whileLeading(ctx, el, func(ctx context.Context, term *leader.Term) {
		_ = z.Run(ctx, term.Fence()...) // a fenced stop is logged by the zone
	})
}

func zoneStatusHandler(z *zonesync.Zone) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiserver.WriteJSON(w, http.StatusOK, z.Status())
	})
}

// remoteInsight reads, on a global control plane, what a zone reported of
// one of its data planes (a zonesync.TypeDataplaneInsight record, stored
// under the same name as the Dataplane it describes).
func remoteInsight(st store.Store) func(mesh, name string) (insights.DataplaneInsight, bool) {
	return func(mesh, name string) (insights.DataplaneInsight, bool) {
		var in insights.DataplaneInsight
		rec, err := st.Get(context.Background(), store.Key{Type: zonesync.TypeDataplaneInsight, Mesh: mesh, Name: name})
		if err != nil || json.Unmarshal(rec.Spec, &in) != nil {
			return insights.DataplaneInsight{}, false
		}
		return in, true
	}
}
