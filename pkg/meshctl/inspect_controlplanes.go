package meshctl

import (
	"encoding/json"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// controlPlane is one item of GET /control-planes.
type controlPlane struct {
	ID            string     `json:"id"`
	Address       string     `json:"address"`
	Version       string     `json:"version"`
	Leader        bool       `json:"leader"`
	LeaderSince   *time.Time `json:"leaderSince"`
	StartedAt     time.Time  `json:"startedAt"`
	LastHeartbeat time.Time  `json:"lastHeartbeat"`
	Online        bool       `json:"online"`
}

// newInspectControlPlanesCmd lists the control-plane instances sharing the
// store, which one leads (issues certificates) and since when.
func newInspectControlPlanesCmd(app *App) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "control-planes",
		Short: "List the control-plane instances sharing the store and which one leads",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := app.Client()
			if err != nil {
				return err
			}
			var raw []byte
			if _, err := client.Do(cmd.Context(), http.MethodGet, "/control-planes", nil, nil, &raw); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if done, err := writeRawOutput(w, output, raw); done {
				return err
			}
			var list struct {
				Items []controlPlane `json:"items"`
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("decode control planes: %w", err)
			}
			now := app.Now()
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tADDRESS\tLEADER\tSINCE\tLAST HEARTBEAT\tSTATUS\tVERSION")
			for _, c := range list.Items {
				leader, since := "no", "started "+Age(c.StartedAt, now)+" ago"
				if c.Leader {
					leader = "yes"
					if c.LeaderSince != nil {
						since = "leads for " + Age(*c.LeaderSince, now)
					}
				}
				status := "online"
				if !c.Online {
					status = "offline"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%s\t%s\n", c.ID, c.Address, leader, since, Age(c.LastHeartbeat, now), status, c.Version)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", OutputTable, "output format: table, yaml or json")
	return cmd
}
