package meshctl

import (
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"meshca/pkg/insights"
)

// newInspectZonesCmd lists a global control plane's zones with their
// connection state, from Kuma's GET /zones/_overview.
func newInspectZonesCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "zones",
		Short: "List the zones of a global control plane: connected or not, since when, last sync",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := app.Client()
			if err != nil {
				return err
			}
			var page struct {
				Items []insights.ZoneOverview `json:"items"`
			}
			if _, err := client.Do(cmd.Context(), http.MethodGet, "/zones/_overview", url.Values{"size": {"1000"}}, nil, &page); err != nil {
				return err
			}
			now := app.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATUS\tSINCE\tLAST SYNC\tRESOURCES SENT\tRESOURCES RECEIVED\tVERSION\tDATAPLANES\tFAILING\tLAST ERROR")
			for _, z := range page.Items {
				status, since, last, sent, received, version := "Offline", "-", "-", "0", "0", "-"
				if subs := z.ZoneInsight.Subscriptions; len(subs) > 0 {
					s := subs[len(subs)-1]
					switch {
					case s.ConnectTime != nil && s.DisconnectTime == nil:
						status, since = "Online", Age(*s.ConnectTime, now)+" ago"
					case s.DisconnectTime != nil:
						since = Age(*s.DisconnectTime, now) + " ago"
					}
					if s.Status.LastUpdateTime != nil {
						last = Age(*s.Status.LastUpdateTime, now) + " ago"
					}
					sent, received = orDash(s.Status.Total.ResponsesSent), fmt.Sprint(s.ResourcesReceived)
					version = orDash(s.Version.KumaCp.Version)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", z.Name, status, since, last, sent, received, version,
					z.Dataplanes.Total, z.Dataplanes.Failing, orDash(z.Dataplanes.LastError))
			}
			return tw.Flush()
		},
	}
}
