// Package meshctl implements the meshctl command line: a thin client of
// meshca's HTTP API (package apiserver).
//
// Commands are built by constructors taking the shared *App (API client,
// clock, streams): `func newXxxCmd(app *App) *cobra.Command`. A new command
// is added either here, in builtinCommands, or from outside the package
// through Config.Commands.
package meshctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// EnvAPI names the environment variable holding the API address.
const EnvAPI = "MESHCTL_API"

// DefaultAPI is the API address used when neither --api nor MESHCTL_API is set.
const DefaultAPI = "http://127.0.0.1:5681"

// Config configures the command line. Every field is optional.
type Config struct {
	// Version is the client's version, printed by `meshctl version`.
	Version string
	// Getenv reads the environment; default os.Getenv.
	Getenv func(string) string
	// HTTPClient talks to the API; default a client with a 2 minute timeout.
	HTTPClient *http.Client
	// Now is the clock used for ages; default time.Now.
	Now func() time.Time
	// Stdin, Stdout and Stderr default to the process's.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Commands adds top-level commands (e.g. `generate`, `inspect`).
	Commands []func(*App) *cobra.Command
}

// App is what every command shares.
type App struct {
	cfg        Config
	apiURL     string
	configFile string
	root       *cobra.Command
}

// Client returns a client of the API chosen by --api / MESHCTL_API.

// Now returns the current time of the App's clock.
func (a *App) Now() time.Time { return a.cfg.Now() }

// Version is the client's version.
func (a *App) Version() string { return a.cfg.Version }

// builtinCommands are the top-level commands of meshctl, in help order.
// Add new ones here (e.g. newGenerateCmd, newInspectCmd).
func builtinCommands() []func(*App) *cobra.Command {
	return []func(*App) *cobra.Command{
		newApplyCmd,
		newGetCmd,
		newDeleteCmd,
		newGenerateCmd,
		newConfigCmd,
		newRevokeCmd,
		newInspectCmd,
		newInstallCmd,
		newVersionCmd,
	}
}

// NewRootCmd returns the meshctl root command.
func NewRootCmd(cfg Config) *cobra.Command {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 2 * time.Minute}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Stdin == nil {
		cfg.Stdin = os.Stdin
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	app := &App{cfg: cfg}
	root := &cobra.Command{
		Use:           "meshctl",
		Short:         "Manage meshca meshes, secrets and data planes",
		Long:          "meshctl manages a meshca control plane through its HTTP API (Kuma-compatible).",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.SetIn(cfg.Stdin)
	root.SetOut(cfg.Stdout)
	root.SetErr(cfg.Stderr)
	def := cfg.Getenv(EnvAPI)
	if def == "" {
		def = DefaultAPI
	}
	root.PersistentFlags().StringVar(&app.apiURL, "api", def, "address of the meshca API (env "+EnvAPI+"); default: the current control plane of --config-file, else "+DefaultAPI)
	cfgFile := cfg.Getenv(EnvConfigFile)
	if cfgFile == "" {
		cfgFile = DefaultConfigFile()
	}
	root.PersistentFlags().StringVar(&app.configFile, "config-file", cfgFile, "meshctl configuration: the control planes of `meshctl config control-planes` (env "+EnvConfigFile+")")
	app.root = root
	for _, c := range append(builtinCommands(), cfg.Commands...) {
		root.AddCommand(c(app))
	}
	return root
}

// Main runs meshctl with args (without the program name) and returns the
// process exit code; errors are printed to cfg.Stderr.
func Main(ctx context.Context, cfg Config, args []string) int {
	root := NewRootCmd(cfg)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(root.ErrOrStderr(), "Error: "+err.Error())
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(root.ErrOrStderr(), "Run 'meshctl --help' for usage.")
	}
	return 1
}

// usageError marks an error in how a command was called.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }
