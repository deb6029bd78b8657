package node

import (
	"context"
	"database/sql"
	"errors"
	"iter"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/appview"
	"github.com/aerie-social/aerie/node/identity"
	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/relay"
	"github.com/aerie-social/aerie/repo"
)

// wantTimeout bounds the identity lookup and host checks of adding one account to the
// interest set; the backfill itself runs in the crawler's workers.
const wantTimeout = 30 * time.Second

// interestSweep is how often the interest set is checked against the index for accounts
// no longer followed or interacted with.
const interestSweep = time.Hour

// newCrawler builds the crawler over the node's sequencer and identity resolver.
func (n *Node) newCrawler() *relay.Crawler {
	cfg := n.cfg.Relay
	cfg.AllowPrivateNetwork = n.cfg.Net.AllowPrivateNetwork
	announce := ""
	if !n.cfg.IsLocal() {
		announce = n.cfg.Hostname
	} else if n.cfg.Net.AllowPrivateNetwork {
		// Two development nodes on one machine find each other by address.
		announce = n.ln.Addr().String()
	}
	return relay.NewCrawler(n.seq, cfg, relay.CrawlerDeps{
		Identities: n.ident.resolver,
		// No client timeout: it would cut the long-lived firehose streams; every request
		// carries a context deadline instead.
		HTTP:     identity.NewHTTPClient(n.cfg.Net.AllowPrivateNetwork, 0),
		IsLocal:  n.isLocal,
		Backfill: n.backfillRemote,
		Announce: announce,
	}, n.log)
}

// relayStreamServer serves subscribeRepos with every event, crawled ones included, for
// another AppView or relay that wants this node's view of its neighbourhood.
func (n *Node) relayStreamServer() *http.Server {
	n.relayStream = relay.NewFirehose(n.seq, relay.AllEvents, n.log)
	mux := http.NewServeMux()
	mux.Handle("GET /xrpc/com.atproto.sync.subscribeRepos", n.relayStream)
	mux.HandleFunc("GET /xrpc/_health", n.handleHealth)
	return &http.Server{
		Handler:           requestMiddleware(n.log)(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
}

// isLocal reports whether did has a repository on this node.
func (n *Node) isLocal(did string) bool {
	ok, err := n.repos.Exists(context.Background(), syntax.DID(did))
	return err == nil && ok
}

// backfillRemote makes the index hold exactly a remote repo the crawler fetched. The
// crawler sequenced a #sync for it first; waiting until the indexer has passed that event
// means every older event of the repo is applied before the snapshot replaces them.
func (n *Node) backfillRemote(ctx context.Context, did syntax.DID, syncSeq int64, v *repo.VerifiedRepo) error {
	for {
		err := n.appview.WaitForSeq(ctx, syncSeq)
		if err == nil {
			break
		}
		if !errors.Is(err, appview.ErrNotCaughtUp) {
			return err
		}
	}
	return n.appview.Reindex(ctx, did, func(yield func(appview.RepoRecord, error) bool) {
		for _, r := range v.Records {
			if !yield(appview.RepoRecord{Collection: r.Collection, RKey: r.RKey, CID: r.Record.CID, CBOR: r.Record.CBOR}, nil) {
				return
			}
		}
	})
}

// syncInterest keeps the crawler's interest set equal to what local users interact with,
// as the index knows it: at startup (a node upgraded to a crawling version, or one whose
// relay state was rebuilt, follows its community's neighbourhood without waiting for new
// follows) and then every interestSweep, which drops accounts nobody here follows or
// interacts with any more (noteInterest adds new ones as they happen).
func (n *Node) syncInterest(ctx context.Context) {
	if n.cfg.Relay.Mode != relay.ModeInterest {
		return
	}
	t := time.NewTicker(interestSweep)
	defer t.Stop()
	for {
		n.sweepInterest(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepInterest is one pass of syncInterest.
func (n *Node) sweepInterest(ctx context.Context) {
	began := time.Now()
	// Dropping needs the whole truth: an index still catching up with what was written
	// before the sweep began, or with local repos waiting to be reindexed, may not show
	// follows that exist.
	complete := n.appview.WaitForSeq(ctx, n.seq.LastSeq()) == nil
	var after syntax.DID
	for complete {
		pending, err := n.appview.NeedsReindex(ctx, after, reindexPage)
		if err != nil {
			complete = false
		}
		for _, did := range pending {
			if n.isLocal(did.String()) {
				complete = false
			}
		}
		if len(pending) < reindexPage {
			break
		}
		after = pending[len(pending)-1]
	}
	var locals []syntax.DID
	for did, err := range n.localDIDs(ctx) {
		if err != nil {
			n.log.WarnContext(ctx, "list local accounts for the crawler", "err", err)
			return
		}
		locals = append(locals, did)
	}
	dids, err := n.appview.Neighbours(ctx, locals)
	if err != nil {
		n.log.WarnContext(ctx, "list the accounts local users interact with", "err", err)
		return
	}
	wanted := make(map[syntax.DID]bool, len(dids))
	for _, did := range dids {
		wanted[did] = true
		if ctx.Err() != nil {
			return
		}
		if n.crawler.Tracked(did) || n.isLocal(did.String()) {
			continue
		}
		n.want(ctx, did)
	}
	if !complete {
		return
	}
	dropped := 0
	for _, did := range n.crawler.Followed() {
		// Unwant skips an account followed since the sweep began, which the index may
		// not have shown yet.
		if !wanted[did] && n.crawler.Unwant(did, began) {
			dropped++
		}
	}
	if dropped > 0 {
		n.log.InfoContext(ctx, "stopped following remote accounts no local user interacts with", "accounts", dropped)
	}
}

// localDIDs yields the DID of every account hosted here, a page at a time.
func (n *Node) localDIDs(ctx context.Context) iter.Seq2[syntax.DID, error] {
	return func(yield func(syntax.DID, error) bool) {
		cursor := ""
		for {
			var page []syntax.DID
			err := n.db.Read(ctx, func(tx *sql.Tx) error {
				rows, err := tx.QueryContext(ctx, "SELECT did FROM account WHERE did > ? ORDER BY did LIMIT 500", cursor)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var d string
					if err := rows.Scan(&d); err != nil {
						return err
					}
					page = append(page, syntax.DID(d))
				}
				return rows.Err()
			})
			if err != nil {
				yield("", err)
				return
			}
			for _, d := range page {
				if !yield(d, nil) {
					return
				}
			}
			if len(page) < 500 {
				return
			}
			cursor = page[len(page)-1].String()
		}
	}
}

// want adds did to the crawler's interest set, logging a failure: following someone must
// not fail because their server is down.
func (n *Node) want(ctx context.Context, did syntax.DID) {
	ctx, cancel := context.WithTimeout(ctx, wantTimeout)
	defer cancel()
	if err := n.crawler.Want(ctx, did); err != nil {
		n.log.WarnContext(ctx, "could not follow a remote account", "did", did, "err", err)
	}
}

// noteInterest looks at a local commit's new records for remote accounts the author now
// interacts with (a follow's subject; the author of a liked, reposted, quoted or replied-to
// post) and adds them to the interest set in the background, so their posts and profiles
// reach this node's index.
func (n *Node) noteInterest(ctx context.Context, writes []repo.Write) {
	var dids []syntax.DID
	add := func(s string) {
		if u, err := syntax.ParseATURI(s); err == nil {
			if d, err := u.Authority().AsDID(); err == nil {
				dids = append(dids, d)
			}
			return
		}
		if d, err := syntax.ParseDID(s); err == nil {
			dids = append(dids, d)
		}
	}
	for _, w := range writes {
		if w.Record == nil || w.Action == repo.ActionDelete {
			continue
		}
		m := w.Record.Data
		switch w.Collection {
		case "app.bsky.graph.follow":
			s, _ := m["subject"].(string)
			add(s)
		case "app.bsky.feed.like", "app.bsky.feed.repost":
			add(stringAt(m, "subject", "uri"))
		case "app.bsky.feed.post":
			add(stringAt(m, "reply", "root", "uri"))
			add(stringAt(m, "reply", "parent", "uri"))
			add(stringAt(m, "embed", "record", "uri"))
			add(stringAt(m, "embed", "record", "record", "uri"))
		}
	}
	for _, did := range dids {
		if n.crawler.Tracked(did) || n.isLocal(did.String()) {
			continue
		}
		go n.want(context.WithoutCancel(ctx), did)
	}
}

// stringAt returns the string at a path of nested maps, or "".
func stringAt(m map[string]any, path ...string) string {
	var v any = m
	for _, k := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[k]
	}
	s, _ := v.(string)
	return s
}

// handleComAtprotoSyncRequestCrawl lets a PDS ask to be crawled: the crawler checks it
// answers describeServer and subscribes to it from now on.
func (n *Node) handleComAtprotoSyncRequestCrawl(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Hostname string `json:"hostname"`
	}
	if err := decodeJSON(w, r, 4096, &in); err != nil {
		return err
	}
	if in.Hostname == "" {
		return xrpc.InvalidRequest("hostname is required")
	}
	// Some PDSes send a URL; the lexicon asks for the bare hostname.
	host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(in.Hostname, "https://"), "http://"), "/")
	ctx, cancel := context.WithTimeout(r.Context(), wantTimeout)
	defer cancel()
	if err := n.crawler.RequestCrawl(ctx, host); err != nil {
		if errors.Is(err, relay.ErrHostBanned) {
			return &xrpc.Error{Status: http.StatusBadRequest, Name: "HostBanned", Message: err.Error()}
		}
		return xrpc.InvalidRequest("%s", err)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleSocialAerieAdminBackfill follows a remote account (a handle or DID) and fetches
// its repo now (admin): the data behind `aerie backfill`.
func (n *Node) handleSocialAerieAdminBackfill(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Account string `json:"account"`
	}
	if err := decodeJSON(w, r, 4096, &in); err != nil {
		return err
	}
	atid, err := xrpc.ParseATIdentifier(in.Account)
	if err != nil {
		return xrpc.InvalidRequest("account: %s", err)
	}
	ctx := r.Context()
	did, err := atid.AsDID()
	if err != nil {
		h, _ := atid.AsHandle()
		if did, err = n.ident.resolver.ResolveHandle(ctx, h.Normalize()); err != nil {
			return xrpc.InvalidRequest("%s", err)
		}
	}
	records, rev, err := n.crawler.BackfillNow(ctx, did)
	if err != nil {
		return &xrpc.Error{Status: http.StatusBadGateway, Name: "UpstreamFailure", Message: err.Error(), Err: err}
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"did": did.String(), "records": records, "rev": rev})
	return nil
}

func (n *Node) handleComAtprotoSyncListHosts(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 200, 1, 1000)
	if err != nil {
		return xrpc.InvalidRequest("limit: %s", err)
	}
	hosts, cursor := n.crawler.ListHosts(q.Get("cursor"), limit)
	out := map[string]any{"hosts": hosts}
	if cursor != "" {
		out["cursor"] = cursor
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (n *Node) handleComAtprotoSyncGetHostStatus(w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("hostname")
	if name == "" {
		return xrpc.InvalidRequest("hostname is required")
	}
	info, err := n.crawler.HostStatus(name)
	if errors.Is(err, relay.ErrHostNotFound) {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "HostNotFound", Message: err.Error()}
	}
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, info)
	return nil
}
