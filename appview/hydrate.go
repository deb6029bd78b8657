package appview

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// actorRow is an actor as the index holds it; cached by DID.
type actorRow struct {
	did, handle, status                string
	displayName, description, pronouns string
	website, avatar, banner            string
	pinnedURI, pinnedCID, profileCID   string
	labels, createdAt                  string
	indexedAt                          int64
	followers, follows, posts          int64
	lists, feedgens                    int64
	lastItemAt                         int64
}

// active reports whether the actor's content may be shown: #account said nothing or
// active.
func (ar *actorRow) active() bool { return ar != nil && ar.status == "" }

// postRow is a post as the index holds it, with its embed parsed once; cached by URI.
type postRow struct {
	uri, cid, author  string
	record            json.RawMessage
	createdAt         string
	indexedAt, sortAt int64
	replyRoot         string
	replyParent       string
	quoteURI          string
	violatesGate      bool
	// embedDetached: the quoted post's postgate detaches this post's quote;
	// embeddingDisabled: this post's postgate forbids others to quote it.
	embedDetached     bool
	embeddingDisabled bool
	likes, reposts    int64
	replies, quotes   int64
	embed             *embedRecord
	labels            []string
}

// embedRecord is the embed of a post record, decoded from its JSON for the embed view.
type embedRecord struct {
	Type     string          `json:"$type"`
	Images   []embedImage    `json:"images"`
	Items    []embedImage    `json:"items"` // app.bsky.embed.gallery
	External *embedExternal  `json:"external"`
	Record   json.RawMessage `json:"record"`
	Media    *embedRecord    `json:"media"`
	Video    *blobJSON       `json:"video"`
	Alt      string          `json:"alt"`
	Aspect   *aspectRatio    `json:"aspectRatio"`
}

type embedImage struct {
	Image  *blobJSON    `json:"image"`
	Alt    string       `json:"alt"`
	Aspect *aspectRatio `json:"aspectRatio"`
}

type embedExternal struct {
	URI         string    `json:"uri"`
	Title       string    `json:"title"`
	Description string    `json:"description"`
	Thumb       *blobJSON `json:"thumb"`
}

// blobJSON is a blob in either JSON form (§1.4).
type blobJSON struct {
	Ref struct {
		Link string `json:"$link"`
	} `json:"ref"`
	CID string `json:"cid"` // legacy form
}

func (b *blobJSON) cid() string {
	if b == nil {
		return ""
	}
	if b.Ref.Link != "" {
		return b.Ref.Link
	}
	return b.CID
}

// strongRefJSON is a strongRef inside a record's JSON.
type strongRefJSON struct {
	URI string `json:"uri"`
	CID string `json:"cid"`
}

// req is one read request: a snapshot of the index, the viewer, and what it has loaded.
type req struct {
	a      *AppView
	ctx    context.Context
	tx     *sql.Tx
	viewer string
	// gens are the cache generations from before tx began, the stamps for cache sets.
	gens cacheGens

	actors map[string]*actorRow
	posts  map[string]*postRow
	av     map[string]*actorViewer // viewer state per actor; only with a viewer
	pv     map[string]*postViewer  // viewer state per post; only with a viewer
	gates  map[string]*threadgateView
	mod    *modState // the viewer's blocks and mutes; nil without a viewer
	avDone map[string]bool
	pvDone map[string]bool
	// genLikes maps feed generator URIs to the viewer's like of them.
	genLikes map[string]string
	// viewerFollows are the viewer's follows once followees has loaded them.
	viewerFollows *followSet
}

// read runs fn over one consistent snapshot of the index.
func (a *AppView) read(ctx context.Context, viewer string, fn func(r *req) error) error {
	gens := cacheGens{actors: a.cache.actors.generations(), posts: a.cache.posts.generations(), follows: a.cache.follows.generations()}
	return a.db.Read(ctx, func(tx *sql.Tx) error {
		r := &req{
			a: a, ctx: ctx, tx: tx, viewer: viewer, gens: gens,
			actors: map[string]*actorRow{}, posts: map[string]*postRow{},
			av: map[string]*actorViewer{}, pv: map[string]*postViewer{},
			gates: map[string]*threadgateView{}, avDone: map[string]bool{}, pvDone: map[string]bool{},
		}
		if viewer != "" {
			if err := r.loadMod(); err != nil {
				return fmt.Errorf("load moderation state of %s: %w", viewer, err)
			}
		}
		return fn(r)
	})
}

// cacheGens holds each cache's generations as a request found them.
type cacheGens struct {
	actors, posts, follows *[cacheShards]uint64
}

// maxInArgs bounds the bound parameters of one IN (...) query.
const maxInArgs = 500

// inListSizes are the lengths an IN list is padded to (with NULL, which matches nothing),
// so that each query has a few texts whose statements ReadStmt keeps prepared.
var inListSizes = []int{1, 4, 16, 64, 200, maxInArgs}

// inQuery runs q, whose "%s" is replaced by a placeholder list for keys, over keys in
// chunks; pre are bound before the keys. The list must be an IN (...), never NOT IN.
func (r *req) inQuery(q string, pre []any, keys []string, scan func(*sql.Rows) error) error {
	for len(keys) > 0 {
		n := min(len(keys), maxInArgs)
		chunk := keys[:n]
		keys = keys[n:]
		size := n
		for _, s := range inListSizes {
			if s >= n {
				size = s
				break
			}
		}
		args := make([]any, 0, len(pre)+size)
		args = append(args, pre...)
		for _, k := range chunk {
			args = append(args, k)
		}
		for range size - n {
			args = append(args, nil)
		}
		ph := strings.Repeat("?,", size)
		st, err := r.a.db.ReadStmt(r.ctx, r.tx, fmt.Sprintf(q, ph[:len(ph)-1]))
		if err != nil {
			return fmt.Errorf("query %q: %w", firstLine(q), err)
		}
		rows, err := st.QueryContext(r.ctx, args...)
		if err != nil {
			return fmt.Errorf("query %q: %w", firstLine(q), err)
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return fmt.Errorf("query %q: %w", firstLine(q), err)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("query %q: %w", firstLine(q), err)
		}
	}
	return nil
}

const actorColumns = `did, coalesce(handle, ''), coalesce(status, ''), coalesce(display_name, ''),
	coalesce(description, ''), coalesce(pronouns, ''), coalesce(website, ''), coalesce(avatar, ''),
	coalesce(banner, ''), coalesce(pinned_uri, ''), coalesce(pinned_cid, ''), coalesce(profile_cid, ''),
	coalesce(labels, ''), coalesce(created_at, ''), indexed_at, followers_count, follows_count,
	posts_count, lists_count, feedgens_count, last_item_at`

func scanActor(rows interface{ Scan(...any) error }) (*actorRow, error) {
	ar := &actorRow{}
	err := rows.Scan(&ar.did, &ar.handle, &ar.status, &ar.displayName, &ar.description, &ar.pronouns,
		&ar.website, &ar.avatar, &ar.banner, &ar.pinnedURI, &ar.pinnedCID, &ar.profileCID, &ar.labels,
		&ar.createdAt, &ar.indexedAt, &ar.followers, &ar.follows, &ar.posts, &ar.lists, &ar.feedgens,
		&ar.lastItemAt)
	return ar, err
}

// loadActors loads dids into r.actors, from the cache where it can.
func (r *req) loadActors(dids []string) error {
	var miss []string
	stamps := map[string]uint64{}
	for _, d := range dids {
		if _, ok := r.actors[d]; ok || d == "" {
			continue
		}
		if ar, ok := r.a.cache.actors.get(d); ok {
			r.actors[d] = ar
			continue
		}
		if _, ok := stamps[d]; !ok {
			stamps[d] = stamp(r.gens.actors, d)
			miss = append(miss, d)
		}
	}
	if len(miss) == 0 {
		return nil
	}
	return r.inQuery(`SELECT `+actorColumns+` FROM actors WHERE did IN (%s)`, nil, miss, func(rows *sql.Rows) error {
		ar, err := scanActor(rows)
		if err != nil {
			return err
		}
		r.actors[ar.did] = ar
		r.a.cache.actors.set(ar.did, ar, 512, stamps[ar.did])
		return nil
	})
}

// loadPosts loads uris into r.posts, from the cache where it can.
func (r *req) loadPosts(uris []string) error {
	var miss []string
	stamps := map[string]uint64{}
	for _, u := range uris {
		if _, ok := r.posts[u]; ok || u == "" {
			continue
		}
		if pr, ok := r.a.cache.posts.get(u); ok {
			r.posts[u] = pr
			continue
		}
		if _, ok := stamps[u]; !ok {
			stamps[u] = stamp(r.gens.posts, u)
			miss = append(miss, u)
		}
	}
	if len(miss) == 0 {
		return nil
	}
	return r.inQuery(`SELECT uri, cid, author, record, created_at, indexed_at, sort_at, coalesce(reply_root, ''),
			coalesce(reply_parent, ''), coalesce(quote_uri, ''), violates_gate, embed_detached, embedding_disabled,
			like_count, repost_count, reply_count, quote_count
		FROM posts WHERE uri IN (%s)`, nil, miss, func(rows *sql.Rows) error {
		pr := &postRow{}
		var rec string
		if err := rows.Scan(&pr.uri, &pr.cid, &pr.author, &rec, &pr.createdAt, &pr.indexedAt, &pr.sortAt,
			&pr.replyRoot, &pr.replyParent, &pr.quoteURI, &pr.violatesGate, &pr.embedDetached, &pr.embeddingDisabled,
			&pr.likes, &pr.reposts, &pr.replies, &pr.quotes); err != nil {
			return err
		}
		pr.record = json.RawMessage(rec)
		var parsed struct {
			Embed  *embedRecord `json:"embed"`
			Labels struct {
				Type   string `json:"$type"`
				Values []struct {
					Val string `json:"val"`
				} `json:"values"`
			} `json:"labels"`
		}
		// The JSON was written by repo.RecordJSON, so it parses; a shape we do not know
		// only loses the embed view.
		if json.Unmarshal(pr.record, &parsed) == nil {
			pr.embed = parsed.Embed
			if parsed.Labels.Type == "com.atproto.label.defs#selfLabels" {
				for _, v := range parsed.Labels.Values {
					pr.labels = append(pr.labels, v.Val)
				}
			}
		}
		r.posts[pr.uri] = pr
		r.a.cache.posts.set(pr.uri, pr, int64(len(rec)+256), stamps[pr.uri])
		return nil
	})
}

// modState is the viewer's blocks (both directions, records and subscribed modlists) and
// mutes, loaded once per request: small sets, and every view filters through them.
type modState struct {
	muted        map[string]bool
	blocking     map[string]string // subject → the viewer's block record
	blockedBy    map[string]bool
	listBlocking map[string]*listViewBasic
}

// loadMod loads the viewer's moderation state.
func (r *req) loadMod() error {
	m := &modState{muted: map[string]bool{}, blocking: map[string]string{}, blockedBy: map[string]bool{},
		listBlocking: map[string]*listViewBasic{}}
	r.mod = m
	// One query of five parts rather than five queries: every request with a viewer runs
	// it, and each query costs a prepare. The first column is the kind of the row.
	const (
		muted = iota
		blocking
		blockedBy
		listBlocking
	)
	return r.rows(`SELECT 0, subject, '', '', '', '' FROM mutes WHERE viewer = ?1
		UNION ALL SELECT 1, subject, min(uri), '', '', '' FROM blocks WHERE author = ?1 GROUP BY subject
		UNION ALL SELECT 2, author, '', '', '', '' FROM blocks WHERE subject = ?1
		-- Modlists the viewer subscribes to block their members.
		UNION ALL SELECT 3, li.subject, l.uri, l.cid, l.name, l.purpose FROM list_blocks lb
			JOIN list_items li ON li.list = lb.list JOIN lists l ON l.uri = lb.list
		WHERE lb.author = ?1
		-- Owners of modlists the viewer is on, who subscribe to them, block the viewer.
		UNION ALL SELECT 2, lb.author, '', '', '', '' FROM list_items li JOIN list_blocks lb ON lb.list = li.list
		WHERE li.subject = ?1`, []any{r.viewer}, func(rows *sql.Rows) error {
		var kind int
		var d string
		lv := &listViewBasic{}
		if err := rows.Scan(&kind, &d, &lv.URI, &lv.CID, &lv.Name, &lv.Purpose); err != nil {
			return err
		}
		switch kind {
		case muted:
			m.muted[d] = true
		case blocking:
			m.blocking[d] = lv.URI
		case blockedBy:
			m.blockedBy[d] = true
		case listBlocking:
			m.listBlocking[d] = lv
		}
		return nil
	})
}

// loadActorViewers computes the viewer's relationship to each of dids: follows both ways
// from the index, blocks and mutes from the request's modState.
func (r *req) loadActorViewers(dids []string) error {
	if r.viewer == "" {
		return nil
	}
	var todo []string
	for _, d := range dids {
		if d == "" || r.avDone[d] {
			continue
		}
		r.avDone[d] = true
		todo = append(todo, d)
	}
	if len(todo) == 0 {
		return nil
	}
	for _, d := range todo {
		r.av[d] = &actorViewer{
			Muted:          r.mod.muted[d],
			Blocking:       r.mod.blocking[d],
			BlockedBy:      r.mod.blockedBy[d],
			BlockingByList: r.mod.listBlocking[d],
		}
	}
	v := []any{r.viewer}
	if fs := r.viewerFollows; fs != nil {
		// The timeline has the viewer's follows already: no query.
		for _, d := range todo {
			r.av[d].Following = fs.uris[d]
		}
	} else {
		err := r.inQuery(`SELECT subject, min(uri) FROM follows WHERE author = ? AND subject IN (%s) GROUP BY subject`, v, todo, func(rows *sql.Rows) error {
			var d, u string
			if err := rows.Scan(&d, &u); err != nil {
				return err
			}
			r.av[d].Following = u
			return nil
		})
		if err != nil {
			return err
		}
	}
	// INDEXED BY: left alone, SQLite reads this through follows_subject, which walks every
	// follower of the viewer (thousands for a popular account) instead of seeking each
	// (author, viewer) pair; it was the biggest cost of getTimeline.
	return r.inQuery(`SELECT author, min(uri) FROM follows INDEXED BY follows_author
		WHERE subject = ? AND author IN (%s) GROUP BY author`, v, todo, func(rows *sql.Rows) error {
		var d, u string
		if err := rows.Scan(&d, &u); err != nil {
			return err
		}
		r.av[d].FollowedBy = u
		return nil
	})
}

// loadPostViewers loads the viewer's likes and reposts of uris.
func (r *req) loadPostViewers(uris []string) error {
	if r.viewer == "" {
		return nil
	}
	var todo []string
	for _, u := range uris {
		if u == "" || r.pvDone[u] {
			continue
		}
		r.pvDone[u] = true
		todo = append(todo, u)
	}
	if len(todo) == 0 {
		return nil
	}
	get := func(u string) *postViewer {
		v := r.pv[u]
		if v == nil {
			v = &postViewer{}
			r.pv[u] = v
		}
		return v
	}
	v := []any{r.viewer}
	err := r.inQuery(`SELECT subject, min(uri) FROM likes WHERE author = ? AND subject IN (%s) GROUP BY subject`, v, todo, func(rows *sql.Rows) error {
		var s, u string
		if err := rows.Scan(&s, &u); err != nil {
			return err
		}
		get(s).Like = u
		return nil
	})
	if err != nil {
		return err
	}
	return r.inQuery(`SELECT subject, min(uri) FROM reposts WHERE author = ? AND subject IN (%s) GROUP BY subject`, v, todo, func(rows *sql.Rows) error {
		var s, u string
		if err := rows.Scan(&s, &u); err != nil {
			return err
		}
		get(s).Repost = u
		return nil
	})
}

// loadThreadgates loads the threadgates of root posts.
func (r *req) loadThreadgates(roots []string) error {
	var todo []string
	for _, u := range roots {
		if _, ok := r.gates[u]; !ok && u != "" {
			r.gates[u] = nil
			todo = append(todo, u)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	return r.inQuery(`SELECT post, uri, cid, record FROM threadgates WHERE post IN (%s)`, nil, todo, func(rows *sql.Rows) error {
		var post, rec string
		g := &threadgateView{}
		if err := rows.Scan(&post, &g.URI, &g.CID, &rec); err != nil {
			return err
		}
		g.Record = json.RawMessage(rec)
		r.gates[post] = g
		return nil
	})
}

// hydratePosts loads posts, the posts they quote, their authors, and the viewer's state
// for all of them: everything postView needs.
func (r *req) hydratePosts(uris []string) error {
	if err := r.loadPosts(uris); err != nil {
		return err
	}
	var quotes, dids []string
	for _, u := range uris {
		if p := r.posts[u]; p != nil {
			dids = append(dids, p.author)
			if p.quoteURI != "" {
				quotes = append(quotes, p.quoteURI)
			}
		}
	}
	if err := r.loadPosts(quotes); err != nil {
		return err
	}
	for _, q := range quotes {
		if p := r.posts[q]; p != nil {
			dids = append(dids, p.author)
		} else if d := uriAuthority(q); d != "" {
			dids = append(dids, d)
		}
	}
	if err := r.loadActors(dids); err != nil {
		return err
	}
	if err := r.loadActorViewers(dids); err != nil {
		return err
	}
	return r.loadPostViewers(uris)
}

// blocked reports whether the viewer and did block each other in either direction.
func (r *req) blocked(did string) bool {
	m := r.mod
	return m != nil && (m.blocking[did] != "" || m.blockedBy[did] || m.listBlocking[did] != nil)
}

// muted reports whether the viewer muted did.
func (r *req) muted(did string) bool { return r.mod != nil && r.mod.muted[did] }

// fmtTime renders microseconds as an atproto datetime.
func fmtTime(us int64) string {
	return time.UnixMicro(us).UTC().Format("2006-01-02T15:04:05.000Z")
}

// imageURL is where the node's blob service serves a resized image (§11.2).
func (a *AppView) imageURL(preset, did, cid string) string {
	if cid == "" {
		return ""
	}
	return a.publicURL + "/img/" + preset + "/plain/" + did + "/" + cid + "@jpeg"
}

func counted(n int64) *int64 { return &n }

// profileBasic returns did's profileViewBasic, or nil when it is not indexed.
func (r *req) profileBasic(did string) *profileView {
	ar := r.actors[did]
	if ar == nil {
		return nil
	}
	handle := ar.handle
	if handle == "" {
		handle = "handle.invalid"
	}
	pv := &profileView{
		DID:         did,
		Handle:      handle,
		DisplayName: ar.displayName,
		Pronouns:    ar.pronouns,
		Avatar:      r.a.imageURL("avatar_thumbnail", did, ar.avatar),
		CreatedAt:   ar.createdAt,
		Viewer:      r.av[did],
	}
	if ar.labels != "" {
		uri := "at://" + did + "/" + colProfile + "/self"
		cts := ar.createdAt
		if cts == "" {
			cts = fmtTime(ar.indexedAt)
		}
		for _, v := range strings.Split(ar.labels, ",") {
			pv.Labels = append(pv.Labels, label{Src: did, URI: uri, CID: ar.profileCID, Val: v, Cts: cts})
		}
	}
	return pv
}

// profile returns did's profileView.
func (r *req) profile(did string) *profileView {
	pv := r.profileBasic(did)
	if pv == nil {
		return nil
	}
	ar := r.actors[did]
	pv.Description = ar.description
	if ar.indexedAt > 0 {
		pv.IndexedAt = fmtTime(ar.indexedAt)
	}
	return pv
}

// profileDetailed returns did's profileViewDetailed.
func (r *req) profileDetailed(did string) *profileView {
	pv := r.profile(did)
	if pv == nil {
		return nil
	}
	ar := r.actors[did]
	pv.Avatar = r.a.imageURL("avatar", did, ar.avatar)
	pv.Banner = r.a.imageURL("banner", did, ar.banner)
	pv.Website = ar.website
	pv.FollowersCount = counted(ar.followers)
	pv.FollowsCount = counted(ar.follows)
	pv.PostsCount = counted(ar.posts)
	pv.Associated = &associated{Lists: ar.lists, Feedgens: ar.feedgens}
	if ar.pinnedURI != "" {
		pv.PinnedPost = &strongRef{URI: ar.pinnedURI, CID: ar.pinnedCID}
	}
	return pv
}

// postView returns the view of a hydrated post, or nil when it is missing or its author
// is not active.
func (r *req) postView(uri string) *postView {
	p := r.posts[uri]
	if p == nil || !r.actors[p.author].active() {
		return nil
	}
	pv := &postView{
		Type:        "app.bsky.feed.defs#postView",
		URI:         p.uri,
		CID:         p.cid,
		Author:      r.profileBasic(p.author),
		Record:      p.record,
		ReplyCount:  counted(p.replies),
		RepostCount: counted(p.reposts),
		LikeCount:   counted(p.likes),
		QuoteCount:  counted(p.quotes),
		IndexedAt:   fmtTime(p.indexedAt),
	}
	if r.viewer != "" {
		v := r.pv[uri]
		if v == nil {
			v = &postViewer{}
		}
		ar := r.actors[p.author]
		v.Pinned = ar != nil && ar.pinnedURI == uri
		v.EmbeddingDisabled = p.embeddingDisabled && r.viewer != p.author
		pv.Viewer = v
	}
	for _, l := range p.labels {
		pv.Labels = append(pv.Labels, label{Src: p.author, URI: p.uri, CID: p.cid, Val: l, Cts: p.createdAt})
	}
	if g := r.gates[p.uri]; g != nil {
		pv.Threadgate = g
	}
	pv.Embed = r.embedView(p.author, p.embed, true, p.embedDetached)
	return pv
}

// embedView renders a post's embed; withRecord is false inside a quoted record, whose own
// quotes are not expanded (the reference AppView stops at one level). detached is the
// post's embed_detached: its quote shows as #viewDetached.
func (r *req) embedView(did string, e *embedRecord, withRecord, detached bool) any {
	if e == nil {
		return nil
	}
	switch e.Type {
	case "app.bsky.embed.images", "app.bsky.embed.gallery":
		imgs := e.Images
		if e.Type == "app.bsky.embed.gallery" {
			imgs = e.Items
		}
		v := &imagesView{Type: "app.bsky.embed.images#view", Images: []imageView{}}
		for _, im := range imgs {
			c := im.Image.cid()
			if c == "" {
				continue
			}
			v.Images = append(v.Images, imageView{
				Thumb:       r.a.imageURL("feed_thumbnail", did, c),
				Fullsize:    r.a.imageURL("feed_fullsize", did, c),
				Alt:         im.Alt,
				AspectRatio: im.Aspect,
			})
		}
		return v
	case "app.bsky.embed.external":
		if e.External == nil {
			return nil
		}
		return &externalView{Type: "app.bsky.embed.external#view", External: externalViewItem{
			URI:         e.External.URI,
			Title:       e.External.Title,
			Description: e.External.Description,
			Thumb:       r.a.imageURL("feed_thumbnail", did, e.External.Thumb.cid()),
		}}
	case "app.bsky.embed.video":
		c := e.Video.cid()
		if c == "" {
			return nil
		}
		// No transcoder: the playlist is the raw blob, which players can fetch directly.
		return &videoView{
			Type:        "app.bsky.embed.video#view",
			CID:         c,
			Playlist:    r.a.publicURL + "/xrpc/com.atproto.sync.getBlob?did=" + did + "&cid=" + c,
			Alt:         e.Alt,
			AspectRatio: e.Aspect,
		}
	case "app.bsky.embed.record":
		if !withRecord {
			return nil
		}
		var ref strongRefJSON
		if json.Unmarshal(e.Record, &ref) != nil || ref.URI == "" {
			return nil
		}
		return r.recordEmbedView(ref.URI, detached)
	case "app.bsky.embed.recordWithMedia":
		if !withRecord {
			return nil
		}
		var inner struct {
			Record strongRefJSON `json:"record"`
		}
		if json.Unmarshal(e.Record, &inner) != nil || inner.Record.URI == "" {
			return nil
		}
		media := r.embedView(did, e.Media, false, false)
		if media == nil {
			return r.recordEmbedView(inner.Record.URI, detached)
		}
		return &recordWithMediaView{
			Type:   "app.bsky.embed.recordWithMedia#view",
			Record: r.recordEmbedView(inner.Record.URI, detached),
			Media:  media,
		}
	}
	return nil
}

// recordEmbedView renders a quoted record: the post, or detached/notFound/blocked.
func (r *req) recordEmbedView(uri string, detached bool) *recordView {
	v := &recordView{Type: "app.bsky.embed.record#view"}
	p := r.posts[uri]
	switch {
	case detached:
		v.Record = &viewDetached{Type: "app.bsky.embed.record#viewDetached", URI: uri, Detached: true}
	case p == nil || !r.actors[p.author].active():
		v.Record = &viewNotFound{Type: "app.bsky.embed.record#viewNotFound", URI: uri, NotFound: true}
	case r.blocked(p.author):
		v.Record = &viewBlocked{Type: "app.bsky.embed.record#viewBlocked", URI: uri, Blocked: true,
			Author: &blockedAuthor{DID: p.author, Viewer: r.av[p.author]}}
	default:
		vr := &viewRecord{
			Type:        "app.bsky.embed.record#viewRecord",
			URI:         p.uri,
			CID:         p.cid,
			Author:      r.profileBasic(p.author),
			Value:       p.record,
			ReplyCount:  counted(p.replies),
			RepostCount: counted(p.reposts),
			LikeCount:   counted(p.likes),
			QuoteCount:  counted(p.quotes),
			IndexedAt:   fmtTime(p.indexedAt),
		}
		for _, l := range p.labels {
			vr.Labels = append(vr.Labels, label{Src: p.author, URI: p.uri, CID: p.cid, Val: l, Cts: p.createdAt})
		}
		if ev := r.embedView(p.author, p.embed, false, false); ev != nil {
			vr.Embeds = []any{ev}
		}
		v.Record = vr
	}
	return v
}
