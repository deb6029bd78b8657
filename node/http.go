package node

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/aerie-social/aerie/node/xrpc"
)

// handlerFunc is an HTTP handler that returns its error for writeError to answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// xrpcKind is whether an XRPC method is a query (GET) or a procedure (POST).
type xrpcKind int

const (
	query xrpcKind = iota
	procedure
)

type xrpcMethod struct {
	kind    xrpcKind
	handler handlerFunc
}

// xrpcMux dispatches /xrpc/{nsid} by NSID so that unknown methods and wrong verbs get the
// answers the XRPC spec asks for, which chi's per-path routing cannot express.
type xrpcMux struct {
	log     *slog.Logger
	methods map[string]xrpcMethod
}

func (m *xrpcMux) query(nsid string, h handlerFunc)     { m.methods[nsid] = xrpcMethod{query, h} }
func (m *xrpcMux) procedure(nsid string, h handlerFunc) { m.methods[nsid] = xrpcMethod{procedure, h} }

func (m *xrpcMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	nsid := chi.URLParam(r, "nsid")
	method, ok := m.methods[nsid]
	if !ok {
		writeError(w, r, m.log, fmt.Errorf("%w: %s", errMethodNotImplemented, nsid))
		return
	}
	switch {
	case method.kind == query && (r.Method == http.MethodGet || r.Method == http.MethodHead):
	case method.kind == procedure && r.Method == http.MethodPost:
	default:
		want := "GET"
		if method.kind == procedure {
			want = "POST"
		}
		writeError(w, r, m.log, xrpc.InvalidRequest("%s takes %s, not %s", nsid, want, r.Method))
		return
	}
	if err := method.handler(w, r); err != nil {
		writeError(w, r, m.log, err)
	}
}

// decodeJSON reads a procedure's JSON body into v, bounded by limit. It answers a wrong
// content type, malformed JSON or trailing data with InvalidRequest and an oversize body
// with PayloadTooLarge.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return xrpc.InvalidRequest("body must be application/json, not %q", ct)
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			return err
		case errors.Is(err, io.EOF):
			return xrpc.InvalidRequest("request body is empty; expected a JSON object")
		default:
			return xrpc.InvalidRequest("malformed JSON body: %s", jsonErrorText(err))
		}
	}
	if dec.More() {
		return xrpc.InvalidRequest("malformed JSON body: data after the object")
	}
	return nil
}

// jsonErrorText turns a decoding error into text that names the field but not Go types.
func jsonErrorText(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return fmt.Sprintf("field %q must be %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
	}
	return err.Error()
}

func jsonKind(goKind string) string {
	switch {
	case goKind == "string":
		return "a string"
	case goKind == "bool":
		return "a boolean"
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "an integer"
	case goKind == "slice", goKind == "array":
		return "an array"
	default:
		return "an object"
	}
}

// statusWriter remembers the status and size for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (sw *statusWriter) WriteHeader(status int) {
	if sw.status == 0 {
		sw.status = status
	}
	sw.ResponseWriter.WriteHeader(status)
}

func (sw *statusWriter) Write(b []byte) (int, error) {
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	n, err := sw.ResponseWriter.Write(b)
	sw.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController and websocket upgrades reach the real writer.
func (sw *statusWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// requestMiddleware gives each request an ID, logs one line when it ends and turns a panic
// into a 500 whose body says nothing while the log gets the stack.
func requestMiddleware(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			id := newRequestID()
			r = r.WithContext(withRequestID(r.Context(), id))
			sw := &statusWriter{ResponseWriter: w}
			defer func() {
				if p := recover(); p != nil {
					if p == http.ErrAbortHandler {
						panic(p)
					}
					log.ErrorContext(r.Context(), "panic serving request", "req_id", id, "path", r.URL.Path,
						"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					if sw.status == 0 {
						xrpc.WriteError(sw, http.StatusInternalServerError, "InternalServerError", "Internal Server Error")
					}
				}
				attrs := []slog.Attr{slog.String("req_id", id), slog.String("method", r.Method),
					slog.Int("status", sw.status), slog.Duration("dur", time.Since(start)), slog.Int64("bytes", sw.bytes)}
				if nsid, ok := strings.CutPrefix(r.URL.Path, "/xrpc/"); ok {
					attrs = append(attrs, slog.String("nsid", nsid))
				} else {
					attrs = append(attrs, slog.String("path", r.URL.Path))
				}
				log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
			}()
			w.Header().Set("X-Request-Id", id)
			next.ServeHTTP(sw, r)
		})
	}
}

func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// corsHeaders are the request headers browsers must be allowed to send: the Bluesky web app
// and @atproto/api send authorization, proxying, labeler and DPoP headers.
const corsHeaders = "Authorization, Content-Type, Atproto-Proxy, Atproto-Accept-Labelers, DPoP, Atproto-Content-Labelers"

// corsExposed are the response headers clients read.
const corsExposed = "Atproto-Content-Labelers, Atproto-Repo-Rev, DPoP-Nonce, WWW-Authenticate, " +
	"RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy"

// cors lets any origin call the API, as the reference PDS does: the API is authenticated by
// bearer tokens, never by cookies, so a permissive policy leaks nothing.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", corsExposed)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
