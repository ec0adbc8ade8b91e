package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/membrane-net/membrane/api/models"
)

// MaxBodyBytes bounds request bodies; past it the answer is 413.
const MaxBodyBytes = 1 << 20

// StatusError is an error with the HTTP status it should be answered with.
// Cells return these from their handlers' logic; anything else is a 500.
type StatusError struct {
	Code int
	Err  error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

// Errorf builds a StatusError.
func Errorf(code int, format string, args ...any) error {
	return &StatusError{Code: code, Err: fmt.Errorf(format, args...)}
}

// WithStatus wraps err with a status code (nil stays nil).
func WithStatus(code int, err error) error {
	if err == nil {
		return nil
	}
	return &StatusError{Code: code, Err: err}
}

// StatusOf returns the HTTP status err should be answered with.
func StatusOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return http.StatusInternalServerError
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError answers with the models.Error for err.
func WriteError(w http.ResponseWriter, err error) {
	code := StatusOf(err)
	WriteJSON(w, code, models.Error{Code: code, Message: err.Error()})
}

// DecodeJSON reads a JSON body into v: at most MaxBodyBytes (413 past it),
// unknown fields rejected with a 400 naming the field, a single document.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if mbe := new(http.MaxBytesError); errors.As(err, &mbe) {
			return decodeError(err)
		}
		return Errorf(http.StatusBadRequest, "invalid JSON body: more than one JSON document")
	}
	return nil
}

func decodeError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return Errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return Errorf(http.StatusBadRequest, "empty request body: a JSON document is required")
	case errors.As(err, &se):
		return Errorf(http.StatusBadRequest, "invalid JSON at offset %d: %v", se.Offset, se)
	case errors.As(err, &te):
		return Errorf(http.StatusBadRequest, "invalid JSON: field %q must be %s, not %s", te.Field, te.Type, te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return Errorf(http.StatusBadRequest, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return Errorf(http.StatusBadRequest, "invalid JSON body: %v", err)
}

// Handle adapts a function returning (value, status, error) to an
// http.Handler: errors become models.Error answers.
func Handle(fn func(w http.ResponseWriter, r *http.Request) (any, int, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, code, err := fn(w, r)
		if err != nil {
			WriteError(w, err)
			return
		}
		if code == http.StatusNoContent {
			w.WriteHeader(code)
			return
		}
		WriteJSON(w, code, v)
	})
}
