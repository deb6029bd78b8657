package blobs

import (
	"net/http"
	"strconv"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/xrpc"
)

// Headers every served blob and image variant carries (atproto-reference §6.1).
const (
	// immutable: a CID names its bytes forever, and a variant is a pure function of them.
	cacheImmutable = "public, max-age=31536000, immutable"
	// sandbox: even a blob a browser renders as a document can run nothing and load
	// nothing.
	blobCSP = "default-src 'none'; sandbox"
)

// HandleUploadBlob serves com.atproto.repo.uploadBlob (POST) for did, the authenticated
// account, whose write permission the node has checked. It answers {"blob": Ref}.
// Errors: ErrTooLarge, ErrQuotaExceeded, ErrInvalidMimeType, or an *xrpc.Error.
func (s *Store) HandleUploadBlob(w http.ResponseWriter, r *http.Request, did syntax.DID) error {
	if r.ContentLength > s.cfg.MaxSize {
		// Refuse before reading a byte when the client says how much is coming.
		return ErrTooLarge
	}
	ref, err := s.Upload(r.Context(), did, r.Header.Get("Content-Type"), r.Body)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]Ref{"blob": ref})
	return nil
}

// HandleGetBlob serves com.atproto.sync.getBlob (GET ?did=&cid=): the committed blob's
// bytes with ETag = CID, immutable caching, Range support, Content-Type from the sniffed
// type, nosniff, a sandboxing CSP and a Content-Disposition that keeps HTML and SVG from
// rendering inline. Errors: ErrBlobNotFound, ErrAccountNotFound, ErrAccountDeactivated,
// ErrAccountTakendown, or an *xrpc.Error for bad parameters.
func (s *Store) HandleGetBlob(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	did, err := xrpc.ParseDID(q.Get("did"))
	if err != nil {
		return xrpc.InvalidRequest("did must be a DID")
	}
	c, err := xrpc.DecodeCID(q.Get("cid"))
	if err != nil {
		return xrpc.InvalidRequest("cid must be a CID")
	}
	if err := s.servable(r.Context(), did); err != nil {
		return err
	}
	// One spelling per blob on disk and in the ETag, whatever multibase the client used.
	key := c.String()
	f, info, err := s.openCommitted(r.Context(), did, key)
	if err != nil {
		return err
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", info.mime)
	h.Set("Content-Disposition", contentDisposition(info.mime, key))
	setImmutable(h, `"`+key+`"`)
	// ServeContent answers Range, If-Range and If-None-Match (against the ETag set above)
	// and, given an *os.File, sends the body with sendfile.
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

// setImmutable sets the headers shared by blobs and variants.
func setImmutable(h http.Header, etag string) {
	h.Set("ETag", etag)
	h.Set("Cache-Control", cacheImmutable)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", blobCSP)
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
}

// HandleListBlobs serves com.atproto.sync.listBlobs (GET ?did=&since=&limit=&cursor=):
// {"cids": [...], "cursor"?}. Errors: ErrAccountNotFound, ErrAccountDeactivated,
// ErrAccountTakendown, or an *xrpc.Error for bad parameters.
func (s *Store) HandleListBlobs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	did, err := xrpc.ParseDID(q.Get("did"))
	if err != nil {
		return xrpc.InvalidRequest("did must be a DID")
	}
	var since syntax.TID
	if v := q.Get("since"); v != "" {
		if since, err = xrpc.ParseTID(v); err != nil {
			return xrpc.InvalidRequest("since must be a TID (a repo rev)")
		}
	}
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxListLimit {
			return xrpc.InvalidRequest("limit must be an integer from 1 to %d", maxListLimit)
		}
	}
	cursor := q.Get("cursor")
	if cursor != "" {
		c, err := cid.Decode(cursor)
		if err != nil {
			return xrpc.InvalidRequest("cursor must be a CID from a previous page")
		}
		cursor = c.String()
	}
	if err := s.servable(r.Context(), did); err != nil {
		return err
	}
	cids, next, err := s.ListBlobs(r.Context(), did, since, cursor, limit)
	if err != nil {
		return err
	}
	out := struct {
		Cursor string   `json:"cursor,omitempty"`
		CIDs   []string `json:"cids"`
	}{Cursor: next, CIDs: make([]string, len(cids))}
	for i, c := range cids {
		out.CIDs[i] = c.String()
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}
