package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"meshca/pkg/access"
	"meshca/pkg/api"
	"meshca/pkg/resources"
	"meshca/pkg/store"
)

// ErrorType is the RFC 7807 "type" of every error body, as Kuma sends it.
const ErrorType = "/std-errors"

// Titles and details of the error bodies, as Kuma words them.
const (
	TitleInvalid     = "Could not process a resource"
	DetailInvalid    = "Resource is not valid"
	TitleNotFound    = "Could not find a resource"
	TitleConflict    = "Conflict"
	TitleInUse       = "Resource is in use"
	TitleReadOnly    = "Access denied"
	DetailReadOnly   = "resource is synced from the global control plane: edit it there"
	TitleTooLarge    = "Request body too large"
	TitleInternal    = "Internal Server Error"
	DetailInternal   = "an internal error occurred: see the control plane log"
	TitleBadRequest  = "Bad Request"
	TitleUnavailable = "Service Unavailable"
)

// Cause is one field-level problem, in Kuma's legacy `causes` list.
type Cause struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// InvalidParameter is one field-level problem, in the RFC 7807 shape newer
// Kuma versions send.
type InvalidParameter struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// ErrorBody is the JSON body of every error answer. It carries both Kuma's
// legacy fields (title, details, causes) and the RFC 7807 ones newer Kuma
// versions send (type, status, detail, invalid_parameters).
type ErrorBody struct {
	Type              string             `json:"type"`
	Status            int                `json:"status"`
	Title             string             `json:"title"`
	Detail            string             `json:"detail"`
	InvalidParameters []InvalidParameter `json:"invalid_parameters,omitempty"`
	Details           string             `json:"details"`
	Causes            []Cause            `json:"causes,omitempty"`
}

// Error is an error with an explicit HTTP answer. Handlers (and extension
// endpoints) may return one to WriteError to control the status, title and
// detail; Err, if set, is kept for errors.Is/As and logging but never shown.
type Error struct {
	Status int
	Title  string
	Detail string
	Causes []api.FieldError
	Err    error
}

func (e *Error) Error() string {
	msg := e.Title
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if len(e.Causes) > 0 {
		msg += " (" + (&api.ValidationError{Causes: e.Causes}).Error() + ")"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// BadRequest returns a 400 Error; field may be empty.
func BadRequest(field, message string) *Error {
	e := &Error{Status: http.StatusBadRequest, Title: TitleBadRequest, Detail: message}
	if field != "" {
		e.Causes = []api.FieldError{{Field: field, Message: message}}
	}
	return e
}

// WriteJSON writes v as a JSON body with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only programming errors get here (unsupported types).
		body = []byte(`{"type":"/std-errors","status":500,"title":"Internal Server Error","detail":"could not encode the response","details":"could not encode the response"}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// WriteError answers err in Kuma's error shape:
//
//   - *Error: its own status, title, detail and causes;
//   - *api.ValidationError: 400 with one cause per invalid field;
//   - *resources.InUseError: 400, the message as detail and as a cause;
//   - resources.ErrReadOnly: 403;
//   - *http.MaxBytesError: 413;
//   - store.ErrStorageFull: 507;
//   - store.ErrUnavailable: 503;
//   - store.ErrNotFound: 404; store.ErrConflict, store.ErrAlreadyExists: 409;
//   - anything else: 500 with a generic message; err is logged, not shown.
func WriteError(w http.ResponseWriter, logger *slog.Logger, err error) {
	e := classify(err)
	if errors.Is(err, store.ErrUnavailable) {
		w.Header().Set("Retry-After", "1")
	}
	if e.Status >= 500 {
		if logger == nil {
			logger = slog.Default()
		}
		switch {
		case errors.Is(err, context.Canceled):
			logger.Debug("request canceled", "error", err)
		case errors.Is(err, errBodyBudget):
			// Load shedding: one line per refused request would add to the
			// load it sheds.
			logger.Debug("request refused: body budget full")
		case errors.Is(err, store.ErrUnavailable):
			logger.Warn("request refused: the database is unavailable", "error", err)
		default:
			logger.Error("request failed", "error", err)
		}
	}
	body := ErrorBody{
		Type:    ErrorType,
		Status:  e.Status,
		Title:   e.Title,
		Detail:  e.Detail,
		Details: e.Detail,
	}
	for _, c := range e.Causes {
		body.Causes = append(body.Causes, Cause(c))
		body.InvalidParameters = append(body.InvalidParameters, InvalidParameter{Field: c.Field, Reason: c.Message})
	}
	WriteJSON(w, e.Status, body)
}

func classify(err error) *Error {
	var (
		e   *Error
		ve  *api.ValidationError
		iue *resources.InUseError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &e):
		out := *e
		if out.Status == 0 {
			out.Status = http.StatusInternalServerError
		}
		if out.Title == "" {
			out.Title = http.StatusText(out.Status)
		}
		if out.Detail == "" {
			// kumactl treats a body as an error only when details is set.
			out.Detail = out.Title
		}
		return &out
	case access.IsDenied(err):
		return &Error{Status: http.StatusForbidden, Title: TitleForbidden, Detail: err.Error()}
	case errors.As(err, &ve):
		return &Error{Status: http.StatusBadRequest, Title: TitleInvalid, Detail: DetailInvalid, Causes: ve.Causes}
	case errors.As(err, &iue):
		return &Error{Status: http.StatusBadRequest, Title: TitleInUse, Detail: iue.Msg,
			Causes: []api.FieldError{{Field: "", Message: iue.Msg}}}
	case errors.Is(err, resources.ErrReadOnly):
		detail := DetailReadOnly
		if msg, ok := strings.CutPrefix(err.Error(), resources.ErrReadOnly.Error()+": "); ok {
			detail = msg // the guard says who owns it and where to change it
		}
		return &Error{Status: http.StatusForbidden, Title: TitleReadOnly, Detail: detail}
	case errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Title: TitleTooLarge,
			Detail: "the request body must be at most " + formatBytes(mbe.Limit)}
	case errors.Is(err, store.ErrStorageFull):
		return &Error{Status: http.StatusInsufficientStorage, Title: "Insufficient storage",
			Detail: "the store's disk is full: writes are refused until space is freed; reads and certificate delivery go on"}
	case errors.Is(err, store.ErrUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Title: "Service unavailable",
			Detail: "the control plane's database is unavailable: retry shortly; certificate delivery goes on"}
	case errors.Is(err, store.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Title: TitleNotFound, Detail: err.Error()}
	case errors.Is(err, store.ErrConflict):
		return &Error{Status: http.StatusConflict, Title: TitleConflict,
			Detail: "the resource was modified concurrently: read it again and retry"}
	case errors.Is(err, store.ErrAlreadyExists):
		return &Error{Status: http.StatusConflict, Title: TitleConflict, Detail: "the resource already exists"}
	default:
		return &Error{Status: http.StatusInternalServerError, Title: TitleInternal, Detail: DetailInternal}
	}
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	default:
		return strconv.FormatInt(n, 10) + " bytes"
	}
}
