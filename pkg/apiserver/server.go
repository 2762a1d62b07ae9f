// Package apiserver serves meshca's HTTP API. Its paths and bodies follow
// Kuma's REST API (index document at `/`, `/meshes/{name}`,
// `/meshes/{mesh}/secrets/{name}`, `/global-secrets/{name}`, list bodies with
// `total`/`items`/`next`, error bodies with `title`/`details`/`causes` and the
// RFC 7807 fields newer Kuma adds) closely enough that Kuma's own kumactl can
// be pointed at meshca for Universal resources.
//
// meshca extensions: `?dryRun=true` on PUT validates without changing
// anything; PUT bodies may be YAML as well as JSON.
//
// Endpoints added later (tokens, insights) are registered with
// [Server.Handle] or [Options.Extra] and answer with [WriteJSON] and
// [WriteError] so that every endpoint speaks the same shapes.
package apiserver

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"time"

	"meshca/pkg/access"
	"meshca/pkg/audit"
	"meshca/pkg/authn"
	"meshca/pkg/leader"
	"meshca/pkg/resources"
)

// BasedOnKuma is the Kuma version whose API this server follows (the
// kumactl version its conformance fixtures were recorded with).
const BasedOnKuma = "2.14.3"

// Product is the product line reported by the index document. kumactl
// refuses a control plane whose product is not its own ("this CLI is for
// Kuma but the control plane you're connected to is ..."), so meshca answers
// "Kuma": a statement that the API is Kuma's, not a claim to be Kuma.
// meshca's own identity is in Tagline and Version.
const Product = "Kuma"

// Tagline is the product name reported by the index document.
const Tagline = "meshca"

// ErrShuttingDown is the cause with which the control plane cancels the
// contexts of requests still running at the end of its shutdown grace (see
// http.Server.BaseContext): such a request answers 503 with Retry-After
// instead of having its connection dropped.
var ErrShuttingDown = errors.New("control plane shutting down")

// Options configure a Server. Every field is optional.
type Options struct {
	// Logger receives the access log (debug level) and internal errors.
	Logger *slog.Logger
	// Version is reported by the index document.
	Version string
	// Hostname is reported by the index document; default os.Hostname().
	Hostname string
	// InstanceID is reported by the index document; default Hostname.
	InstanceID string
	// ClusterID is reported by the index document.
	ClusterID string
	// Metrics, when set, serves GET /metrics (e.g. promhttp.HandlerFor(reg, ...)).
	Metrics http.Handler
	// Ready, when set, is asked by GET /readyz; a non-nil error answers 503.
	Ready func(ctx context.Context) error
	// Extra endpoints, keyed by http.ServeMux pattern ("POST /tokens/dataplane").
	Extra map[string]http.Handler
	// MaxBodyBytes bounds request bodies read by the resource endpoints
	// (larger ones get 413); 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// BodyBudgetBytes bounds the bytes of bodies being read and decoded at
	// once across requests (over it, 503 with Retry-After); 0 means
	// DefaultBodyBudgetBytes. It is raised to MaxBodyBytes if below.
	BodyBudgetBytes int64
	// GUI is the path of the web view, reported by the index document
	// (empty when there is none).
	GUI string
	// Mode is the control plane's mode (standalone, global, zone), reported
	// by the index document.
	Mode string
	// Authenticator says who calls (see HandlerFor); nil means loopback
	// clients of the plain listener are admin and tokens are refused.
	Authenticator *authn.Authenticator
	// Audit, when set, records every write (audit.Describe tells it what
	// an endpoint does).
	Audit *audit.Recorder
	// Access decides what authenticated callers may do; nil means roles and
	// bindings are read from the Manager the server exposes.
	Access *access.Checker
	// ClientRate and ClientBurst bound each client address's requests on
	// the HTTPS listener (per second, and at once); 0 means
	// DefaultClientRate and DefaultClientBurst, a negative ClientRate none.
	ClientRate  float64
	ClientBurst int
	// AllowRemotePlain lets non-loopback clients use the plain listener
	// (--api-allow-insecure-remote); loopback clients are still held to a
	// loopback Host header.
	AllowRemotePlain bool
	// ControlPlanes, when set, lists the control-plane instances sharing
	// the store; the index document carries the list for callers that
	// authenticated (it names the instances' addresses).
	ControlPlanes func(ctx context.Context) ([]leader.Instance, error)
	// PublicPaths answer anonymous GETs besides /, /healthz and /readyz:
	// static files that hold no data (the web view's page and scripts,
	// which then ask the API with the user's token).
	PublicPaths []string
}

// Server is meshca's HTTP API.
type Server struct {
	mgr     *resources.Manager
	opts    Options
	logger  *slog.Logger
	mux     *http.ServeMux
	bodies  *bodyBudget
	limiter *clientLimiter // nil: no per-client rate
	authn   *authn.Authenticator
	access  *access.Checker
}

// New returns a Server exposing mgr. It panics if an Extra pattern is
// invalid or conflicts with another, as http.ServeMux does.
func New(mgr *resources.Manager, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Hostname == "" {
		if h, err := os.Hostname(); err == nil {
			opts.Hostname = h
		}
	}
	if opts.InstanceID == "" {
		opts.InstanceID = opts.Hostname
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.BodyBudgetBytes <= 0 {
		opts.BodyBudgetBytes = DefaultBodyBudgetBytes
	}
	opts.BodyBudgetBytes = max(opts.BodyBudgetBytes, opts.MaxBodyBytes)
	s := &Server{mgr: mgr, opts: opts, logger: opts.Logger, mux: http.NewServeMux(), bodies: &bodyBudget{max: opts.BodyBudgetBytes}, authn: opts.Authenticator}
	s.access = opts.Access
	if s.access == nil {
		s.access = access.New(mgr)
	}
	if opts.ClientRate >= 0 {
		perSecond, burst := opts.ClientRate, opts.ClientBurst
		if perSecond == 0 {
			perSecond = DefaultClientRate
		}
		if burst <= 0 {
			burst = DefaultClientBurst
		}
		s.limiter = newClientLimiter(perSecond, burst, time.Now)
	}
	if s.authn == nil {
		s.authn = &authn.Authenticator{LocalhostIsAdmin: true}
	}
	s.routes()
	for pattern, h := range opts.Extra {
		s.Handle(pattern, h)
	}
	return s
}

// Handle registers an extra endpoint, with an http.ServeMux pattern such as
// "POST /tokens/dataplane" or "GET /meshes/{mesh}/dataplanes/{name}/_insight".
// It goes through the same access log and panic recovery as the built-in
// endpoints. It may be called before or while serving; it panics on a pattern
// that is invalid or conflicts with a registered one.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
}

// Handler returns the http.Handler serving the API on the plain listener
// (HandlerFor(authn.Plain)).
func (s *Server) Handler() http.Handler { return s.HandlerFor(authn.Plain) }

// Index is the document served at GET /, as Kuma serves it.
type Index struct {
	Hostname    string `json:"hostname"`
	Tagline     string `json:"tagline"`
	Product     string `json:"product"`
	Version     string `json:"version"`
	BasedOnKuma string `json:"basedOnKuma"`
	InstanceID  string `json:"instanceId"`
	ClusterID   string `json:"clusterId"`
	GUI         string `json:"gui"`
	// Mode is meshca's: standalone, global or zone.
	Mode string `json:"mode,omitempty"`
	// ControlPlanes is meshca's: the instances sharing the store (id,
	// address, leader or not and since when, last heartbeat, version), as
	// GET /control-planes lists them. Kuma's clients ignore it.
	ControlPlanes []leader.Instance `json:"controlPlanes,omitempty"`
}

// controlPlanesWait bounds how long GET / waits for the instance list: the
// index answers every kumactl command, and must answer with the database
// away too (without the list then).
const controlPlanesWait = 2 * time.Second

func (s *Server) routes() {
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		var cps []leader.Instance
		if s.opts.ControlPlanes != nil && !Caller(r).IsAnonymous() {
			ctx, cancel := context.WithTimeout(r.Context(), controlPlanesWait)
			var err error
			if cps, err = s.opts.ControlPlanes(ctx); err != nil {
				s.logger.Warn("index without the control-plane list", "error", err)
				cps = nil
			}
			cancel()
		}
		WriteJSON(w, http.StatusOK, Index{
			ControlPlanes: cps,
			Hostname:      s.opts.Hostname,
			Tagline:       Tagline,
			Product:       Product,
			Version:       s.opts.Version,
			BasedOnKuma:   BasedOnKuma,
			InstanceID:    s.opts.InstanceID,
			ClusterID:     s.opts.ClusterID,
			GUI:           s.opts.GUI,
			Mode:          s.opts.Mode,
		})
	})
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Ready != nil {
			if err := s.opts.Ready(r.Context()); err != nil {
				s.logger.Warn("not ready", "error", err)
				writeText(w, http.StatusServiceUnavailable, "not ready\n")
				return
			}
		}
		writeText(w, http.StatusOK, "ok\n")
	})
	if s.opts.Metrics != nil {
		s.mux.Handle("GET /metrics", s.opts.Metrics)
	}
	s.resourceRoutes()
	s.kumaAltRoutes()
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// statusWriter records the status of a response for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessLog logs every request at debug level. Only the path is logged: no
// query string, header or body (they may carry tokens or secret data).
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			s.logger.LogAttrs(r.Context(), slog.LevelDebug, "http request",
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.Int("status", status),
				slog.Duration("duration", time.Since(start)))
		}()
		next.ServeHTTP(sw, r)
	})
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			s.logger.Error("panic in HTTP handler", "method", r.Method, "path", r.URL.Path, "panic", v)
			WriteError(w, s.logger, errors.New("panic in handler"))
		}()
		next.ServeHTTP(w, r)
	})
}

// jsonFallback answers requests that match no pattern (404, 405) with a JSON
// error body instead of ServeMux's plain text.
func (s *Server) jsonFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &bufferedWriter{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusNotFound:
			WriteError(w, s.logger, &Error{Status: http.StatusNotFound, Title: "Not found",
				Detail: "no endpoint " + r.Method + " " + r.URL.Path})
		case http.StatusMethodNotAllowed:
			if allow := rec.header.Get("Allow"); allow != "" {
				w.Header().Set("Allow", allow)
			}
			WriteError(w, s.logger, &Error{Status: http.StatusMethodNotAllowed, Title: "Method not allowed",
				Detail: "method " + r.Method + " is not allowed on " + r.URL.Path})
		default:
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
			_, _ = w.Write(rec.body.Bytes())
		}
	})
}

// bufferedWriter captures the small responses of ServeMux's own handlers
// (not found, method not allowed, redirects).
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}
