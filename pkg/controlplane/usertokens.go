package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"meshca/pkg/access"
	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/audit"
	"meshca/pkg/authn"
	"meshca/pkg/tokens"
)

// userTokenRequest is the body of POST /tokens/user, as Kuma takes it.
type userTokenRequest struct {
	Name     string   `json:"name"`
	Groups   []string `json:"groups,omitempty"`
	ValidFor string   `json:"validFor"`
}

// verifyUserToken adapts Tokens to the API's authenticator.
func verifyUserToken(toks *tokens.Tokens) authn.UserTokenVerifier {
	return func(ctx context.Context, token string) (authn.Identity, error) {
		c, err := toks.VerifyUser(ctx, token)
		if errors.Is(err, tokens.ErrInvalid) {
			return authn.Identity{}, fmt.Errorf("%w: %w", authn.ErrUnauthenticated, err)
		}
		if err != nil {
			return authn.Identity{}, err
		}
		return authn.User(c.Name, c.Groups), nil
	}
}

// maxTokenRequestBytes bounds the body of a token request.
const maxTokenRequestBytes = 1 << 16

// userTokenEndpoint serves POST /tokens/user: a user token for a name and
// groups, to callers holding GENERATE_USER_TOKEN. Only an admin may put a
// token in mesh-system:admin (otherwise the access would be a way to
// become admin).
func userTokenEndpoint(checker *access.Checker, toks *tokens.Tokens, maxValidity time.Duration, logger *slog.Logger) http.Handler {
	if maxValidity <= 0 {
		maxValidity = tokens.DefaultValidity
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller := apiserver.Caller(r)
		audit.Describe(r.Context(), "generate-user-token", "", "", "")
		if err := checker.Check(r.Context(), caller, access.Request{Access: api.AccessGenerateUserToken}); err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		var req userTokenRequest
		body, err := io.ReadAll(io.LimitReader(r.Body, maxTokenRequestBytes))
		if err == nil {
			err = api.DecodeStrict(body, &req, "")
		}
		if err != nil {
			apiserver.WriteError(w, logger, apiserver.BadRequest("", "the body must be a JSON object with name, groups and validFor: "+err.Error()))
			return
		}
		audit.Describe(r.Context(), "generate-user-token", "User", "", req.Name)
		v := &api.ValidationError{}
		if strings.TrimSpace(req.Name) == "" {
			v.Addf("name", "must not be empty")
		}
		for i, g := range req.Groups {
			switch {
			case strings.TrimSpace(g) == "":
				v.Addf(fmt.Sprintf("groups[%d]", i), "must not be empty")
			case g == authn.GroupAdmin && !caller.IsAdmin():
				v.Addf(fmt.Sprintf("groups[%d]", i), "only an admin may generate a token in %s", authn.GroupAdmin)
			case strings.HasPrefix(g, "mesh-system:") && g != authn.GroupAdmin:
				v.Addf(fmt.Sprintf("groups[%d]", i), "%q is reserved: mesh-system:authenticated is implied and mesh-system:unauthenticated means no token", g)
			}
		}
		if req.ValidFor == "" {
			v.Addf("validFor", "must be set, e.g. 24h")
		}
		validFor, err := api.ParseDuration(req.ValidFor)
		if req.ValidFor != "" && err != nil {
			v.AddErr("validFor", err)
		} else if req.ValidFor != "" && validFor <= 0 {
			v.Addf("validFor", "must be positive")
		} else if validFor > maxValidity {
			v.Addf("validFor", "%s is longer than this control plane allows: at most %s (meshca-cp run --max-token-validity)", req.ValidFor, days(maxValidity))
		}
		if err := v.OrNil(); err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		tok, err := toks.GenerateUser(r.Context(), req.Name, slices.Compact(req.Groups), validFor)
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, tok)
	})
}

// withAccess puts the access checks on the extension endpoints: a
// dataplane token needs GENERATE_DATAPLANE_TOKEN on that Dataplane,
// profiling is for admins, and POST /tokens/user is added.
func withAccess(eps map[string]http.Handler, checker *access.Checker, toks *tokens.Tokens, maxValidity time.Duration, logger *slog.Logger) map[string]http.Handler {
	if h, ok := eps["POST /tokens/dataplane"]; ok {
		eps["POST /tokens/dataplane"] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxTokenRequestBytes))
			if err != nil {
				apiserver.WriteError(w, logger, err)
				return
			}
			var req struct{ Mesh, Name string }
			_ = json.Unmarshal(body, &req) // the endpoint itself reports a bad body
			audit.Describe(r.Context(), "generate-dataplane-token", api.TypeDataplane, req.Mesh, req.Name)
			if err := checker.Check(r.Context(), apiserver.Caller(r), access.Request{
				Access: api.AccessGenerateDataplaneToken, Type: api.TypeDataplane, Mesh: req.Mesh, Name: req.Name,
			}); err != nil {
				apiserver.WriteError(w, logger, err)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			h.ServeHTTP(w, r)
		})
	}
	for pattern, h := range eps {
		if strings.Contains(pattern, "/debug/pprof/") {
			eps[pattern] = adminOnly(checker, h, logger)
		}
	}
	eps["POST /tokens/user"] = userTokenEndpoint(checker, toks, maxValidity, logger)
	return eps
}

func adminOnly(checker *access.Checker, h http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checker.Check(r.Context(), apiserver.Caller(r), access.Request{Access: api.AccessGet, Type: ""}); err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}
