package node

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/repo"
)

// carContentType is the media type of every CAR the sync API serves.
const carContentType = "application/vnd.ipld.car"

// servableRepo resolves a sync API "did" (or a repo API "repo") to a hosted account whose
// repository may be served: active, or the caller's own, or any for the admin.
func (n *Node) servableRepo(ctx context.Context, identifier string) (*account, syntax.DID, error) {
	if identifier == "" {
		return nil, "", xrpc.InvalidRequest("did is required")
	}
	acct, err := n.accountBy(ctx, identifier)
	if errors.Is(err, errAccountNotFound) {
		return nil, "", &xrpc.Error{Status: http.StatusBadRequest, Name: "RepoNotFound", Message: "Could not find repo for DID: " + identifier}
	}
	if err != nil {
		return nil, "", err
	}
	did, err := syntax.ParseDID(acct.DID)
	if err != nil {
		return nil, "", err
	}
	a := authFrom(ctx)
	if own := a != nil && (a.Admin || a.DID == acct.DID); !own {
		switch {
		case acct.TakedownRef != "":
			return nil, "", &xrpc.Error{Status: http.StatusBadRequest, Name: "RepoTakendown", Message: "Repo has been takendown: " + acct.DID}
		case acct.DeactivatedAt != "":
			return nil, "", &xrpc.Error{Status: http.StatusBadRequest, Name: "RepoDeactivated", Message: "Repo has been deactivated: " + acct.DID}
		}
	}
	return acct, did, nil
}

func (n *Node) handleComAtprotoSyncGetLatestCommit(w http.ResponseWriter, r *http.Request) error {
	_, did, err := n.servableRepo(r.Context(), r.URL.Query().Get("did"))
	if err != nil {
		return err
	}
	commit, rev, _, err := n.repos.Head(r.Context(), did)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]string{"cid": commit.String(), "rev": rev.String()})
	return nil
}

func (n *Node) handleComAtprotoSyncGetRepo(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	_, did, err := n.servableRepo(r.Context(), q.Get("did"))
	if err != nil {
		return err
	}
	var since syntax.TID
	if s := q.Get("since"); s != "" {
		if since, err = xrpc.ParseTID(s); err != nil {
			return xrpc.InvalidRequest("since must be a TID (a repo rev)")
		}
	}
	return n.streamCAR(w, r, func(w *lazyWriter) error { return n.repos.ExportCAR(r.Context(), did, since, w) })
}

func (n *Node) handleComAtprotoSyncGetRecord(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	_, did, err := n.servableRepo(r.Context(), q.Get("did"))
	if err != nil {
		return err
	}
	coll, rkey, err := recordParams(q)
	if err != nil {
		return err
	}
	return n.streamCAR(w, r, func(w *lazyWriter) error { return n.repos.RecordProof(r.Context(), did, coll, rkey, w) })
}

// maxGetBlocks bounds one getBlocks call.
const maxGetBlocks = 1000

func (n *Node) handleComAtprotoSyncGetBlocks(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	_, did, err := n.servableRepo(r.Context(), q.Get("did"))
	if err != nil {
		return err
	}
	raw := q["cids"]
	if len(raw) == 0 || len(raw) > maxGetBlocks {
		return xrpc.InvalidRequest("cids must list 1 to %d CIDs", maxGetBlocks)
	}
	cids := make([]cid.Cid, len(raw))
	for i, s := range raw {
		if cids[i], err = xrpc.DecodeCID(s); err != nil {
			return xrpc.InvalidRequest("cids[%d] is not a valid CID", i)
		}
	}
	return n.streamCAR(w, r, func(w *lazyWriter) error { return n.repos.GetBlocks(r.Context(), did, cids, w) })
}

// lazyWriter sets the CAR headers on the first write, so an error before any byte still
// becomes a JSON XRPC error.
type lazyWriter struct {
	w       http.ResponseWriter
	started bool
}

func (lw *lazyWriter) Write(b []byte) (int, error) {
	if !lw.started {
		lw.started = true
		lw.w.Header().Set("Content-Type", carContentType)
		lw.w.WriteHeader(http.StatusOK)
	}
	return lw.w.Write(b)
}

func (n *Node) streamCAR(w http.ResponseWriter, r *http.Request, write func(*lazyWriter) error) error {
	lw := &lazyWriter{w: w}
	err := write(lw)
	if err != nil && lw.started {
		// Mid-stream the status is sent; the client sees a truncated CAR and the log says why.
		n.log.ErrorContext(r.Context(), "CAR stream failed", "req_id", requestID(r.Context()), "err", err)
		return nil
	}
	return err
}

func (n *Node) handleComAtprotoSyncGetRepoStatus(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	acct, err := n.accountBy(ctx, r.URL.Query().Get("did"))
	if errors.Is(err, errAccountNotFound) {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "RepoNotFound", Message: "Could not find repo"}
	}
	if err != nil {
		return err
	}
	out := map[string]any{"did": acct.DID, "active": acct.Active()}
	if s := acct.Status(); s != "" {
		out["status"] = s
	} else if did, err := syntax.ParseDID(acct.DID); err == nil {
		if _, rev, _, err := n.repos.Head(ctx, did); err == nil {
			out["rev"] = rev.String()
		}
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (n *Node) handleComAtprotoSyncListRepos(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 500, 1, 1000)
	if err != nil {
		return xrpc.InvalidRequest("limit: %s", err)
	}
	var accts []*account
	err = n.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT "+accountColumns+" FROM account WHERE did > ? ORDER BY did LIMIT ?", q.Get("cursor"), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			a, err := scanAccount(rows)
			if err != nil {
				return err
			}
			accts = append(accts, a)
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	repos := []map[string]any{}
	for _, a := range accts {
		did, err := syntax.ParseDID(a.DID)
		if err != nil {
			continue
		}
		commit, rev, _, err := n.repos.Head(ctx, did)
		if err != nil {
			// An account whose repo is gone (mid-deletion) is not listed.
			continue
		}
		entry := map[string]any{"did": a.DID, "head": commit.String(), "rev": rev.String(), "active": a.Active()}
		if s := a.Status(); s != "" {
			entry["status"] = s
		}
		repos = append(repos, entry)
	}
	out := map[string]any{"repos": repos}
	if len(accts) == limit {
		out["cursor"] = accts[len(accts)-1].DID
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

// intParam parses an optional integer query parameter within [lo, hi].
func intParam(s string, def, lo, hi int) (int, error) {
	if s == "" {
		return def, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		return 0, errors.New("must be an integer from " + strconv.Itoa(lo) + " to " + strconv.Itoa(hi))
	}
	return v, nil
}

func (n *Node) handleComAtprotoRepoGetRecord(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	ctx := r.Context()
	acct, did, err := n.servableRepo(ctx, q.Get("repo"))
	if err != nil {
		return err
	}
	coll, rkey, err := recordParams(q)
	if err != nil {
		return err
	}
	c, data, err := n.repos.GetRecord(ctx, did, coll, rkey)
	if err != nil {
		return err
	}
	if want := q.Get("cid"); want != "" && want != c.String() {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "RecordNotFound", Message: "Could not locate record with that CID"}
	}
	value, err := repo.RecordJSON(data)
	if err != nil {
		return err
	}
	writeRecordJSON(w, "at://"+acct.DID+"/"+coll.String()+"/"+rkey.String(), c.String(), value)
	return nil
}

// writeRecordJSON writes {uri, cid, value} with value as the record's JSON bytes verbatim.
func writeRecordJSON(w http.ResponseWriter, uri, c string, value []byte) {
	xrpc.WriteJSON(w, http.StatusOK, struct {
		URI   string          `json:"uri"`
		CID   string          `json:"cid"`
		Value json.RawMessage `json:"value"`
	}{uri, c, value})
}

func (n *Node) handleComAtprotoRepoListRecords(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	ctx := r.Context()
	acct, did, err := n.servableRepo(ctx, q.Get("repo"))
	if err != nil {
		return err
	}
	coll, err := xrpc.ParseNSID(q.Get("collection"))
	if err != nil {
		return xrpc.InvalidRequest("invalid collection")
	}
	limit, err := intParam(q.Get("limit"), 50, 1, 100)
	if err != nil {
		return xrpc.InvalidRequest("limit: %s", err)
	}
	reverse := q.Get("reverse") == "true"
	recs, cursor, err := n.repos.ListRecords(ctx, did, coll, q.Get("cursor"), limit, reverse)
	if err != nil {
		return err
	}
	type item struct {
		URI   string          `json:"uri"`
		CID   string          `json:"cid"`
		Value json.RawMessage `json:"value"`
	}
	out := struct {
		Cursor  string `json:"cursor,omitempty"`
		Records []item `json:"records"`
	}{Cursor: cursor, Records: make([]item, 0, len(recs))}
	for _, rec := range recs {
		value, err := repo.RecordJSON(rec.CBOR)
		if err != nil {
			return err
		}
		out.Records = append(out.Records, item{"at://" + acct.DID + "/" + coll.String() + "/" + rec.RKey.String(), rec.CID.String(), value})
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (n *Node) handleComAtprotoRepoDescribeRepo(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	acct, did, err := n.servableRepo(ctx, r.URL.Query().Get("repo"))
	if err != nil {
		return err
	}
	colls, err := n.repos.Describe(ctx, did)
	if err != nil {
		return err
	}
	names := make([]string, len(colls))
	for i, c := range colls {
		names[i] = c.String()
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{
		"handle": acct.Handle, "did": acct.DID, "didDoc": n.didDocument(ctx, acct.DID),
		"collections": names, "handleIsCorrect": true,
	})
	return nil
}

// recordParams parses the collection and rkey query parameters that name one record.
func recordParams(q url.Values) (syntax.NSID, syntax.RecordKey, error) {
	coll, err := xrpc.ParseNSID(q.Get("collection"))
	if err != nil {
		return "", "", xrpc.InvalidRequest("invalid collection %q", q.Get("collection"))
	}
	rkey, err := xrpc.ParseRecordKey(q.Get("rkey"))
	if err != nil {
		return "", "", xrpc.InvalidRequest("invalid rkey %q", q.Get("rkey"))
	}
	return coll, rkey, nil
}
