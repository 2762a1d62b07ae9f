// Command acmpca-local runs the ACM Private CA emulator of package
// meshca/pkg/acmpcaemu as a standalone HTTP server.
//
// Usage:
//
//	acmpca-local run --address 127.0.0.1:PORT --state-dir DIR \
//	    [--ca 'arn=ARN,type=ROOT|SUBORDINATE,key=RSA_2048|EC_prime256v1,mode=GENERAL_PURPOSE|SHORT_LIVED_CERTIFICATE[,status=ACTIVE]']... \
//	    [--config FILE] [--credentials ACCESS_KEY_ID:SECRET]... [--in-progress 2s] \
//	    [--issue-rate 25] [--get-rate 75] [--error-rate 0.05] [--latency 0s]
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"meshca/pkg/acmpcaemu"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "acmpca-local:", err)
		os.Exit(exitCode(err))
	}
}

// errUsage marks errors caused by the command line.
var errUsage = errors.New("usage error")

func exitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// config is the parsed command line of "run".
type config struct {
	address, addressFile, stateDir, configFile string
	cas, credentials, rates                    []string
	inProgress, latency, outageFor             time.Duration
	issueRate, getRate, otherRate, errorRate   float64
	activateRoots                              bool
	region, account, logLevel, logFormat       string
}

// usage marks an error as caused by the command line (exit status 2).
func usage(err error) error { return fmt.Errorf("%w: %w", errUsage, err) }

func newRootCmd(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "acmpca-local",
		Short:         "ACM Private CA emulator speaking the real AWS wire protocols",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Usage()
			return usage(errors.New(`missing command "run"`))
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	root.AddCommand(newRunCmd(ctx, stdout, stderr), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), version) },
	})
	return root
}

func newRunCmd(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	var c config
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Serve the emulator",
		Example: `  acmpca-local run --address 127.0.0.1:8443 --state-dir /tmp/pca \
    --ca 'arn=arn:aws:acm-pca:region:account:certificate-authority/12345678-1234-1234-1234-123456789012,type=ROOT,key=EC_prime256v1,mode=GENERAL_PURPOSE'`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usage(fmt.Errorf("unexpected arguments %q", args))
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			if err := c.check(); err != nil {
				return err
			}
			return serve(ctx, &c, stdout, stderr)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&c.address, "address", "127.0.0.1:8443", "listen address (port 0 picks a free port)")
	fs.StringVar(&c.addressFile, "address-file", "", "write the bound host:port to this file once listening")
	fs.StringVar(&c.stateDir, "state-dir", "", "directory for persistent state and CA chain PEM files (required)")
	fs.StringArrayVar(&c.cas, "ca", nil, "CA spec 'arn=ARN,type=ROOT|SUBORDINATE,key=RSA_2048|EC_prime256v1,mode=GENERAL_PURPOSE|SHORT_LIVED_CERTIFICATE[,status=ACTIVE][,cn=NAME][,parent=ARN]' (repeatable)")
	fs.StringVar(&c.configFile, "config", "", "YAML or JSON file with a list of CA specs")
	fs.StringArrayVar(&c.credentials, "credentials", nil, "ACCESS_KEY_ID:SECRET accepted for SigV4 (repeatable; none = accept any signature)")
	fs.DurationVar(&c.inProgress, "in-progress", time.Second, "how long GetCertificate answers RequestInProgressException after issuance")
	fs.Float64Var(&c.issueRate, "issue-rate", acmpcaemu.DefaultIssueRate, "IssueCertificate requests per second (0 = unlimited)")
	fs.Float64Var(&c.getRate, "get-rate", acmpcaemu.DefaultGetRate, "GetCertificate requests per second (0 = unlimited)")
	fs.Float64Var(&c.otherRate, "other-rate", acmpcaemu.DefaultOtherRate, "requests per second of every other operation (0 = unlimited)")
	fs.StringArrayVar(&c.rates, "rate", nil, "OPERATION=N requests per second for one operation (repeatable, overrides the above)")
	fs.Float64Var(&c.errorRate, "error-rate", 0, "probability (0..1) that a request fails with ServiceUnavailable (503)")
	fs.DurationVar(&c.latency, "latency", 0, "latency added to every API request")
	fs.DurationVar(&c.outageFor, "outage-for", 0, "start with an outage (all requests 503) lasting this long")
	fs.BoolVar(&c.activateRoots, "activate-created-roots", false, "self-sign ROOT CAs made by CreateCertificateAuthority at once")
	fs.StringVar(&c.region, "region", "us-east-1", "region for ARNs of created CAs when the request names none")
	fs.StringVar(&c.account, "account", "123456789012", "account id for ARNs of created CAs")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

func (c *config) check() error {
	if c.stateDir == "" {
		return usage(errors.New("--state-dir is required"))
	}
	if c.errorRate < 0 || c.errorRate > 1 {
		return usage(errors.New("--error-rate must be within [0,1]"))
	}
	return nil
}

func (c *config) options(logger *slog.Logger) (acmpcaemu.Options, error) {
	opts := acmpcaemu.Options{
		StateDir:             c.stateDir,
		Credentials:          map[string]string{},
		InProgress:           c.inProgress,
		Rates:                map[string]float64{},
		Faults:               acmpcaemu.Faults{ErrorRate: c.errorRate, Latency: c.latency},
		ActivateCreatedRoots: c.activateRoots,
		Region:               c.region,
		Account:              c.account,
		Logger:               logger,
	}
	if c.outageFor > 0 {
		opts.Faults.OutageUntil = time.Now().Add(c.outageFor)
	}
	for _, cred := range c.credentials {
		id, secret, ok := strings.Cut(cred, ":")
		if !ok || id == "" || secret == "" {
			return opts, fmt.Errorf("%w: --credentials wants ACCESS_KEY_ID:SECRET", errUsage)
		}
		opts.Credentials[id] = secret
	}
	for _, op := range acmpcaemu.Operations() {
		opts.Rates[op] = c.otherRate
	}
	opts.Rates[acmpcaemu.OpIssueCertificate] = c.issueRate
	opts.Rates[acmpcaemu.OpGetCertificate] = c.getRate
	for _, r := range c.rates {
		op, v, ok := strings.Cut(r, "=")
		n, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			return opts, fmt.Errorf("%w: --rate wants OPERATION=N, got %q", errUsage, r)
		}
		opts.Rates[op] = n
	}
	return opts, nil
}

func newLogger(c *config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("%w: --log-level: %w", errUsage, err)
	}
	ho := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("%w: --log-format must be text or json", errUsage)
}

// run runs the command line args; --help and version print to stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(ctx, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err != nil && !errors.Is(err, errUsage) && isCobraUsageError(err) {
		err = usage(err)
	}
	return err
}

// isCobraUsageError tells cobra's own command-line errors (an unknown
// command) from the errors of running one.
func isCobraUsageError(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}

func serve(ctx context.Context, c *config, stdout, stderr io.Writer) error {
	logger, err := newLogger(c, stderr)
	if err != nil {
		return err
	}
	opts, err := c.options(logger)
	if err != nil {
		return err
	}
	specs := make([]acmpcaemu.CASpec, 0, len(c.cas))
	if c.configFile != "" {
		fromFile, err := acmpcaemu.LoadCASpecs(c.configFile)
		if err != nil {
			return err
		}
		specs = append(specs, fromFile...)
	}
	for _, s := range c.cas {
		spec, err := acmpcaemu.ParseCASpec(s)
		if err != nil {
			return fmt.Errorf("%w: --ca: %w", errUsage, err)
		}
		specs = append(specs, spec)
	}
	srv, err := acmpcaemu.New(opts)
	if err != nil {
		return err
	}
	// Roots first, so subordinates naming a parent find it regardless of
	// the order on the command line.
	for _, pass := range []string{acmpcaemu.TypeRoot, acmpcaemu.TypeSubordinate} {
		for _, spec := range specs {
			if spec.Type != pass {
				continue
			}
			info, err := srv.AddCA(ctx, spec)
			if err != nil {
				return err
			}
			logger.Info("certificate authority ready", "ca_arn", info.ARN, "chain_file", info.ChainFile)
		}
	}

	ln, err := net.Listen("tcp", c.address)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := ln.Addr().String()
	if c.addressFile != "" {
		if err := writeAddressFile(c.addressFile, addr); err != nil {
			_ = ln.Close()
			return err
		}
	}
	fmt.Fprintf(stdout, "acmpca-local listening on %s\n", addr)
	logger.Info("listening", "address", addr, "endpoint", "http://"+addr)

	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// writeAddressFile writes atomically so a poller never reads a partial
// address.
func writeAddressFile(path, addr string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o644); err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	return nil
}
