// Command meshca-dp is the meshca data-plane agent: it keeps a dataplane's
// mTLS certificate, key and trust bundle up to date in a directory, fetched
// from the control plane over SDS.
//
//	meshca-dp run --cp-address 127.0.0.1:5678 --cp-ca-cert ca.pem \
//	    --token-file token --mesh default --name web-1 --out /run/meshca [--on-rotate CMD]
//
// Every flag can also be given as an environment variable MESHCA_DP_<FLAG>
// (upper case, dashes as underscores: MESHCA_DP_TOKEN_FILE, MESHCA_DP_OUT...);
// a flag on the command line wins.
//
// kuma-dp's names are accepted too: --ca-cert-file for --cp-ca-cert and
// --dataplane-token-file for --token-file.
//
// Without --token-file or --token, the pod's ServiceAccount token
// (/var/run/secrets/kubernetes.io/serviceaccount/token) is used, re-read on
// every reconnection since kubelet rotates it: a control plane running with
// --environment kubernetes authenticates data planes by it. --name is then
// the Dataplane's `<name>.<namespace>`.
//
// A control plane that has nothing to serve the dataplane yet (it is not
// registered, or its mesh has no mTLS backend enabled) says so; meshca-dp
// prints the reason once each time it changes and keeps retrying, since
// the operator may fix it.
//
// Exit status: 0 after SIGINT/SIGTERM, 2 when the control plane refuses the
// token or, with --exit-on-permanent-error, when its certificate keeps
// failing to verify against --cp-ca-cert (retrying cannot help), 1 on other
// errors.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"meshca/pkg/dpagent"
)

const envPrefix = "MESHCA_DP_"

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// untrustedHint is how to fix a control-plane certificate that does not
// verify against --cp-ca-cert.
const untrustedHint = "check --cp-ca-cert; the control plane's CA is <data-dir>/dp-server-ca.pem on its host " +
	"(meshca-data/dp-server-ca.pem by default), or the CA of its --dp-server-tls-cert"

// serviceAccountTokenPath is where kubelet mounts a pod's ServiceAccount
// token, used when no token is given (a variable for tests).
var serviceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// permanentErrorLimit is how many attempts in a row may fail on the control
// plane's certificate before --exit-on-permanent-error gives up.
const permanentErrorLimit = 5

// aliases are kuma-dp's flag names for meshca-dp's.
var aliases = map[string]string{
	"ca-cert-file":         "cp-ca-cert",
	"dataplane-token-file": "token-file",
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd(stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, dpagent.ErrRefused):
		fmt.Fprintf(stderr, "meshca-dp: %v\nThe token is invalid, revoked, expired, or for another dataplane (a ServiceAccount token: of another namespace than the Dataplane's): give one for this dataplane; retrying will not help.\n", err)
		return 2
	case errors.Is(err, dpagent.ErrUntrusted):
		fmt.Fprintf(stderr, "meshca-dp: %v\n%s.\n", err, untrustedHint)
		return 2
	default:
		fmt.Fprintf(stderr, "meshca-dp: %v\n", err)
		return 1
	}
}

func newRootCmd(stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "meshca-dp",
		Short:         "meshca data-plane agent",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetErr(stderr)
	root.AddCommand(newRunCmd(stderr), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), version) },
	})
	return root
}

type runFlags struct {
	cpAddress                 []string
	cpCACert                  string
	tokenFile, token          string
	mesh, name, out, onRotate string
	logLevel                  string
	exitOnPermanentError      bool
}

func newRunCmd(stderr io.Writer) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Fetch and keep the dataplane's certificate, key and trust bundle up to date",
		Long: `Connects to the control plane over TLS, authenticates with the dataplane token
(in a Kubernetes pod given none: the pod's ServiceAccount token),
and writes DIR/cert.pem (certificate chain), DIR/key.pem (0600) and DIR/ca.pem
(trust bundle), rewriting them on every rotation and then running --on-rotate
(via sh -c, with MESHCA_DP_OUT=DIR). Flags can also be set as MESHCA_DP_<FLAG>
environment variables.`,
		Args: cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return flagsFromEnv(cmd.Flags())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), f, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.cpAddress, "cp-address", []string{"127.0.0.1:5678"},
		"control plane SDS address (host:port); several instances: comma-separated or repeated, or a name with several DNS records — on a broken stream the agent moves to the next")
	// kuma-dp's names map to meshca-dp's before parsing.
	fl.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if to, ok := aliases[name]; ok {
			name = to
		}
		return pflag.NormalizedName(name)
	})
	fl.StringVar(&f.cpCACert, "cp-ca-cert", "", "PEM file of the CA that signed the control plane's server certificate (required; alias --ca-cert-file)")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the dataplane token or a Kubernetes ServiceAccount token, re-read on every reconnection (alias --dataplane-token-file; default: the pod's ServiceAccount token "+serviceAccountTokenPath+" if there is one)")
	fl.StringVar(&f.token, "token", "", "dataplane token inline (discouraged: visible in the process list; use --token-file)")
	fl.StringVar(&f.mesh, "mesh", "default", "mesh of the dataplane")
	fl.StringVar(&f.name, "name", "", "name of the dataplane (required)")
	fl.StringVar(&f.out, "out", "", "directory to write cert.pem, key.pem and ca.pem into (required)")
	fl.StringVar(&f.onRotate, "on-rotate", "", "shell command run (sh -c) after the files change; MESHCA_DP_OUT is set to --out")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.BoolVar(&f.exitOnPermanentError, "exit-on-permanent-error", false,
		fmt.Sprintf("exit (status 2) after %d attempts in a row fail because the control plane's certificate does not verify against --cp-ca-cert, instead of retrying for ever", permanentErrorLimit))
	return cmd
}

// flagsFromEnv sets every flag not given on the command line from
// MESHCA_DP_<FLAG> when that variable is set.
func flagsFromEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed {
			return
		}
		env := envPrefix + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(fl.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	return errors.Join(errs...)
}

func runAgent(ctx context.Context, f runFlags, stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	var missing []string
	for _, r := range []struct{ flag, v string }{
		{"--cp-address", strings.Join(f.cpAddress, ",")}, {"--cp-ca-cert", f.cpCACert}, {"--mesh", f.mesh}, {"--name", f.name}, {"--out", f.out},
	} {
		if r.v == "" {
			missing = append(missing, r.flag)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("required: %s", strings.Join(missing, ", "))
	}
	caPEM, err := os.ReadFile(f.cpCACert)
	if err != nil {
		return fmt.Errorf("--cp-ca-cert: %w", err)
	}

	var token func() (string, error)
	switch {
	case f.tokenFile != "" && f.token != "":
		return errors.New("give either --token-file or --token, not both")
	case f.tokenFile != "":
		token = dpagent.TokenFromFile(f.tokenFile)
		if _, err := token(); err != nil { // fail fast on a missing file
			return fmt.Errorf("--token-file: %w", err)
		}
	case f.token != "":
		logger.Warn("the dataplane token was given inline with --token; it is visible to other users of this host (process list); prefer --token-file")
		tok := strings.TrimSpace(f.token)
		token = func() (string, error) { return tok, nil }
	default:
		// In a pod: the projected ServiceAccount token kubelet mounts (and
		// rotates, hence read again on every connection), which a control
		// plane running with --environment kubernetes reviews.
		if _, err := os.Stat(serviceAccountTokenPath); err != nil {
			return fmt.Errorf("a token is required: --token-file (alias --dataplane-token-file) or --token; "+
				"in a Kubernetes pod the ServiceAccount token %s is used, but it cannot be read (%v): is automountServiceAccountToken off?",
				serviceAccountTokenPath, errors.Unwrap(err))
		}
		logger.Info("no token given: authenticating with the pod's ServiceAccount token", "path", serviceAccountTokenPath)
		token = dpagent.TokenFromFile(serviceAccountTokenPath)
		if _, err := token(); err != nil {
			return fmt.Errorf("ServiceAccount token: %w", err)
		}
	}

	logger.Info("starting data-plane agent", "cp_address", strings.Join(f.cpAddress, ","), "mesh", f.mesh, "name", f.name, "out", f.out)
	err = dpagent.Run(ctx, dpagent.Config{
		CPAddresses: f.cpAddress,
		CACertPEM:   caPEM,
		Token:       token,
		Mesh:        f.mesh,
		Name:        f.name,
		OutDir:      f.out,
		OnRotate:    f.onRotate,
		Logger:      logger,

		UntrustedHint:       untrustedHint,
		PermanentErrorLimit: permanentLimit(f.exitOnPermanentError),
	})
	if err == nil {
		logger.Info("stopped")
	}
	return err
}

func permanentLimit(exit bool) int {
	if exit {
		return permanentErrorLimit
	}
	return 0
}
