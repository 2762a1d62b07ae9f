package meshctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"meshca/pkg/api"
)

// Output formats of get.
const (
	OutputTable = "table"
	OutputYAML  = "yaml"
	OutputJSON  = "json"
)

// DefaultMesh is the mesh of mesh-scoped commands when -m is not given.
const DefaultMesh = "default"

func newGetCmd(app *App) *cobra.Command {
	var (
		mesh      string
		output    string
		allMeshes bool
	)
	cmd := &cobra.Command{
		Use:   "get TYPE [NAME]",
		Short: "Show resources",
		Long: `Show resources: meshes, mesh NAME, secrets, secret NAME, global-secrets,
global-secret NAME, dataplanes, dataplane NAME.`,
		Args: cobra.ArbitraryArgs,
		RunE: unknownType,
	}
	cmd.PersistentFlags().StringVarP(&mesh, "mesh", "m", DefaultMesh, "mesh of mesh-scoped resources")
	cmd.PersistentFlags().StringVarP(&output, "output", "o", OutputTable, "output format: table, yaml or json")
	for _, d := range api.Descriptors() {
		list := &cobra.Command{
			Use:   d.Path,
			Short: "List " + d.Path,
			Args:  noArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := checkOutput(output); err != nil {
					return err
				}
				client, err := app.Client()
				if err != nil {
					return err
				}
				m := mesh
				if !d.MeshScoped || allMeshes {
					m = ""
				}
				items, err := client.List(cmd.Context(), d, m)
				if err != nil {
					return err
				}
				for i := range items {
					items[i] = withoutData(items[i]) // the API redacts it anyway
				}
				return printResources(cmd.OutOrStdout(), output, d, items, true, app.Now())
			},
		}
		if d.MeshScoped {
			list.Flags().BoolVarP(&allMeshes, "all-meshes", "A", false, "list "+d.Path+" of every mesh")
		}
		var showData bool
		one := &cobra.Command{
			Use:   d.Singular + " NAME",
			Short: "Show one " + d.Singular,
			Args:  exactArgs(1, "NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := checkOutput(output); err != nil {
					return err
				}
				client, err := app.Client()
				if err != nil {
					return err
				}
				m := ""
				if d.MeshScoped {
					m = mesh
				}
				r, err := client.Get(cmd.Context(), d, m, args[0])
				if err != nil {
					return err
				}
				if !showData {
					r = withoutData(r)
				}
				return printResources(cmd.OutOrStdout(), output, d, []api.Resource{r}, false, app.Now())
			},
		}
		if isSecretType(d.Type) {
			one.Flags().BoolVar(&showData, "show-data", false, "print the secret's data (needs VIEW_SECRET_DATA; lists never carry it)")
		}
		cmd.AddCommand(list, one)
	}
	return cmd
}

func checkOutput(o string) error {
	switch o {
	case OutputTable, OutputYAML, OutputJSON:
		return nil
	}
	return usageError{fmt.Errorf("unknown output format %q: use table, yaml or json", o)}
}

// listDoc is how a list is printed in yaml and json: the API's list body.
type listDoc struct {
	Total int            `json:"total"`
	Items []api.Resource `json:"items"`
	Next  *string        `json:"next"`
}

func printResources(w io.Writer, output string, d api.Descriptor, items []api.Resource, isList bool, now time.Time) error {
	switch output {
	case OutputYAML, OutputJSON:
		var v any = listDoc{Total: len(items), Items: append([]api.Resource{}, items...)}
		if !isList {
			v = items[0]
		}
		js, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if output == OutputYAML {
			y, err := yaml.JSONToYAML(js)
			if err != nil {
				return err
			}
			_, err = w.Write(y)
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", js)
		return err
	default:
		return printTable(w, d, items, now)
	}
}

func printTable(w io.Writer, d api.Descriptor, items []api.Resource, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	header := []string{"NAME"}
	if d.MeshScoped {
		header = append(header, "MESH")
	}
	switch d.Type {
	case api.TypeMesh:
		header = append(header, "MTLS")
	case api.TypeDataplane:
		header = append(header, "SERVICES")
	case api.TypeAccessRole:
		header = append(header, "RULES")
	case api.TypeAccessRoleBinding:
		header = append(header, "SUBJECTS", "ROLES")
	}
	header = append(header, "AGE")
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range items {
		m := r.GetMeta()
		row := []string{m.Name}
		if d.MeshScoped {
			row = append(row, m.Mesh)
		}
		switch res := r.(type) {
		case *api.Mesh:
			row = append(row, mtlsColumn(res))
		case *api.Dataplane:
			row = append(row, orDash(strings.Join(res.Services(), ",")))
		case *api.AccessRole:
			row = append(row, fmt.Sprint(len(res.Rules)))
		case *api.AccessRoleBinding:
			var subjects []string
			for _, s := range res.Subjects {
				subjects = append(subjects, s.Type+":"+s.Name)
			}
			row = append(row, orDash(strings.Join(subjects, ",")), orDash(strings.Join(res.Roles, ",")))
		}
		row = append(row, Age(m.CreationTime, now))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// mtlsColumn shows the enabled backend as Kuma does: "type/name", or "off".
func mtlsColumn(m *api.Mesh) string {
	b, _, ok := m.EnabledMTLSBackend()
	if !ok {
		return "off"
	}
	return b.Type + "/" + b.Name
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Age renders how long ago t was, as kubectl does ("45s", "12m", "5h", "3d").
func Age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d < 2*365*24*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	default:
		return fmt.Sprintf("%dy", int(d/(365*24*time.Hour)))
	}
}

func newDeleteCmd(app *App) *cobra.Command {
	var mesh string
	cmd := &cobra.Command{
		Use:   "delete TYPE NAME",
		Short: "Delete a resource",
		Long:  "Delete a resource: mesh NAME, secret NAME, global-secret NAME, dataplane NAME.",
		Args:  cobra.ArbitraryArgs,
		RunE:  unknownType,
	}
	cmd.PersistentFlags().StringVarP(&mesh, "mesh", "m", DefaultMesh, "mesh of mesh-scoped resources")
	for _, d := range api.Descriptors() {
		cmd.AddCommand(&cobra.Command{
			Use:     d.Singular + " NAME",
			Aliases: []string{d.Path},
			Short:   "Delete a " + d.Singular,
			Args:    exactArgs(1, "NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				client, err := app.Client()
				if err != nil {
					return err
				}
				m := ""
				if d.MeshScoped {
					m = mesh
				}
				if err := client.Delete(cmd.Context(), d, m, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %q deleted\n", d.Type, args[0])
				return nil
			},
		})
	}
	return cmd
}

func newVersionCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client and server versions",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Client: meshctl %s\n", app.Version())
			client, err := app.Client()
			if err != nil {
				return err
			}
			idx, err := client.Index(cmd.Context())
			if err != nil {
				return fmt.Errorf("server version: %w", err)
			}
			fmt.Fprintf(out, "Server: %s %s (based on Kuma %s)\n", orDash(idx.Tagline), orDash(idx.Version), orDash(idx.BasedOnKuma))
			return nil
		},
	}
}

// unknownType answers a parent command (get, delete) called without a known
// resource type.
func unknownType(cmd *cobra.Command, args []string) error {
	var types []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			types = append(types, c.Name())
		}
	}
	if len(args) == 0 {
		return usageError{fmt.Errorf("%q needs a resource type: one of %s", cmd.CommandPath(), strings.Join(types, ", "))}
	}
	return usageError{fmt.Errorf("unknown resource type %q: use one of %s", args[0], strings.Join(types, ", "))}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%q takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%q needs %s, got %d argument(s)", cmd.CommandPath(), what, len(args))}
		}
		return nil
	}
}

func isSecretType(typ string) bool { return typ == api.TypeSecret || typ == api.TypeGlobalSecret }

// withoutData drops a secret's data: it is printed only when asked for.
func withoutData(r api.Resource) api.Resource {
	switch v := r.(type) {
	case *api.Secret:
		c := *v
		c.Data = ""
		return &c
	case *api.GlobalSecret:
		c := *v
		c.Data = ""
		return &c
	}
	return r
}
