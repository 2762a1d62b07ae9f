package meshctl

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"meshca/pkg/api"
	"meshca/pkg/tokens"
)

func newGenerateCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Generate credentials",
		Args:  noArgs,
	}
	var mesh, name, validFor string
	tok := &cobra.Command{
		Use:   "dataplane-token",
		Short: "Generate a token a data plane proves its identity with",
		Long:  "Generate a dataplane token for --name in --mesh. The token alone is printed on stdout, so it can be redirected into a file.",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return fmt.Errorf("--name is required")
			}
			client, err := app.Client()
			if err != nil {
				return err
			}
			body := map[string]string{"mesh": mesh, "name": name}
			if validFor != "" {
				body["validFor"] = validFor
			}
			var out []byte
			if _, err := client.Do(cmd.Context(), http.MethodPost, "/tokens/dataplane", nil, body, &out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(out)))
			warnMissingDataplane(cmd, client, mesh, name)
			return nil
		},
	}
	tok.Flags().StringVarP(&mesh, "mesh", "m", DefaultMesh, "mesh of the data plane")
	tok.Flags().StringVar(&name, "name", "", "name of the Dataplane")
	tok.Flags().StringVar(&validFor, "valid-for", "", "token lifetime, e.g. 24h or 30d (default: the server's, one year)")
	var zone, zoneValidFor string
	zoneTok := &cobra.Command{
		Use:   "zone-token",
		Short: "Generate the token a zone control plane presents to its global control plane",
		Long: `Generate a zone token for --zone on a global control plane. The token is
bound to that zone name; start the zone with it:

  meshctl generate zone-token --zone zone-1 > zone-1.token
  meshca-cp run --mode zone --zone zone-1 --global-address GLOBAL:5685 \
    --global-ca-cert kds-server-ca.pem --zone-token-file zone-1.token

Revoke it by listing its ID (the jti claim) in the GlobalSecret
zone-token-revocations; an open connection of that zone is cut at once.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if zone == "" {
				return fmt.Errorf("--zone is required")
			}
			client, err := app.Client()
			if err != nil {
				return err
			}
			body := map[string]string{"zone": zone}
			if zoneValidFor != "" {
				body["validFor"] = zoneValidFor
			}
			var out []byte
			if _, err := client.Do(cmd.Context(), http.MethodPost, "/tokens/zone", nil, body, &out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(out)))
			return nil
		},
	}
	zoneTok.Flags().StringVar(&zone, "zone", "", "name of the zone control plane")
	zoneTok.Flags().StringVar(&zoneValidFor, "valid-for", "", "token lifetime, e.g. 8760h or 365d (default: the server's, one year)")
	cmd.AddCommand(newUserTokenCmd(app))
	cmd.AddCommand(tok, zoneTok, &cobra.Command{
		Use:   "signing-key",
		Short: "Generate a dataplane-token signing key",
		Long: `Generate a dataplane-token signing key and print it base64-encoded, ready
to be the data of a Secret. To rotate a mesh's signing key, apply it as the
next serial, then delete the old one (its tokens stop working):

  meshctl generate signing-key > key.b64
  printf 'type: Secret\nmesh: default\nname: dataplane-token-signing-key-default-2\ndata: %s\n' "$(cat key.b64)" | meshctl apply -f -
  meshctl delete secret dataplane-token-signing-key-default-1 -m default`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := tokens.NewSigningKey()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(key))
			return nil
		},
	})
	return cmd
}

// warnMissingDataplane says on stderr when the token is for a Dataplane that
// does not exist (a typo is the likely cause): the token is still printed,
// as Kuma does, since the Dataplane may be applied later.
func warnMissingDataplane(cmd *cobra.Command, client *Client, mesh, name string) {
	d, err := api.DescriptorOf(api.TypeDataplane)
	if err != nil {
		return
	}
	if idx, err := client.Index(cmd.Context()); err == nil && idx.Mode == "global" {
		return // a global control plane keeps zones' data planes under other names
	}
	if _, err := client.Get(cmd.Context(), d, mesh, name); IsNotFound(err) {
		fmt.Fprintf(cmd.ErrOrStderr(), "Warning: Dataplane %q does not exist in mesh %q; the token works once a Dataplane of that name is applied\n", name, mesh)
	}
}
