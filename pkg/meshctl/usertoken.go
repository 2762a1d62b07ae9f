package meshctl

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
)

func newUserTokenCmd(app *App) *cobra.Command {
	var name, validFor string
	var groups []string
	cmd := &cobra.Command{
		Use:   "user-token",
		Short: "Generate a token a user calls the API with",
		Long: `Generate a user token for --name in the given groups (needs GENERATE_USER_TOKEN;
only an admin may use group mesh-system:admin). The token alone is printed on stdout.
Send it as "Authorization: Bearer <token>", or keep it with
meshctl config control-planes add --auth-type tokens --auth-conf token=<token>.
Revoke it with meshctl revoke user-token (which lists its ID, the jti claim, in
the GlobalSecret user-token-revocations).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usageError{fmt.Errorf("--name is required")}
			}
			if validFor == "" {
				return usageError{fmt.Errorf("--valid-for is required, e.g. 24h")}
			}
			client, err := app.Client()
			if err != nil {
				return err
			}
			body := map[string]any{"name": name, "groups": groups, "validFor": validFor}
			var out []byte
			if _, err := client.Do(cmd.Context(), http.MethodPost, "/tokens/user", nil, body, &out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(out)))
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the user's name")
	cmd.Flags().StringArrayVar(&groups, "group", nil, "a group of the user (repeat for several)")
	cmd.Flags().StringVar(&validFor, "valid-for", "", "token lifetime, e.g. 24h or 30d")
	return cmd
}
