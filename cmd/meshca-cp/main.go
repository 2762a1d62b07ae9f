// Command meshca-cp is the meshca control plane: `meshca-cp run` serves the
// HTTP API, issues and rotates data-plane certificates and delivers them over
// SDS, on an embedded store by default.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/controlplane"
	"meshca/pkg/identity"
	"meshca/pkg/leader"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "meshca-cp",
		Short:         "meshca control plane: workload identity for service meshes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newRotateKeyCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), version) },
	})
	return root
}

func newRunCmd() *cobra.Command {
	cfg := controlplane.Config{Version: version}
	var logLevel, logFormat, memLimit, maxTokenValidity string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the control plane",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(logLevel, logFormat)
			if err != nil {
				return err
			}
			if cfg.MaxTokenValidity, err = api.ParseDuration(maxTokenValidity); err != nil {
				return fmt.Errorf("--max-token-validity: %w", err)
			}
			cfg.Logger = logger
			// The store's default applies only where a store is chosen:
			// --environment kubernetes refuses one given explicitly.
			if !cmd.Flags().Changed("store") && os.Getenv("MESHCA_STORE") == "" {
				cfg.Store = ""
			}
			if _, err := controlplane.ApplyMemoryLimit(memLimit, logger); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := controlplane.Run(ctx, cfg); err != nil {
				logger.Error("control plane failed", "error", err)
				return err
			}
			logger.Info("control plane stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", envOr("MESHCA_DATA_DIR", controlplane.DefaultDataDir), "directory of the embedded store and the dp server's TLS material")
	f.StringVar(&cfg.Store, "store", envOr("MESHCA_STORE", "sqlite"), "store: sqlite (embedded), memory, or postgres")
	f.StringVar(&cfg.StoreDSN, "store-dsn", os.Getenv("MESHCA_STORE_DSN"), "PostgreSQL connection string for --store postgres")
	f.StringVar(&cfg.Environment, "environment", envOr("MESHCA_ENVIRONMENT", controlplane.EnvironmentUniversal),
		"universal (a store of its own: --store) or kubernetes (the store is the Kubernetes API of --kubeconfig, or in-cluster: kuma.io custom resources, Secrets in --system-namespace)")
	f.StringVar(&cfg.SystemNamespace, "system-namespace", envOr("MESHCA_SYSTEM_NAMESPACE", "meshca-system"),
		"with --environment kubernetes: the namespace of Kuma's Secrets and of the control plane's own state")
	f.Float64Var(&cfg.KubeAPIQPS, "kube-api-qps", controlplane.DefaultKubeAPIQPS, "with --environment kubernetes: requests per second to the Kubernetes API server, sustained")
	f.IntVar(&cfg.KubeAPIBurst, "kube-api-burst", controlplane.DefaultKubeAPIBurst, "with --environment kubernetes: requests to the Kubernetes API server at once")
	f.BoolVar(&cfg.GenerateDataplanes, "generate-dataplanes", true,
		"with --environment kubernetes: the leader keeps a Dataplane for every Pod with kuma.io/sidecar-injection enabled (false: Dataplanes are made with kubectl only)")
	f.StringVar(&cfg.APIAddress, "api-address", envOr("MESHCA_API_ADDRESS", controlplane.DefaultAPIAddress), "HTTP API listen address")
	f.Float64Var(&cfg.APIClientRate, "api-client-rate", apiserver.DefaultClientRate, "requests per second each client address may make on the HTTPS API, sustained (over it: 429 with Retry-After); negative: no limit")
	f.IntVar(&cfg.APIClientBurst, "api-client-burst", apiserver.DefaultClientBurst, "requests each client address may make at once on the HTTPS API")
	f.Int64Var(&cfg.APIMaxBodyBytes, "api-max-body-bytes", apiserver.DefaultMaxBodyBytes, "largest request body the HTTP API reads (larger ones get 413)")
	f.Int64Var(&cfg.APIBodyBudgetBytes, "api-body-budget-bytes", apiserver.DefaultBodyBudgetBytes,
		"bytes of request bodies the HTTP API reads and decodes at once, across all requests (over it: 503 with Retry-After)")
	f.StringVar(&cfg.APITLSAddress, "api-tls-address", envOr("MESHCA_API_TLS_ADDRESS", controlplane.DefaultAPITLSAddress), "HTTPS API listen address (user tokens); empty disables it")
	f.StringVar(&cfg.APITLSCert, "api-tls-cert", "", "PEM certificate for the HTTPS API (default: issued by a CA created once under --data-dir, api-server-ca.pem)")
	f.StringVar(&cfg.APITLSKey, "api-tls-key", "", "PEM key for --api-tls-cert")
	f.BoolVar(&cfg.APILocalhostIsAdmin, "api-localhost-is-admin", true, "loopback clients of the plain HTTP API are admin")
	f.StringVar(&cfg.EncryptionKeyFile, "encryption-key-file", os.Getenv("MESHCA_ENCRYPTION_KEY_FILE"),
		"file holding the AES-256 key (32 bytes, base64) that encrypts secrets, CA and data-plane keys at rest (default: <data-dir>/encryption.key, created 0600 on first start)")
	f.StringArrayVar(&cfg.PreviousEncryptionKeyFiles, "previous-encryption-key-file", nil,
		"a key being rotated out: records it encrypted stay readable and are re-encrypted with --encryption-key-file at start (repeatable)")
	f.StringSliceVar(&cfg.DataSourceFileDirs, "datasource-file-dirs", splitNonEmpty(os.Getenv("MESHCA_DATASOURCE_FILE_DIRS")),
		"directories `file:` DataSources may be read from, comma-separated (default: any path, as in Kuma); a file elsewhere is refused naming the field")
	f.StringVar(&cfg.AuditLog, "audit-log", os.Getenv("MESHCA_AUDIT_LOG"), "append the audit trail (every write and token generation) to this file as JSON lines (created 0600); it is always in the log too")
	f.BoolVar(&cfg.APIAllowInsecureRemote, "api-allow-insecure-remote", false, "allow --api-address on a non-loopback address (plain HTTP from the network; warned at every start)")
	f.StringVar(&cfg.DPServerAddress, "dp-server-address", envOr("MESHCA_DP_SERVER_ADDRESS", controlplane.DefaultDPServerAddress), "SDS (gRPC, TLS) listen address for data planes")
	f.StringVar(&cfg.DPServerTLSCert, "dp-server-tls-cert", "", "PEM certificate for the dp server (default: created once under --data-dir)")
	f.StringVar(&cfg.DPServerTLSKey, "dp-server-tls-key", "", "PEM key for --dp-server-tls-cert")
	f.StringVar(&cfg.Webhook.Address, "webhook-address", envOr("MESHCA_WEBHOOK_ADDRESS", controlplane.DefaultWebhookAddress),
		"with --environment kubernetes: the admission webhook's HTTPS listen address (empty disables it)")
	f.StringVar(&cfg.Webhook.URL, "webhook-url", os.Getenv("MESHCA_WEBHOOK_URL"),
		"with --environment kubernetes: the https:// URL the API server reaches the webhook at, for a control plane outside the cluster (default: the Service)")
	f.StringVar(&cfg.Webhook.Service, "webhook-service", "meshca-control-plane", "with --environment kubernetes: the Service of the webhook in the system namespace (port 443)")
	f.StringVar(&cfg.Webhook.TLSCert, "webhook-tls-cert", "", "PEM certificate for the webhook (default: issued by a CA shared through the store; the control plane then registers it as caBundle)")
	f.StringVar(&cfg.Webhook.TLSKey, "webhook-tls-key", "", "PEM key for --webhook-tls-cert")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the Kubernetes API server, for --environment kubernetes and the certmanager backend (default: in-cluster)")
	f.StringVar(&cfg.K8sNamespace, "k8s-namespace", "meshca-system", "namespace for cert-manager CertificateRequests")
	f.IntVar(&cfg.Workers, "issuance-workers", identity.DefaultWorkers, "concurrent certificate issuances (each until its record is committed)")
	f.DurationVar(&cfg.LeaderLeaseDuration, "leader-lease-duration", leader.DefaultLeaseDuration,
		"with --store postgres: how long the leader's lease lasts unrenewed; another instance takes over after it")
	f.DurationVar(&cfg.LeaderRenewInterval, "leader-renew-interval", leader.DefaultRenewInterval,
		"with --store postgres: how often the leader renews its lease (less than half of --leader-lease-duration)")
	f.StringVar(&memLimit, "memory-limit", envOr("MESHCA_MEMORY_LIMIT", controlplane.MemoryLimitAuto),
		"soft memory limit of the Go runtime, e.g. 256MiB: the garbage collector works harder near it; "+
			"auto = GOMEMLIMIT if set, else the container's memory limit less max(10%, 64MiB), else adaptive; "+
			"adaptive = what is live plus max(24MiB, 1/4 of the live heap), recomputed after every collection; off = none (Go's default pacing)")
	f.StringVar(&maxTokenValidity, "max-token-validity", envOr("MESHCA_MAX_TOKEN_VALIDITY", "365d"),
		"longest lifetime of a dataplane token generated through the API (validFor beyond it is refused), e.g. 30d or 720h")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve Go profiling endpoints under /debug/pprof/ on the API address (local diagnosis only)")
	f.StringVar(&cfg.Mode, "mode", envOr("MESHCA_MODE", controlplane.ModeStandalone), "standalone (one control plane), global (owns Meshes, serves zones) or zone (issues for its data planes, syncs from global)")
	f.StringVar(&cfg.KDSAddress, "kds-address", envOr("MESHCA_KDS_ADDRESS", controlplane.DefaultKDSAddress), "global: zone sync listen address (gRPC, TLS)")
	f.StringVar(&cfg.KDSTLSCert, "kds-tls-cert", os.Getenv("MESHCA_KDS_TLS_CERT"), "global: PEM certificate of the zone sync server (default: a CA kept at <data-dir>/kds-server-ca.pem)")
	f.StringVar(&cfg.KDSTLSKey, "kds-tls-key", os.Getenv("MESHCA_KDS_TLS_KEY"), "global: PEM key for --kds-tls-cert")
	f.StringVar(&cfg.Zone, "zone", os.Getenv("MESHCA_ZONE"), "zone: this zone's name (its zone token must be for it)")
	f.StringVar(&cfg.GlobalAddress, "global-address", os.Getenv("MESHCA_GLOBAL_ADDRESS"), "zone: the global control plane's zone sync address, HOST:PORT")
	f.StringVar(&cfg.GlobalCACert, "global-ca-cert", os.Getenv("MESHCA_GLOBAL_CA_CERT"), "zone: CA of the global's zone sync server (its <data-dir>/kds-server-ca.pem)")
	f.StringVar(&cfg.ZoneTokenFile, "zone-token-file", os.Getenv("MESHCA_ZONE_TOKEN_FILE"), "zone: file holding the zone token (meshctl generate zone-token on global)")
	f.StringVar(&logLevel, "log-level", envOr("MESHCA_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: must be debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: must be text or json", format)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// splitNonEmpty splits a comma-separated list, dropping empty items.
func splitNonEmpty(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func newRotateKeyCmd() *cobra.Command {
	cfg := controlplane.Config{}
	var newKeyFile string
	cmd := &cobra.Command{
		Use:   "rotate-encryption-key",
		Short: "Re-encrypt the secrets at rest with a new key",
		Long: `Re-encrypt every secret at rest (Secret and GlobalSecret data, data-plane
keys) with the key in --new-encryption-key-file, created 0600 if it does not
exist. The control plane must be stopped (the data directory is locked); if
the command is interrupted, run it again. Then start meshca-cp with
--encryption-key-file set to the new file. Control planes sharing a
PostgreSQL store can instead each be restarted with the new key and
--previous-encryption-key-file OLD, which re-encrypts at start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			n, id, err := controlplane.RotateEncryptionKey(cmd.Context(), cfg, newKeyFile, logger)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "re-encrypted %d records with key %s; start meshca-cp with --encryption-key-file %s\n", n, id, newKeyFile)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", envOr("MESHCA_DATA_DIR", controlplane.DefaultDataDir), "the control plane's data directory")
	f.StringVar(&cfg.Store, "store", envOr("MESHCA_STORE", "sqlite"), "store: sqlite (embedded) or postgres")
	f.StringVar(&cfg.StoreDSN, "store-dsn", os.Getenv("MESHCA_STORE_DSN"), "PostgreSQL connection string for --store postgres")
	f.StringVar(&cfg.EncryptionKeyFile, "encryption-key-file", os.Getenv("MESHCA_ENCRYPTION_KEY_FILE"), "the current key (default: <data-dir>/encryption.key)")
	f.StringVar(&newKeyFile, "new-encryption-key-file", "", "the new key (created 0600 if absent)")
	return cmd
}
