package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/go-chi/chi/v5"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/blobs"
	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/repo"
)

// BlobAccountState tells the blob store whether did is hosted here and may be served.
func (n *Node) BlobAccountState(ctx context.Context, did syntax.DID) (blobs.AccountState, error) {
	a, err := n.accountByDID(ctx, did.String())
	switch {
	case errors.Is(err, errAccountNotFound):
		return blobs.AccountNotHosted, nil
	case err != nil:
		return 0, err
	case a.TakedownRef != "":
		return blobs.AccountTakendown, nil
	case a.DeactivatedAt != "":
		return blobs.AccountDeactivated, nil
	}
	return blobs.AccountActive, nil
}

// ResolvePDS returns the PDS endpoint of a did:plc account, for fetching remote blobs.
func (n *Node) ResolvePDS(ctx context.Context, did syntax.DID) (string, error) {
	if did.Method() != "plc" {
		return "", fmt.Errorf("resolve PDS of %s: only did:plc is resolved here", did)
	}
	raw, err := n.plc.Document(ctx, did)
	if err != nil {
		return "", fmt.Errorf("resolve PDS of %s: %w", did, err)
	}
	var doc struct {
		Service []struct {
			ID              string `json:"id"`
			Type            string `json:"type"`
			ServiceEndpoint string `json:"serviceEndpoint"`
		} `json:"service"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return "", fmt.Errorf("resolve PDS of %s: %w", did, err)
	}
	for _, s := range doc.Service {
		if strings.HasSuffix(s.ID, "#atproto_pds") && s.Type == "AtprotoPersonalDataServer" {
			return s.ServiceEndpoint, nil
		}
	}
	return "", fmt.Errorf("resolve PDS of %s: no #atproto_pds service", did)
}

// checkRecordBlobs makes sure every blob a write references was uploaded by the account,
// with the declared type and size, before the commit makes it permanent.
func (n *Node) checkRecordBlobs(ctx context.Context, did syntax.DID, writes []repo.Write) error {
	for _, w := range writes {
		if w.Record == nil {
			continue
		}
		var err error
		walkBlobs(w.Record.Data, func(b atdata.Blob) {
			if err == nil {
				err = n.blobs.Check(ctx, did, cid.Cid(b.Ref), b.MimeType, b.Size)
			}
		})
		if err != nil {
			return fmt.Errorf("%s/%s: %w", w.Collection, w.RKey, err)
		}
	}
	return nil
}

// walkBlobs calls fn for every blob reference in a decoded record.
func walkBlobs(v any, fn func(atdata.Blob)) {
	switch v := v.(type) {
	case atdata.Blob:
		fn(v)
	case *atdata.Blob:
		fn(*v)
	case map[string]any:
		for _, x := range v {
			walkBlobs(x, fn)
		}
	case []any:
		for _, x := range v {
			walkBlobs(x, fn)
		}
	}
}

// afterCommitBlobs makes a commit's new blobs permanent and deletes the ones no record
// uses any more. A failure leaves the blob temporary, and GC adopts it, as it asks the
// repo whether a record references it before deleting.
func (n *Node) afterCommitBlobs(ctx context.Context, ev *repo.CommitEvent) {
	if len(ev.BlobsAdded) == 0 && len(ev.BlobsRemoved) == 0 {
		return
	}
	if err := n.blobs.Committed(ctx, ev.DID, ev.Rev, ev.BlobsAdded, ev.BlobsRemoved); err != nil {
		n.log.WarnContext(ctx, "update blob references", "did", ev.DID, "rev", ev.Rev, "err", err)
	}
}

func (n *Node) handleComAtprotoRepoUploadBlob(w http.ResponseWriter, r *http.Request) error {
	acct, err := n.writableRepo(r.Context(), authFrom(r.Context()).DID)
	if err != nil {
		return err
	}
	return n.blobs.HandleUploadBlob(w, r, syntax.DID(acct.DID))
}

// handleComAtprotoRepoListMissingBlobs lists blobs the account's records reference that
// are not in blob storage, as after importing a repository.
func (n *Node) handleComAtprotoRepoListMissingBlobs(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 500, 1, 1000)
	if err != nil {
		return xrpc.InvalidRequest("limit: %s", err)
	}
	did := syntax.DID(authFrom(ctx).DID)
	after := cid.Undef
	if c := q.Get("cursor"); c != "" {
		if after, err = cid.Decode(c); err != nil {
			return xrpc.InvalidRequest("cursor is not a CID")
		}
	}
	type missing struct {
		CID       string `json:"cid"`
		RecordURI string `json:"recordUri"`
	}
	out := struct {
		Cursor string    `json:"cursor,omitempty"`
		Blobs  []missing `json:"blobs"`
	}{Blobs: []missing{}}
	// Page through references until a page of missing ones is full or the refs end.
	for len(out.Blobs) < limit {
		refs, err := n.repos.ListBlobRefs(ctx, did, after, limit)
		if err != nil {
			return err
		}
		for _, ref := range refs {
			after = ref.Blob
			has, err := n.blobs.Has(ctx, did, ref.Blob)
			if err != nil {
				return err
			}
			if !has {
				out.Blobs = append(out.Blobs, missing{ref.Blob.String(), "at://" + did.String() + "/" + ref.Record})
				if len(out.Blobs) == limit {
					out.Cursor = ref.Blob.String()
					break
				}
			}
		}
		if len(refs) < limit {
			break
		}
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

// blobRoutes registers blob upload, serving and the image endpoint.
func (n *Node) blobRoutes(r chi.Router, x *xrpcMux) {
	x.procedure("com.atproto.repo.uploadBlob", n.withAuth(authAccess, n.handleComAtprotoRepoUploadBlob))
	x.query("com.atproto.repo.listMissingBlobs", n.withAuth(authAccess, n.handleComAtprotoRepoListMissingBlobs))
	x.query("com.atproto.sync.getBlob", n.blobs.HandleGetBlob)
	x.query("com.atproto.sync.listBlobs", n.blobs.HandleListBlobs)
	// Aerie's own admin methods, under the project's NSID authority (aerie.social).
	x.query("social.aerie.admin.listBlobUsage", n.withAuth(authAdmin, n.handleSocialAerieAdminListBlobUsage))
	x.procedure("social.aerie.admin.runBlobGC", n.withAuth(authAdmin, n.handleSocialAerieAdminRunBlobGC))
	r.Get("/img/*", n.blobs.HandleImage)
	r.Head("/img/*", n.blobs.HandleImage)
}

// handleSocialAerieAdminListBlobUsage lists blob usage per account (admin): the data
// behind `aerie account usage`.
func (n *Node) handleSocialAerieAdminListBlobUsage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 100, 1, 1000)
	if err != nil {
		return xrpc.InvalidRequest("limit: %s", err)
	}
	usage, cursor, err := n.blobs.ListUsage(r.Context(), q.Get("cursor"), limit)
	if err != nil {
		return err
	}
	out := map[string]any{"accounts": append([]blobs.Usage{}, usage...)}
	if cursor != "" {
		out["cursor"] = cursor
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

// handleSocialAerieAdminRunBlobGC runs the blob sweep now (admin) and reports what it
// freed: the data behind `aerie blobs gc`.
func (n *Node) handleSocialAerieAdminRunBlobGC(w http.ResponseWriter, r *http.Request) error {
	report, err := n.blobs.GC(r.Context())
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"report": report, "freedBytes": report.Freed()})
	return nil
}
