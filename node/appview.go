package node

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/appview"
	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/repo"
)

// appviewRoutes mounts every app.bsky method of the local AppView, custom feeds included.
// The official app sends atproto-proxy: did:web:api.bsky.app#bsky_appview; those calls are
// answered here too, as this node is its users' AppView.
func (n *Node) appviewRoutes(x *xrpcMux) {
	for _, m := range append(n.appview.Methods(), n.appview.FeedMethods(n.feedDeps())...) {
		level := authOptional
		if m.Auth == appview.AuthRequired {
			level = authAccess
		}
		h := m.Handler
		wrapped := n.withAuth(level, func(w http.ResponseWriter, r *http.Request) error {
			if a := authFrom(r.Context()); a != nil && a.DID != "" {
				r = r.WithContext(appview.WithViewer(r.Context(), syntax.DID(a.DID)))
			}
			h(w, r)
			return nil
		})
		if m.Procedure {
			x.procedure(m.NSID, wrapped)
		} else {
			x.query(m.NSID, wrapped)
		}
	}
	x.query("app.bsky.actor.getPreferences", n.withAuth(authAccess, n.handleAppBskyActorGetPreferences))
	x.procedure("app.bsky.actor.putPreferences", n.withAuth(authAccess, n.handleAppBskyActorPutPreferences))
	x.procedure("social.aerie.admin.reindex", n.withAuth(authAdmin, n.handleSocialAerieAdminReindex))
}

// reindexLoop rebuilds the index entries of local repos that a #sync event marked (after a
// crash repair or an import), from the repos themselves.
func (n *Node) reindexLoop(ctx context.Context) error {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		n.reindexMarked(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// reindexMarked is one pass of reindexLoop.
func (n *Node) reindexMarked(ctx context.Context) {
	var after syntax.DID
	for {
		dids, err := n.appview.NeedsReindex(ctx, after, reindexPage)
		if err != nil {
			if ctx.Err() == nil {
				n.log.WarnContext(ctx, "list repos to reindex", "err", err)
			}
			return
		}
		for _, did := range dids {
			if ok, err := n.repos.Exists(ctx, did); err != nil || !ok {
				n.crawler.Resync(did) // not hosted here: fetch it from its own host
				continue
			}
			if err := n.appview.Reindex(ctx, did, n.repoRecords(ctx, did)); err != nil && ctx.Err() == nil {
				n.log.WarnContext(ctx, "reindex", "did", did, "err", err)
			}
		}
		if len(dids) < reindexPage {
			return
		}
		after = dids[len(dids)-1]
	}
}

// reindexPage is how many marked accounts reindexMarked reads at a time.
const reindexPage = 100

// repoRecords yields every record of a local repo, collection by collection.
func (n *Node) repoRecords(ctx context.Context, did syntax.DID) iter.Seq2[appview.RepoRecord, error] {
	return func(yield func(appview.RepoRecord, error) bool) {
		colls, err := n.repos.Describe(ctx, did)
		if err != nil {
			yield(appview.RepoRecord{}, err)
			return
		}
		for _, coll := range colls {
			cursor := ""
			for {
				recs, next, err := n.repos.ListRecords(ctx, did, coll, cursor, repo.MaxListLimit, false)
				if err != nil {
					yield(appview.RepoRecord{}, err)
					return
				}
				for _, r := range recs {
					if !yield(appview.RepoRecord{Collection: coll, RKey: r.RKey, CID: r.CID, CBOR: r.CBOR}, nil) {
						return
					}
				}
				if next == "" {
					break
				}
				cursor = next
			}
		}
	}
}

func (n *Node) handleAppBskyActorGetPreferences(w http.ResponseWriter, r *http.Request) error {
	prefs, err := n.repos.Preferences(r.Context(), syntax.DID(authFrom(r.Context()).DID))
	if err != nil {
		return err
	}
	if len(prefs) == 0 {
		prefs = []byte("[]")
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"preferences": json.RawMessage(prefs)})
	return nil
}

func (n *Node) handleAppBskyActorPutPreferences(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Preferences []map[string]any `json:"preferences"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	for i, p := range in.Preferences {
		if t, _ := p["$type"].(string); t == "" {
			return xrpc.InvalidRequest("preferences[%d] has no $type", i)
		}
	}
	prefs := in.Preferences
	if prefs == nil {
		prefs = []map[string]any{}
	}
	raw, err := json.Marshal(prefs)
	if err != nil {
		return err
	}
	if err := n.repos.PutPreferences(r.Context(), syntax.DID(authFrom(r.Context()).DID), raw); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleSocialAerieAdminReindex rebuilds the index entries of every local account from
// its repository (admin), streaming one progress line per account as plain text: the data
// behind `aerie reindex`. Reindexing an up-to-date account changes nothing.
func (n *Node) handleSocialAerieAdminReindex(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var dids []string
	cursor := ""
	for {
		var page []string
		err := n.db.Read(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, "SELECT did FROM account WHERE did > ? ORDER BY did LIMIT 1000", cursor)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var d string
				if err := rows.Scan(&d); err != nil {
					return err
				}
				page = append(page, d)
			}
			return rows.Err()
		})
		if err != nil {
			return err
		}
		dids = append(dids, page...)
		if len(page) < 1000 {
			break
		}
		cursor = page[len(page)-1]
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	flush := http.NewResponseController(w).Flush
	failed := 0
	for i, d := range dids {
		did := syntax.DID(d)
		records := 0
		counted := func(yield func(appview.RepoRecord, error) bool) {
			for rec, err := range n.repoRecords(ctx, did) {
				records++
				if !yield(rec, err) {
					return
				}
			}
		}
		status := "ok"
		if err := n.appview.Reindex(ctx, did, counted); err != nil {
			failed++
			status = "failed: " + err.Error()
			n.log.WarnContext(ctx, "reindex", "did", d, "err", err)
		}
		fmt.Fprintf(w, "[%d/%d] %s: %d records, %s\n", i+1, len(dids), d, records, status)
		flush()
	}
	fmt.Fprintf(w, "done: %d accounts reindexed, %d failed\n", len(dids)-failed, failed)
	return nil
}
