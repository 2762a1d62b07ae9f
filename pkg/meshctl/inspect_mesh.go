package meshctl

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"meshca/pkg/gui"
)

// newInspectMeshCmd shows a mesh's CA, certificate states, CA switch and,
// for acmpca, the request budget and projected bill: the numbers of the
// web view's Meshes and External CA budget pages.
func newInspectMeshCmd(app *App) *cobra.Command {
	var output string
	var price float64
	cmd := &cobra.Command{
		Use:   "mesh NAME",
		Short: "Show a mesh's CA, certificate states and (acmpca) request budget and projected cost",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if price < 0 || price > 1000 {
				return fmt.Errorf("--price-per-certificate %v: must be a price in USD between 0 and 1000", price)
			}
			switch output {
			case OutputTable, "", OutputJSON, OutputYAML:
			default:
				return fmt.Errorf("--output %q: must be table, yaml or json", output)
			}
			client, err := app.Client()
			if err != nil {
				return err
			}
			path := "/meshes/" + url.PathEscape(args[0]) + "/_overview"
			query := url.Values{}
			if cmd.Flags().Changed("price-per-certificate") {
				query.Set("pricePerCertificate", strconv.FormatFloat(price, 'f', -1, 64))
			}
			var raw []byte
			if _, err := client.Do(cmd.Context(), http.MethodGet, path, query, nil, &raw); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if done, err := writeRawOutput(w, output, raw); done {
				return err
			}
			var v gui.OverviewView
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("decode mesh overview: %w", err)
			}
			return printOverview(w, v)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", OutputTable, "output format: table, yaml or json")
	cmd.Flags().Float64Var(&price, "price-per-certificate", gui.DefaultPricePerCertificate,
		"price in USD of one ACM PCA certificate for the cost projection (default: ACM's short-lived certificate mode price)")
	return cmd
}

func printOverview(w interface{ Write([]byte) (int, error) }, v gui.OverviewView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, args...)) }
	row("Mesh", "%s", v.Name)
	if !v.MTLS {
		row("mTLS", "off")
	} else {
		row("Enabled backend", "%s (%s)", v.EnabledBackend, v.BackendType)
		row("Certificate lifetime", "%s", time.Duration(v.Lifetime*float64(time.Second)))
	}
	if v.Error != "" {
		row("Backend error", "%s", v.Error)
	}
	var states []string
	for _, s := range gui.States {
		states = append(states, fmt.Sprintf("%s %d", s, v.States[s]))
	}
	row("Data planes", "%d (%s)", v.Total, strings.Join(states, ", "))
	for _, r := range v.Roots {
		row("Trust bundle root", "%s, expires %s (%s), serial %s", r.Subject, ts(r.NotAfter), until(r.NotAfter, v.Now, "expired"), r.Serial)
	}
	if s := v.Switch; s != nil {
		var from []string
		for b, n := range s.From {
			from = append(from, fmt.Sprintf("%s: %d", b, n))
		}
		sort.Strings(from)
		row("CA switch", "%d of %d data planes (%.0f%%) hold %s's certificate; still on the old CA: %s", s.Done, s.Of, s.Percent, s.To, strings.Join(from, ", "))
	}
	for _, e := range v.Errors {
		row("Failing", "%d data planes (e.g. %s): %s", e.Dataplanes, e.Example, e.Error)
	}
	if b := v.Budget; b != nil {
		row("ACM PCA requests/s", "%.1f of %.1f (conf.maxRequestsPerSecond; allowed now %.1f; account quota %.0f by default)", b.RequestsPerSecond, b.MaxRequestsPerSecond, b.CurrentLimit, b.AccountQuota)
		row("ACM PCA throttles", "%d of %d requests", b.Throttles, b.Requests)
		row("Billable today (UTC)", "%d", b.IssuedToday)
		row("Billable this month (UTC)", "%d", b.IssuedThisMonth)
		if b.Counting {
			row("Counted since", "%s", ts(b.Since))
		} else {
			row("Counted since", "no request since the control plane started")
		}
		row("Still held, issued this month", "%d (today %d)", b.HeldIssuedThisMonth, b.HeldIssuedToday)
		row("Projected certificates/month", "%.1f", b.CertsPerMonth)
		row("Price per certificate", "$%s", strconv.FormatFloat(b.PricePerCertificate, 'f', -1, 64))
		row("Projected cost/month", "$%.2f", b.ProjectedMonthlyCost)
		row("Formula", "%s", b.Formula)
	}
	return tw.Flush()
}
