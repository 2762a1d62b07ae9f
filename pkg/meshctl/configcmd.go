package meshctl

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newConfigCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage meshctl's configuration",
		Args:  noArgs,
	}
	cps := &cobra.Command{
		Use:   "control-planes",
		Short: "Manage the control planes meshctl talks to",
		Long: "The control planes meshctl knows are kept in --config-file (default ~/.meshctl/config, 0600, it holds tokens). " +
			"Commands talk to the current one unless --api or " + EnvAPI + " is given.",
		Args: noArgs,
	}
	cps.AddCommand(newCPAddCmd(app), newCPListCmd(app), newCPSwitchCmd(app), newCPRemoveCmd(app))
	cmd.AddCommand(cps)
	return cmd
}

func newCPAddCmd(app *App) *cobra.Command {
	var name, address, caCert, authType string
	var authConf []string
	var overwrite, noCheck bool
	cmd := &cobra.Command{
		Use:   "add",
		Short: "Add a control plane and make it the current one",
		Long: `Add a control plane and make it the current one. Its API is asked for its
index first (with --ca-cert-file trusted and the token sent), so a wrong
address, CA or token is reported before anything is saved:

  meshctl config control-planes add --name prod --address https://cp.example:5682 \
    --ca-cert-file api-server-ca.pem --auth-type tokens --auth-conf token=$(cat admin.token)`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usageError{fmt.Errorf("--name is required")}
			}
			if address == "" {
				return usageError{fmt.Errorf("--address is required")}
			}
			s := APIServer{URL: normalizeAPIURL(address), CACertFile: caCert, AuthType: authType}
			if len(authConf) > 0 {
				if authType == "" {
					return usageError{fmt.Errorf("--auth-conf needs --auth-type %s", AuthTypeTokens)}
				}
				s.AuthConf = map[string]string{}
				for _, kv := range authConf {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return usageError{fmt.Errorf("--auth-conf %q: must be KEY=VALUE, e.g. token=<user token>", k)}
					}
					s.AuthConf[k] = v
				}
			}
			if authType != "" && authType != AuthTypeTokens {
				return usageError{fmt.Errorf("--auth-type %q: must be %q", authType, AuthTypeTokens)}
			}
			if authType == AuthTypeTokens && s.AuthConf["token"] == "" {
				return usageError{fmt.Errorf("--auth-type tokens needs --auth-conf token=<user token>")}
			}
			cfg, err := LoadConfigFile(app.configFile)
			if err != nil {
				return err
			}
			if _, exists := cfg.Find(name); exists && !overwrite {
				return fmt.Errorf("control plane %q already exists: use --overwrite to replace it", name)
			}
			cp := ControlPlane{Name: name, Coordinates: Coordinates{APIServer: s}}
			if !noCheck {
				client, err := app.clientFor(cp)
				if err != nil {
					return err
				}
				if _, err := client.Index(cmd.Context()); err != nil {
					return fmt.Errorf("control plane %q at %s: %w (nothing was saved)", name, s.URL, err)
				}
				// The index is public: check the credentials on an endpoint that is not.
				if s.AuthType != "" {
					if _, err := client.Do(cmd.Context(), "GET", "/meshes", nil, nil, nil); err != nil {
						return fmt.Errorf("control plane %q at %s: %w (nothing was saved)", name, s.URL, err)
					}
				}
			}
			cfg.ControlPlanes = replaceOrAppend(cfg.ControlPlanes, cp, func(c ControlPlane) bool { return c.Name == name })
			cfg.Contexts = replaceOrAppend(cfg.Contexts, Context{Name: name, ControlPlane: name}, func(c Context) bool { return c.Name == name })
			cfg.CurrentContext = name
			if err := cfg.Save(app.configFile); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added control plane %q (%s) and switched to it\n", name, s.URL)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "name of the control plane")
	f.StringVar(&address, "address", "", "URL of its API, e.g. https://cp.example:5682")
	f.StringVar(&caCert, "ca-cert-file", "", "PEM CA the HTTPS API's certificate chains to (the control plane's <data-dir>/api-server-ca.pem)")
	f.StringVar(&authType, "auth-type", "", "how to authenticate: tokens")
	f.StringArrayVar(&authConf, "auth-conf", nil, "authentication setting KEY=VALUE: token=<user token>")
	f.BoolVar(&overwrite, "overwrite", false, "replace a control plane of the same name")
	f.BoolVar(&noCheck, "no-check", false, "save without contacting the control plane")
	return cmd
}

func replaceOrAppend[T any](list []T, v T, same func(T) bool) []T {
	for i := range list {
		if same(list[i]) {
			list[i] = v
			return list
		}
	}
	return append(list, v)
}

func newCPListCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the control planes",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := LoadConfigFile(app.configFile)
			if err != nil {
				return err
			}
			cur, _ := cfg.Current()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "ACTIVE\tNAME\tADDRESS\tAUTH")
			for _, cp := range cfg.ControlPlanes {
				active := ""
				if cp.Name == cur.Name {
					active = "*"
				}
				auth := cp.Coordinates.APIServer.AuthType
				if auth == "" {
					auth = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", active, cp.Name, cp.Coordinates.APIServer.URL, auth)
			}
			return tw.Flush()
		},
	}
}

// loadWith loads the configuration and checks that it has control plane name.
func loadWith(app *App, name string) (*ConfigFile, error) {
	if name == "" {
		return nil, usageError{fmt.Errorf("--name is required")}
	}
	cfg, err := LoadConfigFile(app.configFile)
	if err != nil {
		return nil, err
	}
	if _, ok := cfg.Find(name); !ok {
		return nil, fmt.Errorf("no control plane %q: see meshctl config control-planes list", name)
	}
	return cfg, nil
}

func newCPSwitchCmd(app *App) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "switch",
		Short: "Make another control plane the current one",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadWith(app, name)
			if err != nil {
				return err
			}
			cfg.Contexts = replaceOrAppend(cfg.Contexts, Context{Name: name, ControlPlane: name}, func(c Context) bool { return c.Name == name })
			cfg.CurrentContext = name
			if err := cfg.Save(app.configFile); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "switched to control plane %q\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the control plane")
	return cmd
}

func newCPRemoveCmd(app *App) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "remove",
		Short: "Forget a control plane",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadWith(app, name)
			if err != nil {
				return err
			}
			var cps []ControlPlane
			for _, cp := range cfg.ControlPlanes {
				if cp.Name != name {
					cps = append(cps, cp)
				}
			}
			var ctxs []Context
			for _, c := range cfg.Contexts {
				if c.ControlPlane != name {
					ctxs = append(ctxs, c)
				}
			}
			cfg.ControlPlanes, cfg.Contexts = cps, ctxs
			if _, ok := cfg.Current(); !ok {
				cfg.CurrentContext = ""
			}
			if err := cfg.Save(app.configFile); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed control plane %q\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the control plane")
	return cmd
}
