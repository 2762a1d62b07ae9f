package apiserver

import (
	"errors"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"meshca/pkg/audit"
	"meshca/pkg/authn"
)

// Titles of the answers of the request screen.
const (
	TitleUnauthorized     = "Unauthorized"
	TitleForbidden        = "Access Denied"
	TitleUnsupportedMedia = "Unsupported Media Type"
)

// HandlerFor returns the http.Handler serving the API on listener l. Every
// request is screened before it reaches an endpoint:
//
//   - on the Plain listener, the Host header must be a loopback name or
//     address (a page that rebinds its own DNS name to 127.0.0.1 must not
//     reach a loopback admin); with Options.AllowRemotePlain only requests
//     from loopback peers are held to that;
//   - POST, PUT and PATCH (and a DELETE with a body) must send a JSON or YAML
//     Content-Type, which a browser cannot send cross-site without a CORS
//     preflight, and no CORS header is ever sent to allow one;
//   - the caller is authenticated (Options.Authenticator): bad credentials
//     are 401; an anonymous caller gets 401 for everything but GET /,
//     /healthz, /readyz and Options.PublicPaths.
//
// The identity is attached to the request's context (authn.FromContext).
//
// On the HTTPS listener each client address is held to its own request
// rate first (Options.ClientRate; over it, 429 with Retry-After).
func (s *Server) HandlerFor(l authn.Listener) http.Handler {
	h := s.screen(l, s.jsonFallback(s.mux))
	if l == authn.HTTPS {
		h = s.rateLimited(h)
	}
	return s.accessLog(s.recoverPanics(h))
}

// publicPaths answer anonymous GETs.
var publicPaths = map[string]bool{"/": true, "/healthz": true, "/readyz": true}

func (s *Server) screen(l authn.Listener, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l == authn.Plain && !authn.IsLoopbackHost(r.Host) &&
			(!s.opts.AllowRemotePlain || authn.IsLoopbackAddr(r.RemoteAddr)) {
			WriteError(w, s.logger, &Error{Status: http.StatusForbidden, Title: TitleForbidden,
				Detail: "the plain HTTP API answers only requests addressed to localhost or a loopback address (Host header); use the HTTPS API with a user token from elsewhere"})
			return
		}
		if needsContentType(r) && !acceptedContentType(r.Header.Get("Content-Type")) {
			WriteError(w, s.logger, &Error{Status: http.StatusUnsupportedMediaType, Title: TitleUnsupportedMedia,
				Detail: "Content-Type must be application/json or application/yaml"})
			return
		}
		id, err := s.authn.Authenticate(r, l)
		if s.opts.Audit != nil && isWrite(r.Method) {
			aw := &statusWriter{ResponseWriter: w}
			e := newEntry(r, id, err)
			w, r = aw, r.WithContext(audit.NewContext(r.Context(), e))
			defer func() { s.opts.Audit.Record(r.Context(), finishEntry(aw, e)) }()
		}
		if err != nil {
			if errors.Is(err, authn.ErrUnauthenticated) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="meshca"`)
				WriteError(w, s.logger, &Error{Status: http.StatusUnauthorized, Title: TitleUnauthorized, Detail: err.Error()})
				return
			}
			WriteError(w, s.logger, err)
			return
		}
		if id.IsAnonymous() && !(r.Method == http.MethodGet && (publicPaths[r.URL.Path] || slices.Contains(s.opts.PublicPaths, r.URL.Path))) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshca"`)
			WriteError(w, s.logger, &Error{Status: http.StatusUnauthorized, Title: TitleUnauthorized,
				Detail: "authentication required: send \"Authorization: Bearer <user token>\" (meshctl generate user-token)"})
			return
		}
		next.ServeHTTP(w, r.WithContext(authn.NewContext(r.Context(), id)))
	})
}

func needsContentType(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return true
	case http.MethodDelete:
		return r.ContentLength > 0 || len(r.TransferEncoding) > 0
	}
	return false
}

func acceptedContentType(v string) bool {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return false
	}
	switch mt {
	case "application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml":
		return true
	}
	return strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

func isWrite(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// newEntry starts the audit entry of the write r, made by id (or refused
// with authErr). Handlers say what the write is with audit.Describe;
// otherwise the method and path are kept.
func newEntry(r *http.Request, id authn.Identity, authErr error) *audit.Entry {
	e := &audit.Entry{Time: time.Now().UTC(), User: id.Name, Groups: id.Groups, Via: id.Via, Action: r.Method, Path: r.URL.Path}
	if authErr != nil {
		e.User, e.Groups, e.Via = "", nil, "invalid-credentials"
	}
	return e
}

// finishEntry completes e with the status of the answer w recorded.
func finishEntry(w *statusWriter, e *audit.Entry) audit.Entry {
	e.Status = w.status
	if e.Status == 0 {
		e.Status = http.StatusOK
	}
	switch {
	case e.Status < 300:
		e.Result = "ok"
	case e.Status == http.StatusUnauthorized:
		e.Result = "unauthenticated"
	case e.Status == http.StatusForbidden:
		e.Result = "denied"
	default:
		e.Result = "failed"
	}
	return *e
}
