package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Entry is one audited action.
type Entry struct {
	Time   time.Time `json:"time"`
	User   string    `json:"user"`
	Groups []string  `json:"groups"`
	// Via is how the user was identified (localhost, user-token, none).
	Via string `json:"via"`
	// Action is create, update, delete, generate-dataplane-token,
	// generate-user-token, or the HTTP method of another write.
	Action string `json:"action"`
	Type   string `json:"type,omitempty"`
	Mesh   string `json:"mesh,omitempty"`
	Name   string `json:"name,omitempty"`
	// Path is the API path, for writes no handler described.
	Path   string `json:"path"`
	DryRun bool   `json:"dryRun,omitempty"`
	// Result is ok, denied (403), unauthenticated (401) or failed.
	Result string `json:"result"`
	Status int    `json:"status"`
}

// Recorder writes entries to a logger and, optionally, a file.
type Recorder struct {
	logger *slog.Logger
	mu     sync.Mutex
	file   io.WriteCloser
}

// New returns a Recorder logging to logger and, when path is not empty,
// appending JSON lines to the file at path (created 0600).
func New(logger *slog.Logger, path string) (*Recorder, error) {
	r := &Recorder{logger: logger}
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("--audit-log %q: %w", path, err)
		}
		r.file = f
	}
	return r, nil
}

// Close closes the audit file.
func (r *Recorder) Close() error {
	if r == nil || r.file == nil {
		return nil
	}
	return r.file.Close()
}

// Record writes e. A failure to write the file is logged, not returned:
// the action already happened.
func (r *Recorder) Record(ctx context.Context, e Entry) {
	if r == nil {
		return
	}
	r.logger.LogAttrs(ctx, slog.LevelInfo, "audit",
		slog.String("user", e.User), slog.Any("groups", e.Groups), slog.String("via", e.Via),
		slog.String("action", e.Action), slog.String("type", e.Type), slog.String("mesh", e.Mesh),
		slog.String("name", e.Name), slog.String("path", e.Path), slog.Bool("dryRun", e.DryRun),
		slog.String("result", e.Result), slog.Int("status", e.Status))
	if r.file == nil {
		return
	}
	line, err := json.Marshal(e)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.file.Write(append(line, '\n')); err != nil {
		r.logger.Error("could not write the audit log", "error", err)
	}
}

type ctxKey struct{}

// NewContext returns ctx carrying e, for handlers to describe what they do
// (Describe).
func NewContext(ctx context.Context, e *Entry) context.Context {
	return context.WithValue(ctx, ctxKey{}, e)
}

// Describe sets the action and resource of the entry ctx carries (if any).
func Describe(ctx context.Context, action, typ, mesh, name string) {
	if e, ok := ctx.Value(ctxKey{}).(*Entry); ok {
		e.Action, e.Type, e.Mesh, e.Name = action, typ, mesh, name
	}
}

// SetDryRun marks the entry ctx carries as a dry run.
func SetDryRun(ctx context.Context) {
	if e, ok := ctx.Value(ctxKey{}).(*Entry); ok {
		e.DryRun = true
	}
}
