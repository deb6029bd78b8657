package appview

import (
	"container/heap"
	"database/sql"
	"net/http"
	"slices"

	"github.com/aerie-social/aerie/node/xrpc"
)

// feedItem is one row of feed_items: a post, or a repost of one.
type feedItem struct {
	at         int64
	uri        string // the post, or the repost record
	postURI    string
	repostCID  string
	originator string
}

func (it feedItem) key() timeCursor { return timeCursor{at: it.at, uri: it.uri} }

// timelineRounds bounds how many times getTimeline reads further when blocks and mutes
// filtered a page short.
const timelineRounds = 4

// followSet is an account's follows as the follow-list cache holds them: the DIDs it
// follows, and its oldest follow record of each (viewer.following).
type followSet struct {
	dids []string
	uris map[string]string
}

// followees returns the follows of did, through the follow-list cache. The viewer's own
// are kept in the request, so loadActorViewers reads viewer.following from them.
func (r *req) followees(did string) (*followSet, error) {
	if did == r.viewer && r.viewerFollows != nil {
		return r.viewerFollows, nil
	}
	fs, ok := r.a.cache.follows.get(did)
	if !ok {
		var err error
		if fs, err = r.loadFollowees(did); err != nil {
			return nil, err
		}
	}
	if did == r.viewer {
		r.viewerFollows = fs
	}
	return fs, nil
}

// loadFollowees reads the follows of did from the index and offers them to the cache.
func (r *req) loadFollowees(did string) (*followSet, error) {
	st := stamp(r.gens.follows, did)
	q, err := r.a.db.ReadStmt(r.ctx, r.tx, `SELECT subject, min(uri) FROM follows WHERE author = ? GROUP BY subject`)
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(r.ctx, did)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	fs := &followSet{uris: map[string]string{}}
	size := int64(64)
	for rows.Next() {
		var d, u string
		if err := rows.Scan(&d, &u); err != nil {
			return nil, err
		}
		fs.dids = append(fs.dids, d)
		fs.uris[d] = u
		size += int64(len(d)+len(u)) + 48
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	r.a.cache.follows.set(did, fs, size, st)
	return fs, nil
}

// mergeFeeds returns up to want feed items of authors older than cur, newest first.
//
// It is a lazy k-way merge: each author is read a few items at a time, and only when its
// next item could be the newest of those not yet taken. An author is first ordered by
// last_item_at, an upper bound of its newest item, so one whose bound is older than the
// want-th item taken is never read. Reading each author's newest want items instead cost
// up to want rows per followee, most of them thrown away: it was the biggest cost of
// getTimeline.
func (r *req) mergeFeeds(authors []*actorRow, cur timeCursor, want int) ([]feedItem, error) {
	if want <= 0 || len(authors) == 0 {
		return nil, nil
	}
	stmt, err := r.a.db.ReadStmt(r.ctx, r.tx, `SELECT sort_at, uri, post_uri, coalesce(repost_cid, '') FROM feed_items
		WHERE originator = ? AND (sort_at, uri) < (?, ?)
		ORDER BY sort_at DESC, uri DESC LIMIT ?`)
	if err != nil {
		return nil, err
	}
	// A first read of a little more than an even share: busy authors read again.
	first := min(want, want/len(authors)+2)
	h := make(feedHeap, 0, len(authors))
	for _, ar := range authors {
		s := &feedSource{did: ar.did, next: cur, chunk: first}
		s.key = cur
		if ar.lastItemAt < cur.at {
			s.key = timeCursor{at: ar.lastItemAt, uri: topCursor().uri}
		}
		h = append(h, s)
	}
	heap.Init(&h)
	items := make([]feedItem, 0, want)
	for len(items) < want && len(h) > 0 {
		s := h[0]
		if len(s.buf) > 0 {
			items = append(items, s.buf[0])
			s.buf = s.buf[1:]
		} else if err := s.fetch(r, stmt); err != nil {
			return nil, err
		}
		switch {
		case len(s.buf) > 0:
			s.key = s.buf[0].key()
			heap.Fix(&h, 0)
		case s.done:
			heap.Pop(&h)
		default:
			s.key = s.next // taken all fetched: the next read starts below the last one
			heap.Fix(&h, 0)
		}
	}
	return items, nil
}

// feedSource is one author's feed in mergeFeeds.
type feedSource struct {
	did string
	// key sorts the source: its newest fetched item not yet taken, or, with none
	// fetched, an upper bound of its next item.
	key   timeCursor
	buf   []feedItem // fetched and not yet taken, newest first
	next  timeCursor // the next read returns items older than this
	chunk int        // how many items the next read asks for
	done  bool       // the author has no items older than next
}

// fetch reads the source's next chunk of items into buf.
func (s *feedSource) fetch(r *req, stmt *sql.Stmt) error {
	rows, err := stmt.QueryContext(r.ctx, s.did, s.next.at, s.next.uri, s.chunk)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		it := feedItem{originator: s.did}
		if err := rows.Scan(&it.at, &it.uri, &it.postURI, &it.repostCID); err != nil {
			return err
		}
		s.buf = append(s.buf, it)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(s.buf) < s.chunk {
		s.done = true
	}
	if len(s.buf) > 0 {
		s.next = s.buf[len(s.buf)-1].key()
	}
	s.chunk = min(2*s.chunk, 64)
	return nil
}

// feedHeap orders feed sources newest key first (container/heap).
type feedHeap []*feedSource

func (h feedHeap) Len() int           { return len(h) }
func (h feedHeap) Less(i, j int) bool { return h[j].key.less(h[i].key) }
func (h feedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *feedHeap) Push(x any)        { *h = append(*h, x.(*feedSource)) }
func (h *feedHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// hydrateFeed loads everything feedViewPost needs for items.
func (r *req) hydrateFeed(items []feedItem) error {
	uris := make([]string, 0, len(items))
	dids := make([]string, 0, len(items))
	for _, it := range items {
		uris = append(uris, it.postURI)
		dids = append(dids, it.originator)
	}
	if err := r.hydratePosts(uris); err != nil {
		return err
	}
	var parents []string
	for _, u := range uris {
		if p := r.posts[u]; p != nil && p.replyParent != "" {
			parents = append(parents, p.replyParent, p.replyRoot)
		}
	}
	if err := r.hydratePosts(parents); err != nil {
		return err
	}
	if err := r.loadActors(dids); err != nil {
		return err
	}
	return r.loadActorViewers(dids)
}

// replyView renders a parent or root of a reply: the post, blockedPost or notFoundPost.
func (r *req) replyView(uri string) any {
	p := r.posts[uri]
	if p == nil || !r.actors[p.author].active() {
		return newNotFoundPost(uri)
	}
	if r.blocked(p.author) {
		return newBlockedPost(uri, p.author, r.av[p.author])
	}
	return r.postView(uri)
}

// feedViewPost renders a hydrated item, or nil when the viewer must not see it: the post is
// gone, its author inactive, or someone in it blocked (or, when dropMuted, muted).
func (r *req) feedViewPost(it feedItem, dropMuted bool) *feedViewPost {
	p := r.posts[it.postURI]
	if p == nil || !r.actors[p.author].active() || r.blocked(p.author) || r.blocked(it.originator) {
		return nil
	}
	if dropMuted && (r.muted(p.author) || r.muted(it.originator)) {
		return nil
	}
	fv := &feedViewPost{Post: r.postView(it.postURI)}
	if fv.Post == nil {
		return nil
	}
	if p.replyParent != "" {
		for _, u := range []string{p.replyParent, p.replyRoot} {
			if q := r.posts[u]; q != nil && r.blocked(q.author) {
				return nil
			}
		}
		fv.Reply = &replyRef{Root: r.replyView(p.replyRoot), Parent: r.replyView(p.replyParent)}
	}
	if it.repostCID != "" {
		if !r.actors[it.originator].active() {
			return nil
		}
		fv.Reason = &reasonRepost{
			Type:      "app.bsky.feed.defs#reasonRepost",
			By:        r.profileBasic(it.originator),
			URI:       it.uri,
			CID:       it.repostCID,
			IndexedAt: fmtTime(it.at),
		}
	}
	return fv
}

// feedOutput is the output of the feed queries.
type feedOutput struct {
	Cursor string          `json:"cursor,omitempty"`
	Feed   []*feedViewPost `json:"feed"`
}

func (a *AppView) getTimeline(hr *http.Request, viewer string) (any, error) {
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	cur, err := parseTimeCursor(hr.URL.Query().Get("cursor"))
	if err != nil {
		return nil, err
	}
	out := &feedOutput{Feed: []*feedViewPost{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		dids, err := r.timelineAccounts(viewer)
		if err != nil {
			return err
		}
		authors := make([]*actorRow, 0, len(dids))
		for _, d := range dids {
			ar := r.actors[d]
			if ar.active() && ar.lastItemAt > 0 && !r.blocked(d) && !r.muted(d) {
				authors = append(authors, ar)
			}
		}
		slices.SortFunc(authors, func(x, y *actorRow) int {
			switch {
			case x.lastItemAt > y.lastItemAt:
				return -1
			case x.lastItemAt < y.lastItemAt:
				return 1
			}
			return 0
		})
		for range timelineRounds {
			want := limit - len(out.Feed)
			items, err := r.mergeFeeds(authors, cur, want)
			if err != nil {
				return err
			}
			if err := r.hydrateFeed(items); err != nil {
				return err
			}
			for _, it := range items {
				if fv := r.feedViewPost(it, true); fv != nil {
					out.Feed = append(out.Feed, fv)
				}
			}
			if len(items) < want {
				out.Cursor = ""
				return nil
			}
			cur = items[len(items)-1].key()
			out.Cursor = cur.String()
			if len(out.Feed) >= limit {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// authorFeedFilter returns the SQL condition of a getAuthorFeed filter value.
func authorFeedFilter(filter string) (string, bool) {
	switch filter {
	case "", "posts_with_replies":
		return ``, true
	case "posts_no_replies":
		return `AND reply_root_author IS NULL`, true
	case "posts_with_media":
		return `AND repost_cid IS NULL AND media = 1`, true
	case "posts_and_author_threads":
		return `AND (reply_root_author IS NULL OR reply_root_author = originator)`, true
	case "posts_with_video":
		return `AND repost_cid IS NULL AND media = 2`, true
	}
	return "", false
}

func (a *AppView) getAuthorFeed(hr *http.Request, viewer string) (any, error) {
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	cursorRaw := hr.URL.Query().Get("cursor")
	cur, err := parseTimeCursor(cursorRaw)
	if err != nil {
		return nil, err
	}
	filter := hr.URL.Query().Get("filter")
	cond, ok := authorFeedFilter(filter)
	if !ok {
		return nil, xrpc.InvalidRequest("unknown filter %q", filter)
	}
	includePins, err := boolParam(hr, "includePins", false)
	if err != nil {
		return nil, err
	}
	out := &feedOutput{Feed: []*feedViewPost{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		did, err := r.actorParam(hr, "actor")
		if err != nil {
			return err
		}
		if err := r.loadActors([]string{did}); err != nil {
			return err
		}
		if err := r.loadActorViewers([]string{did}); err != nil {
			return err
		}
		ar := r.actors[did]
		if ar == nil {
			return xrpc.InvalidRequest("Profile not found")
		}
		if err := actorStatusError(ar); err != nil {
			return err
		}
		if v := r.av[did]; v != nil {
			if v.Blocking != "" || v.BlockingByList != nil {
				return notFound("BlockedActor", "Requester has blocked actor: %s", did)
			}
			if v.BlockedBy {
				return notFound("BlockedByActor", "Requester is blocked by actor: %s", did)
			}
		}
		rows, err := r.tx.QueryContext(r.ctx, `SELECT sort_at, uri, post_uri, coalesce(repost_cid, '') FROM feed_items
			WHERE originator = ? AND (sort_at, uri) < (?, ?) `+cond+`
			ORDER BY sort_at DESC, uri DESC LIMIT ?`, did, cur.at, cur.uri, limit)
		if err != nil {
			return err
		}
		items, err := scanFeedItems(rows, did)
		if err != nil {
			return err
		}
		pinned := includePins && cursorRaw == "" && ar.pinnedURI != ""
		hydrate := items
		if pinned {
			hydrate = append(slices.Clip(items), feedItem{postURI: ar.pinnedURI, originator: did})
		}
		if err := r.hydrateFeed(hydrate); err != nil {
			return err
		}
		if pinned {
			if p := r.posts[ar.pinnedURI]; p != nil && p.author == did {
				if fv := r.feedViewPost(feedItem{postURI: ar.pinnedURI, originator: did}, false); fv != nil {
					fv.Reason = &reasonPin{Type: "app.bsky.feed.defs#reasonPin"}
					out.Feed = append(out.Feed, fv)
				}
			}
		}
		for _, it := range items {
			if pinned && it.postURI == ar.pinnedURI && it.repostCID == "" {
				continue
			}
			if fv := r.feedViewPost(it, false); fv != nil {
				out.Feed = append(out.Feed, fv)
			}
		}
		if len(items) == limit {
			out.Cursor = items[len(items)-1].key().String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func scanFeedItems(rows *sql.Rows, originator string) ([]feedItem, error) {
	defer rows.Close()
	var items []feedItem
	for rows.Next() {
		it := feedItem{originator: originator}
		if err := rows.Scan(&it.at, &it.uri, &it.postURI, &it.repostCID); err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, rows.Err()
}

// actorStatusError is the error getProfile and getAuthorFeed answer for an account that
// is not active.
func actorStatusError(ar *actorRow) error {
	switch ar.status {
	case "":
		return nil
	case "takendown", "suspended":
		return notFound("AccountTakedown", "Account has been suspended")
	case "deactivated":
		return notFound("AccountDeactivated", "Account is deactivated")
	}
	return xrpc.InvalidRequest("Profile not found")
}

// maxGetPosts is getPosts' limit on uris.
const maxGetPosts = 25

func (a *AppView) getPosts(hr *http.Request, viewer string) (any, error) {
	raw := hr.URL.Query()["uris"]
	if len(raw) > maxGetPosts {
		return nil, xrpc.InvalidRequest("at most %d uris", maxGetPosts)
	}
	uris := make([]string, 0, len(raw))
	for _, s := range raw {
		u, err := xrpc.ParseATURI(s)
		if err != nil {
			return nil, xrpc.InvalidRequest("uris must be at:// URIs")
		}
		uris = append(uris, u.String())
	}
	out := struct {
		Posts []*postView `json:"posts"`
	}{Posts: []*postView{}}
	err := a.read(hr.Context(), viewer, func(r *req) error {
		if err := r.hydratePosts(uris); err != nil {
			return err
		}
		for _, u := range uris {
			if p := r.posts[u]; p != nil && !r.blocked(p.author) {
				if pv := r.postView(u); pv != nil {
					out.Posts = append(out.Posts, pv)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// subjectParams reads uri, cid?, limit and cursor of getLikes, getRepostedBy, getQuotes.
func subjectParams(hr *http.Request) (uri, cid string, limit int, cur timeCursor, err error) {
	if uri, err = uriParam(hr, "uri"); err != nil {
		return
	}
	cid = hr.URL.Query().Get("cid")
	if limit, err = limitParam(hr, 50, 100); err != nil {
		return
	}
	cur, err = parseTimeCursor(hr.URL.Query().Get("cursor"))
	return
}

type likeOut struct {
	IndexedAt string       `json:"indexedAt"`
	CreatedAt string       `json:"createdAt"`
	Actor     *profileView `json:"actor"`
}

func (a *AppView) getLikes(hr *http.Request, viewer string) (any, error) {
	uri, cid, limit, cur, err := subjectParams(hr)
	if err != nil {
		return nil, err
	}
	out := struct {
		URI    string     `json:"uri"`
		CID    string     `json:"cid,omitempty"`
		Cursor string     `json:"cursor,omitempty"`
		Likes  []*likeOut `json:"likes"`
	}{URI: uri, CID: cid, Likes: []*likeOut{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		type row struct {
			author, created string
			indexed         int64
			key             timeCursor
		}
		var rs []row
		err := r.rows(`SELECT author, created_at, indexed_at, sort_at, uri FROM likes
			WHERE subject = ? AND (sort_at, uri) < (?, ?) AND (?5 = '' OR subject_cid = ?5)
			ORDER BY sort_at DESC, uri DESC LIMIT ?4`, []any{uri, cur.at, cur.uri, limit, cid}, func(rows *sql.Rows) error {
			var x row
			if err := rows.Scan(&x.author, &x.created, &x.indexed, &x.key.at, &x.key.uri); err != nil {
				return err
			}
			rs = append(rs, x)
			return nil
		})
		if err != nil {
			return err
		}
		dids := make([]string, len(rs))
		for i, x := range rs {
			dids[i] = x.author
		}
		if err := r.loadProfiles(dids); err != nil {
			return err
		}
		for _, x := range rs {
			if r.actors[x.author].active() && !r.blocked(x.author) {
				out.Likes = append(out.Likes, &likeOut{IndexedAt: fmtTime(x.indexed), CreatedAt: x.created, Actor: r.profile(x.author)})
			}
		}
		if len(rs) == limit {
			out.Cursor = rs[len(rs)-1].key.String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// rows runs q and calls scan for each row.
func (r *req) rows(q string, args []any, scan func(*sql.Rows) error) error {
	st, err := r.a.db.ReadStmt(r.ctx, r.tx, q)
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(r.ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// loadProfiles loads actors and the viewer's state for them.
func (r *req) loadProfiles(dids []string) error {
	if err := r.loadActors(dids); err != nil {
		return err
	}
	return r.loadActorViewers(dids)
}

// profiles returns profileViews of the visible actors among dids, in order.
func (r *req) profiles(dids []string) []*profileView {
	out := []*profileView{}
	for _, d := range dids {
		if r.actors[d].active() && !r.blocked(d) {
			out = append(out, r.profile(d))
		}
	}
	return out
}

func (a *AppView) getRepostedBy(hr *http.Request, viewer string) (any, error) {
	uri, cid, limit, cur, err := subjectParams(hr)
	if err != nil {
		return nil, err
	}
	out := struct {
		URI        string         `json:"uri"`
		CID        string         `json:"cid,omitempty"`
		Cursor     string         `json:"cursor,omitempty"`
		RepostedBy []*profileView `json:"repostedBy"`
	}{URI: uri, CID: cid}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		var dids []string
		var last timeCursor
		err := r.rows(`SELECT author, sort_at, uri FROM reposts
			WHERE subject = ? AND (sort_at, uri) < (?, ?) AND (?5 = '' OR subject_cid = ?5)
			ORDER BY sort_at DESC, uri DESC LIMIT ?4`, []any{uri, cur.at, cur.uri, limit, cid}, func(rows *sql.Rows) error {
			var d string
			if err := rows.Scan(&d, &last.at, &last.uri); err != nil {
				return err
			}
			dids = append(dids, d)
			return nil
		})
		if err != nil {
			return err
		}
		if err := r.loadProfiles(dids); err != nil {
			return err
		}
		out.RepostedBy = r.profiles(dids)
		if len(dids) == limit {
			out.Cursor = last.String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (a *AppView) getQuotes(hr *http.Request, viewer string) (any, error) {
	uri, cid, limit, cur, err := subjectParams(hr)
	if err != nil {
		return nil, err
	}
	out := struct {
		URI    string      `json:"uri"`
		CID    string      `json:"cid,omitempty"`
		Cursor string      `json:"cursor,omitempty"`
		Posts  []*postView `json:"posts"`
	}{URI: uri, CID: cid, Posts: []*postView{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		var uris []string
		var last timeCursor
		err := r.rows(`SELECT uri, sort_at FROM posts WHERE quote_uri = ? AND (sort_at, uri) < (?, ?) AND embed_detached = 0
			ORDER BY sort_at DESC, uri DESC LIMIT ?`, []any{uri, cur.at, cur.uri, limit}, func(rows *sql.Rows) error {
			if err := rows.Scan(&last.uri, &last.at); err != nil {
				return err
			}
			uris = append(uris, last.uri)
			return nil
		})
		if err != nil {
			return err
		}
		out.Posts, err = r.postViews(uris)
		if len(uris) == limit {
			out.Cursor = last.String()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// postViews hydrates uris and returns the views of those the viewer may see, in order.
func (r *req) postViews(uris []string) ([]*postView, error) {
	if err := r.hydratePosts(uris); err != nil {
		return nil, err
	}
	out := []*postView{}
	for _, u := range uris {
		if p := r.posts[u]; p != nil && !r.blocked(p.author) {
			if pv := r.postView(u); pv != nil {
				out = append(out, pv)
			}
		}
	}
	return out, nil
}

func (a *AppView) getActorLikes(hr *http.Request, viewer string) (any, error) {
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	cur, err := parseTimeCursor(hr.URL.Query().Get("cursor"))
	if err != nil {
		return nil, err
	}
	out := &feedOutput{Feed: []*feedViewPost{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		did, err := r.actorParam(hr, "actor")
		if err != nil {
			return err
		}
		if did != viewer {
			return xrpc.InvalidRequest("Profile not found")
		}
		var items []feedItem
		err = r.rows(`SELECT sort_at, uri, subject FROM likes WHERE author = ? AND (sort_at, uri) < (?, ?)
			AND subject LIKE 'at://%/app.bsky.feed.post/%'
			ORDER BY sort_at DESC, uri DESC LIMIT ?`, []any{did, cur.at, cur.uri, limit}, func(rows *sql.Rows) error {
			var it feedItem
			if err := rows.Scan(&it.at, &it.uri, &it.postURI); err != nil {
				return err
			}
			items = append(items, it)
			return nil
		})
		if err != nil {
			return err
		}
		for i := range items {
			items[i].originator = uriAuthority(items[i].postURI)
		}
		if err := r.hydrateFeed(items); err != nil {
			return err
		}
		for _, it := range items {
			if fv := r.feedViewPost(it, false); fv != nil {
				out.Feed = append(out.Feed, fv)
			}
		}
		if len(items) == limit {
			out.Cursor = items[len(items)-1].key().String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// timelineAccounts returns the accounts whose items make viewer's timeline (those viewer
// follows, and viewer), with their actor rows loaded.
func (r *req) timelineAccounts(viewer string) ([]string, error) {
	follows, err := r.followees(viewer)
	if err != nil {
		return nil, err
	}
	dids := append(slices.Clip(follows.dids), viewer)
	if err := r.loadActors(dids); err != nil {
		return nil, err
	}
	return dids, nil
}
