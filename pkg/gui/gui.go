package gui

import (
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"meshca/pkg/api"
	"meshca/pkg/apiserver"
	"meshca/pkg/ca"
	"meshca/pkg/identity"
)

//go:embed assets
var assets embed.FS

// Source is what the pages read: the identity manager.
type Source interface {
	MeshStates() []identity.MeshState
	Summaries(mesh string) []identity.DataplaneSummary
	Summary(mesh, name string) (identity.DataplaneSummary, bool)
	Insight(mesh, name string) (identity.Insight, bool)
	// Certificates returns the chain and trust bundle only: the web view
	// never handles a private key.
	Certificates(mesh, name string) (chainPEM, bundlePEM []byte, ok bool)
}

// Backends finds a CA backend by type (the control plane's *ca.Registry).
type Backends interface {
	Get(typ string) (ca.Backend, error)
}

// Options configure the web view.
type Options struct {
	Source   Source
	Backends Backends
	Logger   *slog.Logger
	Now      func() time.Time
	// PricePerCertificate is the default price (USD) of one ACM PCA
	// certificate in the cost projection; 0 means DefaultPricePerCertificate.
	PricePerCertificate float64
}

// Path is where the web view is served.
const Path = "/gui/"

// PublicPaths are the web view's static files, which hold no data: they
// load without credentials, and the page then calls the JSON endpoints
// with the user token it is given (on the HTTPS listener) or none (on the
// plain loopback listener).
var PublicPaths = []string{"/gui", "/gui/", "/gui/app.js", "/gui/app.css"}

// Handler serves the web view.
type Handler struct {
	opts Options
}

// New returns the web view.
func New(opts Options) *Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PricePerCertificate <= 0 {
		opts.PricePerCertificate = DefaultPricePerCertificate
	}
	return &Handler{opts: opts}
}

// Routes returns the endpoints to register on the API server, keyed by
// http.ServeMux pattern.
func (h *Handler) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /gui":                              http.RedirectHandler(Path, http.StatusMovedPermanently),
		"GET /gui/":                             http.HandlerFunc(h.static),
		"GET /gui/api/meshes":                   http.HandlerFunc(h.meshes),
		"GET /gui/api/meshes/{mesh}/dataplanes": http.HandlerFunc(h.dataplanes),
		"GET /gui/api/meshes/{mesh}/dataplanes/{name}": http.HandlerFunc(h.dataplane),
		"GET /gui/api/meshes/{mesh}/timeline":          http.HandlerFunc(h.timeline),
		"GET /gui/api/meshes/{mesh}/budget":            http.HandlerFunc(h.budget),
		"GET /meshes/{mesh}/_overview":                 http.HandlerFunc(h.overview),
	}
}

// static serves the embedded assets; any other path under /gui/ is a page
// of the single-page app and gets index.html.
func (h *Handler) static(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(path.Clean(r.URL.Path), "/gui")
	name = strings.TrimPrefix(name, "/")
	if name == "" || strings.HasPrefix(name, "api/") {
		name = "index.html"
	}
	body, err := fs.ReadFile(assets, "assets/"+name)
	if err != nil {
		if strings.HasPrefix(r.URL.Path, "/gui/api/") {
			apiserver.WriteError(w, h.opts.Logger, &apiserver.Error{Status: http.StatusNotFound, Title: "Not found", Detail: "no endpoint GET " + r.URL.Path})
			return
		}
		name = "index.html"
		body, _ = fs.ReadFile(assets, "assets/index.html")
	}
	switch path.Ext(name) {
	case ".html":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".svg":
		w.Header().Set("Content-Type", "image/svg+xml")
	}
	// The page and its data come from this server only; nothing inline.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(body)
}

// meshState returns the named mesh, or a 404 error naming it.
func (h *Handler) meshState(name string) (identity.MeshState, error) {
	for _, ms := range h.opts.Source.MeshStates() {
		if ms.Name == name {
			return ms, nil
		}
	}
	return identity.MeshState{}, &apiserver.Error{Status: http.StatusNotFound, Title: "Not found",
		Detail: "mesh \"" + name + "\" does not exist", Causes: []api.FieldError{{Field: "mesh", Message: "no mesh named \"" + name + "\""}}}
}
