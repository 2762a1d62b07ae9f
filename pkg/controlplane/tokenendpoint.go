package controlplane

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"meshca/pkg/access"
	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/audit"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/tokens"
	"meshca/pkg/zonesync"
)

// tokenRequest is the body of POST /tokens/dataplane and POST
// /tokens/zone, as Kuma takes them.
type tokenRequest struct {
	Name     string            `json:"name"`
	Mesh     string            `json:"mesh"`
	Zone     string            `json:"zone,omitempty"`
	Scope    []string          `json:"scope,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
	Type     string            `json:"type,omitempty"`
	ValidFor string            `json:"validFor,omitempty"`
}

// tokenEndpoint serves a token generation endpoint: it reads the request,
// checks validFor against maxValidity (0: tokens.DefaultValidity; without
// validFor a token lives min(tokens.DefaultValidity, maxValidity)), lets
// check add its own field errors, and answers the token generate makes.
func tokenEndpoint(maxValidity time.Duration, logger *slog.Logger,
	check func(r *http.Request, req tokenRequest, v *api.ValidationError) error,
	generate func(r *http.Request, req tokenRequest, validFor time.Duration) (string, error)) http.Handler {
	if maxValidity <= 0 {
		maxValidity = tokens.DefaultValidity
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		var req tokenRequest
		if err := json.Unmarshal(body, &req); err != nil {
			apiserver.WriteError(w, logger, apiserver.BadRequest("", "body must be JSON: "+err.Error()))
			return
		}
		v := &api.ValidationError{}
		validFor := min(tokens.DefaultValidity, maxValidity)
		if req.ValidFor != "" {
			if validFor, err = api.ParseDuration(req.ValidFor); err != nil {
				v.AddErr("validFor", err)
			} else if validFor > maxValidity {
				v.Addf("validFor", "%s is longer than this control plane allows: at most %s (meshca-cp run --max-token-validity)", req.ValidFor, days(maxValidity))
			}
		}
		if err := check(r, req, v); err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		if err := v.OrNil(); err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		tok, err := generate(r, req, validFor)
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, tok)
	})
}

// tokenHandler serves POST /tokens/dataplane. It refuses a mesh or name
// that is not a valid resource name (a token for a name no Dataplane can
// have authenticates nothing, and would be a confusing credential) and a
// mesh that does not exist.
func tokenHandler(mgr *resources.Manager, toks *tokens.Tokens, maxValidity time.Duration, logger *slog.Logger) http.Handler {
	return tokenEndpoint(maxValidity, logger,
		func(r *http.Request, req tokenRequest, v *api.ValidationError) error {
			api.ValidateMeshName(v, "mesh", req.Mesh)
			api.ValidateName(v, "name", req.Name)
			if v.OrNil() != nil {
				return nil
			}
			if _, err := mgr.Get(r.Context(), api.TypeMesh, "", req.Mesh); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return api.FieldErr("mesh", "mesh %q does not exist", req.Mesh)
				}
				return err
			}
			return nil
		},
		func(r *http.Request, req tokenRequest, validFor time.Duration) (string, error) {
			return toks.Generate(r.Context(), req.Mesh, req.Name, validFor)
		})
}

// zoneTokenHandler serves POST /tokens/zone on a global control plane: a
// token that one zone control plane presents to it. It needs
// GENERATE_ZONE_TOKEN, and is audited.
func zoneTokenHandler(checker *access.Checker, toks *tokens.Tokens, maxValidity time.Duration, logger *slog.Logger) http.Handler {
	return tokenEndpoint(maxValidity, logger,
		func(r *http.Request, req tokenRequest, v *api.ValidationError) error {
			audit.Describe(r.Context(), "generate-zone-token", zonesync.TypeZone, "", req.Zone)
			if err := checker.Check(r.Context(), apiserver.Caller(r), access.Request{Access: api.AccessGenerateZoneToken}); err != nil {
				return err
			}
			api.ValidateName(v, "zone", req.Zone)
			return nil
		},
		func(r *http.Request, req tokenRequest, validFor time.Duration) (string, error) {
			return toks.GenerateZone(r.Context(), req.Zone, validFor)
		})
}

// days renders d in days when it is a whole number of them ("365d"), as
// the flag and validFor are usually written.
func days(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}
