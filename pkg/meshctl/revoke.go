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
			arg, err := argOrStdin(cmd, args[0])
			if err != nil {
				return err
			}
			id, tokMesh, isUser, err := tokenID(arg)
			if err != nil {
				return err
			}
			if isUser {
				return errors.New("this is a user token: use meshctl revoke user-token")
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
			already, err := revoke(cmd.Context(), client, api.TypeSecret, mesh, tokens.RevocationsName(mesh), id)
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
	cmd.AddCommand(tok, newRevokeUserTokenCmd(app))
	return cmd
}

// newRevokeUserTokenCmd revokes user tokens through the GlobalSecret
// user-token-revocations.
func newRevokeUserTokenCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "user-token TOKEN|ID|-",
		Short: "Revoke a user token",
		Long: `Revoke a user token: its ID (the jti claim) is added to the GlobalSecret
` + tokens.UserRevocationsName + `, and the token is refused from then on.
Give the token itself (its ID is read from it; its signature is not checked),
its ID, or - to read the token from standard input.`,
		Args: exactArgs(1, "TOKEN|ID|-"),
		RunE: func(cmd *cobra.Command, args []string) error {
			arg, err := argOrStdin(cmd, args[0])
			if err != nil {
				return err
			}
			id, tokMesh, _, err := tokenID(arg)
			if err != nil {
				return err
			}
			if tokMesh != "" {
				return errors.New("this is a dataplane token: use meshctl revoke dataplane-token")
			}
			client, err := app.Client()
			if err != nil {
				return err
			}
			already, err := revoke(cmd.Context(), client, api.TypeGlobalSecret, "", tokens.UserRevocationsName, id)
			if err != nil {
				return err
			}
			verb := "revoked"
			if already {
				verb = "was already revoked"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user token %s %s (GlobalSecret %s)\n", id, verb, tokens.UserRevocationsName)
			return nil
		},
	}
}

// argOrStdin returns arg, or the first line of standard input for "-".
func argOrStdin(cmd *cobra.Command, arg string) (string, error) {
	if arg != "-" {
		return arg, nil
	}
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the token from standard input: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// tokenID returns the ID of a token given as a JWT, with the mesh a
// dataplane token names and whether it is a user token (issuer meshca), or
// s itself when s is an ID. The signature is not checked: the ID only
// selects what to revoke.
func tokenID(s string) (id, mesh string, user bool, err error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		if s == "" || strings.ContainsAny(s, ", \t\n") {
			return "", "", false, fmt.Errorf("TOKEN|ID: %q is neither a token nor a token ID", s)
		}
		return s, "", false, nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "", false, errors.New("TOKEN: not a meshca token: its claims are not base64url")
	}
	var claims struct {
		ID     string `json:"jti"`
		Mesh   string `json:"Mesh"`
		Issuer string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", "", false, errors.New("TOKEN: not a meshca token: its claims are not JSON")
	}
	if claims.ID == "" {
		return "", "", false, errors.New("TOKEN: the token has no ID (jti claim)")
	}
	return claims.ID, claims.Mesh, claims.Mesh == "" && claims.Issuer == tokens.UserTokenIssuer, nil
}

// revoke adds id to the revocation list kept as the Secret (or
// GlobalSecret) name, creating it if needed.
func revoke(ctx context.Context, client *Client, typ, mesh, name, id string) (already bool, err error) {
	d, err := api.DescriptorOf(typ)
	if err != nil {
		return false, err
	}
	var ids []string
	cur, err := client.Get(ctx, d, mesh, name)
	switch {
	case err == nil:
		data, err := base64.StdEncoding.DecodeString(secretData(cur))
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
	data := base64.StdEncoding.EncodeToString([]byte(strings.Join(ids, "\n") + "\n"))
	var sec api.Resource = &api.Secret{Meta: api.Meta{Type: api.TypeSecret, Mesh: mesh, Name: name}, Data: data}
	if typ == api.TypeGlobalSecret {
		sec = &api.GlobalSecret{Meta: api.Meta{Type: api.TypeGlobalSecret, Name: name}, Data: data}
	}
	if _, err := client.Apply(ctx, sec, false); err != nil {
		return false, err
	}
	return false, nil
}

func secretData(r api.Resource) string {
	switch s := r.(type) {
	case *api.Secret:
		return s.Data
	case *api.GlobalSecret:
		return s.Data
	}
	return ""
}
