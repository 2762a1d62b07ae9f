package controlplane

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/resources"
	"meshca/pkg/store"
	"meshca/pkg/tokens"
)

// tokenRequest is the body of POST /tokens/dataplane, as Kuma takes it.
type tokenRequest struct {
	Name     string            `json:"name"`
	Mesh     string            `json:"mesh"`
	Tags     map[string]string `json:"tags,omitempty"`
	Type     string            `json:"type,omitempty"`
	ValidFor string            `json:"validFor,omitempty"`
}

// tokenHandler serves POST /tokens/dataplane. It refuses a mesh or name
// that is not a valid resource name and a validFor beyond maxValidity (0:
// tokens.DefaultValidity); without validFor a token lives
// min(tokens.DefaultValidity, maxValidity).
func tokenHandler(mgr *resources.Manager, toks *tokens.Tokens, maxValidity time.Duration, logger *slog.Logger) http.Handler {
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
		// The name is a Dataplane's: a token for a name no Dataplane can
		// have authenticates nothing, and would be a confusing credential.
		v := &api.ValidationError{}
		api.ValidateMeshName(v, "mesh", req.Mesh)
		api.ValidateName(v, "name", req.Name)
		validFor := min(tokens.DefaultValidity, maxValidity)
		if req.ValidFor != "" {
			if validFor, err = api.ParseDuration(req.ValidFor); err != nil {
				v.AddErr("validFor", err)
			} else if validFor > maxValidity {
				v.Addf("validFor", "%s is longer than this control plane allows: at most %s (meshca-cp run --max-token-validity)", req.ValidFor, days(maxValidity))
			}
		}
		if err := v.OrNil(); err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		if _, err := mgr.Get(r.Context(), api.TypeMesh, "", req.Mesh); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				err = api.FieldErr("mesh", "mesh %q does not exist", req.Mesh)
			}
			apiserver.WriteError(w, logger, err)
			return
		}
		tok, err := toks.Generate(r.Context(), req.Mesh, req.Name, validFor)
		if err != nil {
			apiserver.WriteError(w, logger, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, tok)
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
