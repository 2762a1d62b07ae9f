package meshctl

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"meshca/pkg/api"
	"meshca/pkg/insights"
	"meshca/pkg/zonesync"
)

func newInspectCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Show the state of a resource",
		Args:  noArgs,
	}
	var mesh, output string
	dp := &cobra.Command{
		Use:   "dataplane NAME",
		Short: "Show a data plane's certificate and rotation state",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := app.Client()
			if err != nil {
				return err
			}
			var raw []byte
			path := "/meshes/" + url.PathEscape(mesh) + "/dataplanes/" + url.PathEscape(args[0]) + "/_overview"
			if _, err := client.Do(cmd.Context(), http.MethodGet, path, nil, nil, &raw); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if done, err := writeRawOutput(w, output, raw); done {
				return err
			}
			var o insights.DataplaneOverview
			if err := json.Unmarshal(raw, &o); err != nil {
				return fmt.Errorf("decode overview: %w", err)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
			row("Dataplane", o.Mesh+"/"+o.Name)
			row("Connected", connection(o.DataplaneInsight, app.Now()))
			m := o.DataplaneInsight.MTLS
			if m == nil || m.Serial == "" {
				row("Certificate", "none issued yet")
				if m != nil && m.LastError != "" {
					row("Last error", fmt.Sprintf("%s (%s, %d failed attempts)", m.LastError, ts(m.LastErrorTime), m.FailedAttempts))
				}
				return tw.Flush()
			}
			row("Backend", fmt.Sprintf("%s (%s)", m.IssuedBackend, m.IssuedBackendType))
			row("Subject", m.Subject)
			row("SANs", strings.Join(append(append([]string{}, m.URISANs...), m.DNSSANs...), ", "))
			row("Issuer", m.Issuer)
			row("Serial", m.Serial)
			if m.CertificateRef != "" {
				row("Certificate ARN", m.CertificateRef)
			}
			row("Not before", ts(m.NotBefore))
			row("Not after", ts(m.NotAfter))
			row("Next rotation", ts(m.NextRotation))
			row("Last rotation", ts(m.LastCertificateRegeneration))
			row("Rotations", fmt.Sprint(m.CertificateRegenerations))
			if m.LastError != "" {
				row("Last error", fmt.Sprintf("%s (%s, %d failed attempts)", m.LastError, ts(m.LastErrorTime), m.FailedAttempts))
			}
			return tw.Flush()
		},
	}
	dp.Flags().StringVarP(&mesh, "mesh", "m", DefaultMesh, "mesh of the data plane")
	dp.Flags().StringVarP(&output, "output", "o", OutputTable, "output format: table, yaml or json")
	cmd.AddCommand(dp, newInspectDataplanesCmd(app), newInspectMeshCmd(app), newInspectZonesCmd(app), newInspectControlPlanesCmd(app))
	return cmd
}

// dataplaneOverviews is the answer of GET /meshes/{mesh}/dataplanes/_overview.
type dataplaneOverviews struct {
	Items []insights.DataplaneOverview `json:"items"`
	Next  *string                      `json:"next"`
}

// connection tells whether a data plane has a stream open now, since when,
// or when its last one closed.
func connection(in insights.DataplaneInsight, now time.Time) string {
	if len(in.Subscriptions) == 0 {
		return "no (never connected to this control plane)"
	}
	last := in.Subscriptions[len(in.Subscriptions)-1]
	if in.Connected {
		for _, s := range in.Subscriptions {
			if s.DisconnectTime == nil {
				return "yes, since " + ts(s.ConnectTime) + " (" + Age(s.ConnectTime, now) + " ago)"
			}
		}
	}
	return "no, disconnected at " + ts(*last.DisconnectTime) + " (" + Age(*last.DisconnectTime, now) + " ago)"
}

// newInspectDataplanesCmd lists a mesh's data planes with their certificate
// state, as kumactl inspect dataplanes does.
func newInspectDataplanesCmd(app *App) *cobra.Command {
	var mesh string
	cmd := &cobra.Command{
		Use:   "dataplanes",
		Short: "List a mesh's data planes with their certificate state",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := app.Client()
			if err != nil {
				return err
			}
			var items []insights.DataplaneOverview
			path := "/meshes/" + url.PathEscape(mesh) + "/dataplanes/_overview"
			query := url.Values{"size": {"1000"}}
			for query != nil {
				var page dataplaneOverviews
				if _, err := client.Do(cmd.Context(), http.MethodGet, path, query, nil, &page); err != nil {
					return err
				}
				items = append(items, page.Items...)
				query = nil
				if page.Next != nil {
					u, err := url.Parse(*page.Next)
					if err != nil {
						return fmt.Errorf("next page %q: %w", *page.Next, err)
					}
					query = u.Query()
				}
			}
			now := app.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 3, ' ', 0)
			// A global control plane lists every zone's data planes.
			zoned := slices.ContainsFunc(items, func(it insights.DataplaneOverview) bool { return it.Labels[zonesync.LabelZone] != "" })
			if zoned {
				fmt.Fprint(tw, "ZONE\t")
			}
			fmt.Fprintln(tw, "NAME\tSERVICES\tCONNECTED\tBACKEND\tCERT EXPIRES IN\tNEXT ROTATION IN\tROTATIONS\tLAST ERROR")
			for _, it := range items {
				if zoned {
					fmt.Fprintf(tw, "%s\t", orDash(it.Labels[zonesync.LabelZone]))
				}
				if n := it.Labels[zonesync.LabelDisplayName]; n != "" {
					it.Name = n
				}
				services := "-"
				var dp api.Dataplane
				if json.Unmarshal(it.Dataplane, &dp.DataplaneSpec) == nil {
					services = orDash(strings.Join(dp.Services(), ","))
				}
				connected := "no"
				if it.DataplaneInsight.Connected {
					connected = "yes"
				}
				backend, expires, next, rotations, lastErr := "-", "-", "-", "0", "-"
				if m := it.DataplaneInsight.MTLS; m != nil {
					backend = orDash(m.IssuedBackend)
					if !m.CertificateExpirationTime.IsZero() {
						expires = until(m.CertificateExpirationTime, now, "expired")
					}
					if !m.NextRotation.IsZero() {
						next = until(m.NextRotation, now, "due")
					}
					rotations = fmt.Sprint(m.CertificateRegenerations)
					lastErr = orDash(m.LastError)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Name, services, connected, backend, expires, next, rotations, lastErr)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&mesh, "mesh", "m", DefaultMesh, "mesh to list")
	return cmd
}

// until renders how far ahead t is, or past when it is not ahead.
func until(t, now time.Time, past string) string {
	if !t.After(now) {
		return past
	}
	return Age(now, t)
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
