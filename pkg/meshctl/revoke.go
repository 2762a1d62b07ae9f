package meshctl

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"meshca/pkg/api"
	"meshca/pkg/tokens"
)

// newRevokeCmd revokes dataplane tokens by writing their IDs into the mesh's
// revocation Secret, so nobody has to decode a JWT or edit the list by hand.
func newRevokeCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke credentials",
		Args:  noArgs,
	}
	var mesh string
	tok := &cobra.Command{
		Use:   "dataplane-token TOKEN|ID|-",
		Short: "Revoke a dataplane token",
		Long: `Revoke a dataplane token: its ID (the jti claim) is added to the Secret
dataplane-token-revocations-<mesh>, and agents using it are cut off at once.
Give the token itself (its ID is read from it; its signature is not checked),
its ID, or - to read the token from standard input (a token on the command
line is visible in the process list).`,
		Args: exactArgs(1, "TOKEN|ID|-"),
		RunE: func(cmd *cobra.Command, args []string) error {
			arg := args[0]
			if arg == "-" {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("read the token from standard input: %w", err)
				}
				arg = strings.TrimSpace(line)
			}
			id, tokMesh, err := tokenID(arg)
			if err != nil {
				return err
			}
			if tokMesh != "" {
				if cmd.Flags().Changed("mesh") && tokMesh != mesh {
					return fmt.Errorf("the token is for mesh %q, not --mesh %q", tokMesh, mesh)
				}
				mesh = tokMesh
			}
			client, err := app.Client()
			if err != nil {
				return err
			}
			already, err := revoke(cmd.Context(), client, mesh, id)
			if err != nil {
				return err
			}
			verb := "revoked"
			if already {
				verb = "was already revoked"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "dataplane token %s %s in mesh %q (Secret %s)\n", id, verb, mesh, tokens.RevocationsName(mesh))
			return nil
		},
	}
	tok.Flags().StringVarP(&mesh, "mesh", "m", DefaultMesh, "mesh of the token (read from the token when one is given)")
	cmd.AddCommand(tok)
	return cmd
}

// tokenID returns the ID of a token given as a JWT (with the mesh it
// names), or s itself when s is an ID. The signature is not checked: the
// ID only selects what to revoke.
func tokenID(s string) (id, mesh string, err error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		if s == "" || strings.ContainsAny(s, ", \t\n") {
			return "", "", fmt.Errorf("TOKEN|ID: %q is neither a token nor a token ID", s)
		}
		return s, "", nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "", errors.New("TOKEN: not a dataplane token: its claims are not base64url")
	}
	var claims struct {
		ID   string `json:"jti"`
		Mesh string `json:"Mesh"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", "", errors.New("TOKEN: not a dataplane token: its claims are not JSON")
	}
	if claims.ID == "" {
		return "", "", errors.New("TOKEN: the token has no ID (jti claim)")
	}
	return claims.ID, claims.Mesh, nil
}

// revoke adds id to mesh's revocation Secret, creating it if needed.
func revoke(ctx context.Context, client *Client, mesh, id string) (already bool, err error) {
	d, err := api.DescriptorOf(api.TypeSecret)
	if err != nil {
		return false, err
	}
	name := tokens.RevocationsName(mesh)
	var ids []string
	cur, err := client.Get(ctx, d, mesh, name)
	switch {
	case err == nil:
		data, err := base64.StdEncoding.DecodeString(cur.(*api.Secret).Data)
		if err != nil {
			return false, fmt.Errorf("revocation list %s of mesh %q: data is not base64: %w", name, mesh, err)
		}
		ids = strings.FieldsFunc(string(data), func(r rune) bool { return r == ',' || r == '\n' || r == '\r' || r == ' ' || r == '\t' })
	case IsNotFound(err):
	default:
		return false, err
	}
	if slices.Contains(ids, id) {
		return true, nil
	}
	ids = append(ids, id)
	sec := &api.Secret{Meta: api.Meta{Type: api.TypeSecret, Mesh: mesh, Name: name},
		Data: base64.StdEncoding.EncodeToString([]byte(strings.Join(ids, "\n") + "\n"))}
	if _, err := client.Apply(ctx, sec, false); err != nil {
		return false, err
	}
	return false, nil
}
