package xrpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// ErrInvalidSyntax is wrapped by every Parse* and DecodeCID error: the input
// is not a well-formed value of the format asked for. The error mapper
// answers it with 400 InvalidRequest. The text names the format and is for
// logs only: indigo's part of it may quote the (untrusted) input.
var ErrInvalidSyntax = errors.New("invalid syntax")

// Error is an XRPC error a handler means to show the client: an HTTP status, an error name
// from the lexicon or the XRPC spec, and a human-readable message.
type Error struct {
	Status  int
	Name    string
	Message string
	// Err is the cause, kept for the log and errors.Is; it never reaches the client.
	Err error
}

// Error formats the error for logs.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s (%d): %s: %v", e.Name, e.Status, e.Message, e.Err)
	}
	return fmt.Sprintf("%s (%d): %s", e.Name, e.Status, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// InvalidRequest returns the generic 400 error with a formatted message.
func InvalidRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: fmt.Sprintf(format, args...)}
}

// Body is the JSON body of every XRPC error response.
type Body struct {
	Error   string `json:"error"`
	Message string `json:"message,omitempty"`
}

// WriteError writes an XRPC error response.
func WriteError(w http.ResponseWriter, status int, name, message string) {
	WriteJSON(w, status, Body{Error: name, Message: message})
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own response types reach here, so this is a programming error; answer
		// with a valid body rather than half a document.
		status = http.StatusInternalServerError
		b = []byte(`{"error":"InternalServerError","message":"Internal Server Error"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}
