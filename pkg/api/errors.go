package api

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one invalid field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError collects every problem of one resource so a user sees them
// all at once instead of fixing them one apply at a time.
type ValidationError struct {
	Causes []FieldError
}

// Addf records a problem with field.
func (v *ValidationError) Addf(field, format string, args ...any) {
	v.Causes = append(v.Causes, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// AddErr records err under field; a nested ValidationError keeps its own
// causes, prefixed with field.
func (v *ValidationError) AddErr(field string, err error) {
	if err == nil {
		return
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		for _, c := range ve.Causes {
			v.Causes = append(v.Causes, FieldError{Field: JoinPath(field, c.Field), Message: c.Message})
		}
		return
	}
	v.Causes = append(v.Causes, FieldError{Field: field, Message: err.Error()})
}

// OrNil returns v as an error, or nil when no cause was recorded.
func (v *ValidationError) OrNil() error {
	if v == nil || len(v.Causes) == 0 {
		return nil
	}
	return v
}

func (v *ValidationError) Error() string {
	parts := make([]string, len(v.Causes))
	for i, c := range v.Causes {
		if c.Field == "" {
			parts[i] = c.Message
		} else {
			parts[i] = c.Field + ": " + c.Message
		}
	}
	return strings.Join(parts, "; ")
}

// FieldErr returns a ValidationError with one cause.
func FieldErr(field, format string, args ...any) error {
	v := &ValidationError{}
	v.Addf(field, format, args...)
	return v
}

// PrefixErr roots every field of err at prefix; a plain error becomes a cause
// of prefix itself.
func PrefixErr(prefix string, err error) error {
	if err == nil {
		return nil
	}
	v := &ValidationError{}
	v.AddErr(prefix, err)
	return v
}

// JoinPath joins two field paths: "a" + "b" = "a.b", "a" + "[0]" = "a[0]".
func JoinPath(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	case strings.HasPrefix(b, "["):
		return a + b
	default:
		return a + "." + b
	}
}

// Fields lists the field paths err names, in order; nil when err is no
// ValidationError.
func Fields(err error) []string {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return nil
	}
	out := make([]string, len(ve.Causes))
	for i, c := range ve.Causes {
		out[i] = c.Field
	}
	return out
}
