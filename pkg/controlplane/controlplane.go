package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"meshca/pkg/access"
	"meshca/pkg/apiserver"
	"meshca/pkg/audit"
	"meshca/pkg/authn"
	"meshca/pkg/ca"
	"meshca/pkg/ca/acmpca"
	"meshca/pkg/datasource"
	"meshca/pkg/gui"
	"meshca/pkg/identity"
	"meshca/pkg/insights"
	"meshca/pkg/resources"
	"meshca/pkg/sds"
	"meshca/pkg/store"
	"meshca/pkg/store/memory"
	"meshca/pkg/store/postgres"
	"meshca/pkg/store/sqlite"
	"meshca/pkg/tokens"
	"meshca/pkg/zonesync"
)

// Config is everything `meshca-cp run` can be told.
type Config struct {
	DataDir string
	// Store is "sqlite" (default, a file under DataDir), "memory" or
	// "postgres"; it must be empty with Environment kubernetes.
	Store    string
	StoreDSN string
	// Environment is universal (default) or kubernetes: then the store is
	// the Kubernetes API of Kubeconfig (in-cluster if empty), meshca's own
	// state in SystemNamespace (kubernetes.go).
	Environment, SystemNamespace string
	// KubeAPIQPS and KubeAPIBurst bound the Kubernetes client's requests
	// (0: DefaultKubeAPIQPS, DefaultKubeAPIBurst).
	KubeAPIQPS   float64
	KubeAPIBurst int
	// GenerateDataplanes, with Environment kubernetes, makes the leader
	// keep a Dataplane for every Pod with sidecar injection (podgen.go).
	GenerateDataplanes bool

	APIAddress string
	// APIClientRate and APIClientBurst bound each client address's requests
	// on the HTTPS listener (apiserver.Options.ClientRate/ClientBurst).
	APIClientRate  float64
	APIClientBurst int
	// APIMaxBodyBytes and APIBodyBudgetBytes bound one request body and the
	// bodies being decoded at once (apiserver.Options); 0 means the default.
	APIMaxBodyBytes, APIBodyBudgetBytes int64
	DPServerAddress                     string
	// APITLSAddress is the HTTPS listener of the API ("" for none), with
	// the operator's APITLSCert/Key or a certificate of a CA kept under DataDir.
	APITLSAddress         string
	APITLSCert, APITLSKey string
	// APILocalhostIsAdmin makes loopback clients of the plain listener admin.
	APILocalhostIsAdmin bool
	// APIAllowInsecureRemote allows a non-loopback plain listener.
	APIAllowInsecureRemote bool
	// EncryptionKeyFile holds the key secrets are encrypted with at rest
	// (default: <DataDir>/encryption.key, created on first start);
	// PreviousEncryptionKeyFiles still open records during a rotation.
	EncryptionKeyFile          string
	PreviousEncryptionKeyFiles []string
	// DataSourceFileDirs confines `file:` DataSources to these directories
	// (none: any path, as in Kuma).
	DataSourceFileDirs []string
	// AuditLog, when set, is a file the audit trail is appended to as JSON lines.
	AuditLog string
	// DPServerTLSCert/Key are the operator's own SDS server certificate; when
	// empty, a CA and certificate are created once under DataDir.
	DPServerTLSCert, DPServerTLSKey string

	// Webhook is the admission webhook of --environment kubernetes.
	Webhook WebhookConfig

	// Kubeconfig and K8sNamespace are used by the certmanager backend.
	Kubeconfig   string
	K8sNamespace string

	// Workers bounds concurrent issuances.
	Workers int
	// LeaderLeaseDuration and LeaderRenewInterval shape the leader lease
	// of instances sharing a PostgreSQL store (0: pkg/leader's defaults).
	LeaderLeaseDuration, LeaderRenewInterval time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ on the API address.
	Pprof bool
	// MaxTokenValidity bounds the lifetime of a dataplane token generated
	// through the API (0: tokens.DefaultValidity, one year).
	MaxTokenValidity time.Duration

	// Mode is standalone (default), global or zone (see modes.go).
	Mode string
	// KDSAddress, KDSTLSCert and KDSTLSKey: a global's zone sync server.
	KDSAddress, KDSTLSCert, KDSTLSKey string
	// Zone, GlobalAddress, GlobalCACert and ZoneTokenFile: a zone's name and
	// its link to global.
	Zone, GlobalAddress, GlobalCACert, ZoneTokenFile string

	Version string
	Logger  *slog.Logger
	// Started, when set, is called once both listeners are bound, with their
	// addresses (useful when the configured ports are 0).
	Started func(api, dp net.Addr)
}

// Defaults for Config.
const (
	DefaultDataDir         = "./meshca-data"
	DefaultAPIAddress      = "127.0.0.1:5681"
	DefaultDPServerAddress = "127.0.0.1:5678"
)

// shutdownGrace is how long in-flight API requests may run after a stop
// signal; those still running shutdownAnswerTime before its end are stopped
// and answered 503.
const (
	shutdownGrace      = 5 * time.Second
	shutdownAnswerTime = time.Second
)

// Run starts the control plane and blocks until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if err := cfg.checkMode(); err != nil {
		return err
	}
	if err := cfg.checkEnvironment(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir %q: %w", cfg.DataDir, err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	raw := st
	// On Kubernetes, Secrets are the platform's secret store; meshca seals
	// its own records only when given a key (kubernetes.go).
	if !cfg.kubernetes() || cfg.EncryptionKeyFile != "" {
		if st, err = encryptStore(ctx, cfg, st, logger); err != nil {
			return err
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	settings := map[string]string{"kubeconfig": cfg.Kubeconfig, "k8s-namespace": cfg.K8sNamespace}
	cas, err := ca.NewRegistry(ca.Deps{
		Store:    st,
		Sources:  datasource.New(st).WithFileDirs(cfg.DataSourceFileDirs),
		Logger:   logger,
		Now:      time.Now,
		Settings: settings,
	}, Backends())
	if err != nil {
		return err
	}
	// The postgres store's listener metrics (reconnects, catch-up size).
	if cp, ok := raw.(interface{ Collectors() []prometheus.Collector }); ok {
		reg.MustRegister(cp.Collectors()...)
	}
	// Backends with metrics of their own (acmpca) expose them as collectors.
	for _, typ := range cas.Types() {
		be, _ := cas.Get(typ)
		if cp, ok := be.(interface{ Collectors() []prometheus.Collector }); ok {
			reg.MustRegister(cp.Collectors()...)
		}
	}
	mgr := resources.NewManager(st, cas, resources.Options{Logger: logger, ReadOnly: kubernetesReadOnly(cfg, readOnlyGuard(cfg, st)), CAsElsewhere: cfg.mode() == ModeGlobal,
		OwnedTypes: []string{identity.TypeDataplaneIdentity, zonesync.TypeDataplaneInsight, acmpca.TypeBilling}})
	elector, err := newElector(ctx, cfg, st, logger)
	if err != nil {
		return err
	}
	defer elector.Close()
	reg.MustRegister(elector.Collectors()...)
	ids := identity.New(st, cas, identity.Options{Logger: logger, Workers: cfg.Workers, Registerer: reg, Leader: elector,
		NoProvision: cfg.mode() == ModeZone, FailoverBudget: failoverBudget(cfg),
		MeshesWrittenElsewhere: cfg.kubernetes()})
	toks := tokens.New(st, time.Now)
	dpAuth, err := dataplaneAuthenticator(cfg, toks, reg)
	if err != nil {
		return err
	}
	checker := access.New(mgr)
	auditor, err := audit.New(logger, cfg.AuditLog)
	if err != nil {
		return err
	}
	defer auditor.Close()

	if err := shareServerCAs(ctx, cfg, st, logger); err != nil {
		return err
	}
	if cfg.kubernetes() {
		stopKube, err := startKubernetes(ctx, cfg, st, mgr, logger)
		if err != nil {
			return err
		}
		defer stopKube()
	}
	apiLs, err := listenAPI(cfg, logger)
	if err != nil {
		return err
	}
	apiLis := apiLs.plain
	// A global control plane serves zones, not data planes.
	var dpLis, kdsLis net.Listener
	var tlsConf, kdsTLS *tls.Config
	if cfg.mode() == ModeGlobal {
		if kdsLis, kdsTLS, err = listenKDS(cfg); err != nil {
			apiLs.Close()
			return err
		}
	} else {
		if dpLis, err = net.Listen("tcp", cfg.DPServerAddress); err != nil {
			apiLs.Close()
			return fmt.Errorf("--dp-server-address %q: %w", cfg.DPServerAddress, err)
		}
		host, _, _ := net.SplitHostPort(cfg.DPServerAddress)
		if tlsConf, _, err = sds.LoadOrCreateServerTLS(cfg.DataDir, cfg.DPServerTLSCert, cfg.DPServerTLSKey, []string{host}, time.Now); err != nil {
			apiLs.Close()
			dpLis.Close()
			return fmt.Errorf("dp server TLS: %w", err)
		}
	}
	instance, _ := os.Hostname()
	conns := insights.NewConnections(instance, time.Now)
	ins := insights.New(mgr, ids, conns)
	var zone *zonesync.Zone
	if cfg.mode() == ModeZone {
		if zone, err = newZoneSync(cfg, st, ins, logger); err != nil {
			apiLs.Close()
			dpLis.Close()
			return err
		}
	}
	var global *zonesync.Global
	if kdsLis != nil {
		global = zonesync.NewGlobal(st, toks, logger)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 4)
	if cfg.mode() != ModeGlobal {
		go func() { errs <- ids.Run(ctx) }()
	}
	if global != nil {
		go func() { errs <- global.Serve(ctx, kdsLis, kdsTLS) }()
	}
	if zone != nil {
		go runZoneSync(ctx, elector, zone)
	}
	if cfg.kubernetes() && cfg.GenerateDataplanes && cfg.mode() != ModeGlobal {
		go runDataplaneGeneration(ctx, cfg, elector, logger)
	}
	electorDone := make(chan struct{})
	go func() { defer close(electorDone); _ = elector.Run(ctx) }()
	// A leader stopping releases its lease (within a renew interval), so
	// another instance takes over at once.
	defer func() { cancel(); <-electorDone }()
	// Tokens follow signing-key and revocation changes, so the SDS server
	// re-verifies an open stream's token only when they changed.
	go func() { _ = toks.Run(ctx) }()
	go checker.Run(ctx, st) // caches what roles grant between their changes

	api := apiserver.New(mgr, apiserver.Options{
		Logger:  logger,
		Version: cfg.Version,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		Ready: func(context.Context) error {
			if cfg.mode() == ModeGlobal {
				return nil // no identities to load
			}
			select {
			case <-ids.Ready():
				return nil
			default:
				return errors.New("loading identities")
			}
		},
		Mode:            cfg.mode(),
		InstanceID:      elector.ID(),
		ControlPlanes:   elector.Instances,
		ClientRate:      cfg.APIClientRate,
		ClientBurst:     cfg.APIClientBurst,
		MaxBodyBytes:    cfg.APIMaxBodyBytes,
		BodyBudgetBytes: cfg.APIBodyBudgetBytes,
		Extra: withGUI(withAccess(extraEndpoints(mgr, ids, toks, cfg.MaxTokenValidity, logger, cfg.Pprof), checker, toks, cfg.MaxTokenValidity, logger),
			gui.New(gui.Options{Source: ids, Backends: cas, Logger: logger})),
		GUI:              gui.Path,
		PublicPaths:      gui.PublicPaths,
		Authenticator:    &authn.Authenticator{LocalhostIsAdmin: cfg.APILocalhostIsAdmin, VerifyUserToken: verifyUserToken(toks)},
		Access:           checker,
		Audit:            auditor,
		AllowRemotePlain: cfg.APIAllowInsecureRemote,
	})
	if global != nil {
		ins.WithZones(global).WithRemote(remoteInsight(st))
		api.Handle("POST /tokens/zone", zoneTokenHandler(checker, toks, cfg.MaxTokenValidity, logger))
	}
	if zone != nil {
		api.Handle("GET /zone/_status", zoneStatusHandler(zone))
	}
	for pattern, h := range ins.Handlers(logger) {
		api.Handle(pattern, h)
	}
	api.Handle("GET /control-planes", controlPlanesHandler(elector, logger))
	reqCtx, stopRequests := context.WithCancelCause(context.Background())
	defer stopRequests(nil)
	httpSrv := &http.Server{Handler: api.HandlerFor(authn.Plain), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return reqCtx }}
	go func() {
		if err := httpSrv.Serve(apiLis); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("api server: %w", err)
		}
	}()
	httpsSrv := &http.Server{Handler: api.HandlerFor(authn.HTTPS), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return reqCtx }}
	if apiLs.tls != nil {
		go func() {
			if err := httpsSrv.Serve(apiLs.tls); !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("api https server: %w", err)
			}
		}()
	}
	var dpAddr net.Addr
	if dpLis != nil {
		sdsSrv := sds.NewServer(sdsSource{ids, conns}, dpAuth, logger, reg)
		go func() { errs <- sdsSrv.Serve(ctx, dpLis, tlsConf) }()
		dpAddr = dpLis.Addr()
	}

	attrs := []any{"version", cfg.Version, "mode", cfg.mode(), "api", apiLis.Addr().String(), "apiTLS", addrOf(apiLs.tls), "dpServer", addrOf(dpLis),
		"environment", cfg.environment(), "store", storeName(cfg), "dataDir", cfg.DataDir, "backends", cas.Types()}
	if kdsLis != nil {
		attrs = append(attrs, "kdsServer", kdsLis.Addr().String())
	}
	if zone != nil {
		attrs = append(attrs, "zone", cfg.Zone, "global", cfg.GlobalAddress)
	}
	logger.Info("meshca control plane started", attrs...)
	elector.SetAddress(apiLis.Addr().String())
	if cfg.Started != nil {
		cfg.Started(apiLis.Addr(), dpAddr)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	logger.Info("meshca control plane stopping")
	cancel()
	shutdownCtx, done := context.WithTimeout(context.Background(), shutdownGrace)
	defer done()
	// Requests still running near the end of the grace are stopped with a
	// cause the API answers as 503, so no client sees its connection dropped.
	stopSlow := time.AfterFunc(shutdownGrace-shutdownAnswerTime, func() { stopRequests(apiserver.ErrShuttingDown) })
	defer stopSlow.Stop()
	httpsDone := make(chan struct{})
	go func() { _ = httpsSrv.Shutdown(shutdownCtx); close(httpsDone) }()
	_ = httpSrv.Shutdown(shutdownCtx)
	<-httpsDone
	return runErr
}

func storeName(cfg Config) string {
	if cfg.kubernetes() {
		return EnvironmentKubernetes
	}
	if cfg.Store == "" {
		return "sqlite"
	}
	return cfg.Store
}

func openStore(ctx context.Context, cfg Config, logger *slog.Logger) (store.Store, error) {
	switch storeName(cfg) {
	case "sqlite":
		return sqlite.Open(ctx, filepath.Join(cfg.DataDir, "meshca.db"), logger)
	case "memory":
		return memory.New(), nil
	case EnvironmentKubernetes:
		return openKubernetesStore(ctx, cfg, logger)
	case "postgres":
		if cfg.StoreDSN == "" {
			return nil, errors.New("--store postgres needs --store-dsn")
		}
		return postgres.Open(ctx, cfg.StoreDSN, logger)
	default:
		return nil, fmt.Errorf("--store %q: must be sqlite, memory or postgres", cfg.Store)
	}
}

// sdsSource adapts the identity manager to what the SDS server consumes,
// recording each stream in conns (a stream subscribes once, for its life).
type sdsSource struct {
	ids   *identity.Manager
	conns *insights.Connections
}

func (s sdsSource) Current(mesh, name string) (sds.Secrets, bool) {
	sec, ok := s.ids.Current(mesh, name)
	return sds.Secrets(sec), ok
}

// Servable implements sds.ServableChecker.
func (s sdsSource) Servable(ctx context.Context, mesh, name string) error {
	err := s.ids.Servable(ctx, mesh, name)
	if errors.Is(err, identity.ErrDataplaneNotFound) {
		return dataplaneNotFound{err}
	}
	return err
}

// dataplaneNotFound is identity's not-found error marked for sds too.
type dataplaneNotFound struct{ error }

func (e dataplaneNotFound) Unwrap() []error { return []error{e.error, sds.ErrDataplaneNotFound} }

func (s sdsSource) Subscribe(mesh, name string, notify func()) func() {
	updated, closed := s.conns.Open(mesh, name)
	cancel := s.ids.Subscribe(mesh, name, func() { updated(); notify() })
	return func() { cancel(); closed() }
}
