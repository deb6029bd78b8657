package node

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/aerie-social/aerie/blobs"
	"github.com/aerie-social/aerie/node/identity"
	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/repo"
)

// errMethodNotImplemented is returned for an NSID this node does not serve.
var errMethodNotImplemented = errors.New("method not implemented")

// xrpcErrors maps Go errors to XRPC errors; the first match wins. This table is the only place
// a Go error becomes an XRPC error.
var xrpcErrors = []struct {
	target error
	status int
	name   string
}{
	{errMethodNotImplemented, http.StatusNotImplemented, "MethodNotImplemented"},
	{xrpc.ErrInvalidSyntax, http.StatusBadRequest, "InvalidRequest"},
	{repo.ErrRecordNotFound, http.StatusBadRequest, "RecordNotFound"},
	{repo.ErrInvalidSwap, http.StatusBadRequest, "InvalidSwap"},
	{repo.ErrRepoNotFound, http.StatusBadRequest, "RepoNotFound"},
	{repo.ErrRecordExists, http.StatusBadRequest, "InvalidRequest"},
	{repo.ErrInvalidWrite, http.StatusBadRequest, "InvalidRequest"},
	{repo.ErrInvalidRecord, http.StatusBadRequest, "InvalidRequest"},
	{repo.ErrTooLarge, http.StatusBadRequest, "InvalidRequest"},
	{blobs.ErrBlobNotFound, http.StatusBadRequest, "BlobNotFound"},
	{blobs.ErrTooLarge, http.StatusRequestEntityTooLarge, "PayloadTooLarge"},
	{blobs.ErrQuotaExceeded, http.StatusRequestEntityTooLarge, "PayloadTooLarge"},
	{blobs.ErrInvalidMimeType, http.StatusBadRequest, "InvalidMimeType"},
	{blobs.ErrInvalidSize, http.StatusBadRequest, "InvalidSize"},
	{blobs.ErrAccountNotFound, http.StatusBadRequest, "RepoNotFound"},
	{blobs.ErrAccountDeactivated, http.StatusBadRequest, "RepoDeactivated"},
	{blobs.ErrAccountTakendown, http.StatusBadRequest, "RepoTakendown"},
	// Identity lookups, named as com.atproto.identity.* names them.
	{identity.ErrTombstoned, http.StatusBadRequest, "DidDeactivated"},
	{identity.ErrDIDNotFound, http.StatusBadRequest, "DidNotFound"},
	{identity.ErrHandleNotFound, http.StatusBadRequest, "HandleNotFound"},
	{identity.ErrUnsupportedDID, http.StatusBadRequest, "InvalidRequest"},
}

// writeError answers err as an XRPC error. An *xrpc.Error is shown as it is; a sentinel in
// xrpcErrors gets its name and status with the error's text; anything else is a 500 with a
// generic message while the log gets the whole chain and the request ID.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; there is nobody to answer and nothing went wrong.
		return
	}
	var xe *xrpc.Error
	if errors.As(err, &xe) {
		xrpc.WriteError(w, xe.Status, xe.Name, xe.Message)
		return
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		xrpc.WriteError(w, http.StatusRequestEntityTooLarge, "PayloadTooLarge", "request body is larger than the server accepts")
		return
	}
	for _, e := range xrpcErrors {
		if errors.Is(err, e.target) {
			xrpc.WriteError(w, e.status, e.name, err.Error())
			return
		}
	}
	log.ErrorContext(r.Context(), "request failed", "req_id", requestID(r.Context()), "path", r.URL.Path, "err", err)
	xrpc.WriteError(w, http.StatusInternalServerError, "InternalServerError", "Internal Server Error")
}
