package appview

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/sqlite"
	"github.com/aerie-social/aerie/relay"
	"github.com/aerie-social/aerie/repo"
)

// commitCARLimits bounds the CAR slice of one #commit: the relay already enforces the
// frame limit, so these only guard against a malformed slice.
var commitCARLimits = repo.CARLimits{
	MaxBytes:      repo.MaxCommitBlocks,
	MaxBlocks:     10_000,
	MaxBlockSize:  repo.MaxRecordSize,
	MaxHeaderSize: 4 << 10,
}

// maxReplyNotifyDepth is how many ancestors up a reply chain get a reply notification
// (atproto-reference §11.1).
const maxReplyNotifyDepth = 4

// indexTx applies record changes inside one index write transaction.
type indexTx struct {
	ctx   context.Context
	db    *sqlite.DB
	tx    *sql.Tx
	t     *touched
	log   *slog.Logger
	known *knownActors
	// hosted reports whether notifications are kept for an account (Config.Hosted).
	hosted func(did string) bool
	stmts  map[string]*sql.Stmt
	// at is the time the current event was sequenced: the indexedAt of what it creates, so
	// a replay after a crash gives the same values.
	at time.Time
	// cur is the record being indexed, and curJSON its JSON once a notification needed it.
	cur     *repo.Record
	curJSON []byte
	// search holds the posts_fts rows (posts.rowid → text) of this transaction's new posts
	// until writeSearch: FTS5 writes its pending terms out as a new segment at every
	// statement that touches it, so one INSERT for the whole batch makes one segment where
	// a statement per post made one per post.
	search map[int64]string
}

// writeSearch adds the posts indexed in this transaction to posts_fts. Call it once, last.
func (ix *indexTx) writeSearch() error {
	switch len(ix.search) {
	case 0:
		return nil
	case 1: // a local write: no JSON round trip
		for rowid, text := range ix.search {
			ix.search = nil
			_, err := ix.exec(`INSERT INTO posts_fts (rowid, text) VALUES (?, ?)`, rowid, text)
			return err
		}
	}
	rows := make([][2]any, 0, len(ix.search))
	for rowid, text := range ix.search {
		rows = append(rows, [2]any{rowid, text})
	}
	js, err := json.Marshal(rows)
	if err != nil {
		return fmt.Errorf("search rows: %w", err)
	}
	ix.search = nil
	_, err = ix.exec(`INSERT INTO posts_fts (rowid, text) SELECT value ->> 0, value ->> 1 FROM json_each(?)`, string(js))
	return err
}

// currentJSON returns the JSON of the record being indexed, converting it once.
func (ix *indexTx) currentJSON() (string, error) {
	if ix.curJSON == nil {
		js, err := recordJSON(ix.cur)
		if err != nil {
			return "", err
		}
		ix.curJSON = js
	}
	return string(ix.curJSON), nil
}

// newIndexTx returns an indexTx over tx, which must come from db.Write.
// hosted is Config.Hosted.
func newIndexTx(ctx context.Context, db *sqlite.DB, tx *sql.Tx, t *touched, known *knownActors, hosted func(string) bool, log *slog.Logger) *indexTx {
	return &indexTx{ctx: ctx, db: db, tx: tx, t: t, known: known, hosted: hosted, log: log, stmts: map[string]*sql.Stmt{}}
}

func (ix *indexTx) close() {
	for _, s := range ix.stmts {
		s.Close()
	}
}

// stmt returns q bound to the transaction. The writer connection keeps the statements
// prepared across transactions (sqlite.DB.Stmt): a local write indexes one record per
// transaction, and preparing its dozen statements cost as much as running them. The
// per-transaction map saves rebinding in a batch, which runs the same few statements
// thousands of times.
func (ix *indexTx) stmt(q string) (*sql.Stmt, error) {
	if s, ok := ix.stmts[q]; ok {
		return s, nil
	}
	s, err := ix.db.Stmt(ix.ctx, ix.tx, q)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", firstLine(q), err)
	}
	ix.stmts[q] = s
	return s, nil
}

func firstLine(q string) string {
	q = strings.TrimSpace(q)
	if i := strings.IndexByte(q, '\n'); i >= 0 {
		return q[:i]
	}
	return q
}

// exec runs q and returns the number of rows it changed.
func (ix *indexTx) exec(q string, args ...any) (int64, error) {
	s, err := ix.stmt(q)
	if err != nil {
		return 0, err
	}
	res, err := s.ExecContext(ix.ctx, args...)
	if err != nil {
		return 0, fmt.Errorf("exec %q: %w", firstLine(q), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("exec %q: %w", firstLine(q), err)
	}
	return n, nil
}

// row runs q and scans one row; sql.ErrNoRows comes back unwrapped for errors.Is.
func (ix *indexTx) row(q string, args []any, dest ...any) error {
	s, err := ix.stmt(q)
	if err != nil {
		return err
	}
	err = s.QueryRowContext(ix.ctx, args...).Scan(dest...)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("query %q: %w", firstLine(q), err)
	}
	return err
}

func (ix *indexTx) setCursor(seq int64) error {
	_, err := ix.exec(`INSERT INTO meta (key, value) VALUES ('cursor', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE excluded.value > meta.value`, seq)
	return err
}

// event applies one relay event.
func (ix *indexTx) event(ev *relay.Event, now time.Time) error {
	ix.at = ev.Time
	if ix.at.IsZero() {
		ix.at = now
	}
	switch {
	case ev.Commit != nil:
		return ix.commit(ev.Commit)
	case ev.Identity != nil:
		return ix.identity(ev.Identity)
	case ev.Account != nil:
		return ix.account(ev.Account)
	case ev.Sync != nil:
		if err := ix.ensureActor(ev.Sync.Did); err != nil {
			return err
		}
		if ix.onlyGenesis(ev.Sync.Did, ev.Sync.Rev) {
			// The #sync of a new account: the index holds that state already.
			ix.t.genesis[ev.Sync.Did] = ""
			return nil
		}
		// The repo's history was broken (or repaired): our view of it may be wrong.
		// The node reindexes marked accounts through Reindex.
		_, err := ix.exec(`UPDATE actors SET needs_reindex = 1 WHERE did = ?`, ev.Sync.Did)
		return err
	}
	return nil
}

// onlyGenesis says whether the only commit of did indexed so far is its first, at rev.
func (ix *indexTx) onlyGenesis(did, rev string) bool {
	r, ok := ix.genesisRev(did)
	return ok && r != "" && r == rev
}

// genesisRev is what this transaction, or else knownActors, knows of did's first commit:
// its rev, or "" once a later commit was indexed in this transaction.
func (ix *indexTx) genesisRev(did string) (string, bool) {
	if r, ok := ix.t.genesis[did]; ok {
		return r, true
	}
	return ix.known.genesisRev(did)
}

// ensureActor makes sure did has an actors row. Most events come from accounts seen
// before, so the DIDs whose row is known to be committed skip the statement.
func (ix *indexTx) ensureActor(did string) error {
	if _, ok := ix.t.ensured[did]; ok || ix.known.has(did) {
		return nil
	}
	n, err := ix.exec(`INSERT INTO actors (did) VALUES (?) ON CONFLICT (did) DO NOTHING`, did)
	if err != nil {
		return err
	}
	ix.t.ensured[did] = struct{}{}
	if n > 0 {
		ix.t.actor(did)
	}
	return nil
}

func (ix *indexTx) identity(ev *comatproto.SyncSubscribeRepos_Identity) error {
	if err := ix.ensureActor(ev.Did); err != nil {
		return err
	}
	if ev.Handle == nil {
		return nil // "may have changed" without a handle: keep the one we have
	}
	handle := strings.ToLower(*ev.Handle)
	if _, err := syntax.ParseHandle(handle); err != nil {
		handle = "handle.invalid"
	}
	if _, err := ix.exec(`UPDATE actors SET handle = ? WHERE did = ?`, handle, ev.Did); err != nil {
		return err
	}
	ix.t.actor(ev.Did)
	return ix.reindexActorSearch(ev.Did)
}

func (ix *indexTx) account(ev *comatproto.SyncSubscribeRepos_Account) error {
	if err := ix.ensureActor(ev.Did); err != nil {
		return err
	}
	var status any
	if !ev.Active {
		s := "deactivated"
		if ev.Status != nil && *ev.Status != "" {
			s = *ev.Status
		}
		status = s
	}
	if _, err := ix.exec(`UPDATE actors SET status = ? WHERE did = ?`, status, ev.Did); err != nil {
		return err
	}
	ix.t.actor(ev.Did)
	if status == "deleted" {
		// The repo is gone for good: drop its records so counts elsewhere drop too.
		return ix.deleteActorRecords(ev.Did, nil)
	}
	return nil
}

// reindexActorSearch rewrites the actor's row in actors_fts from actors.
func (ix *indexTx) reindexActorSearch(did string) error {
	var rowid int64
	var handle, name sql.NullString
	if err := ix.row(`SELECT rowid, handle, display_name FROM actors WHERE did = ?`, []any{did}, &rowid, &handle, &name); err != nil {
		return err
	}
	if _, err := ix.exec(`DELETE FROM actors_fts WHERE rowid = ?`, rowid); err != nil {
		return err
	}
	_, err := ix.exec(`INSERT INTO actors_fts (rowid, handle, display_name) VALUES (?, ?, ?)`, rowid, handle.String, name.String)
	return err
}

func (ix *indexTx) commit(c *comatproto.SyncSubscribeRepos_Commit) error {
	did, err := syntax.ParseDID(c.Repo)
	if err != nil {
		return nil // the relay checks this; nothing to index
	}
	if err := ix.ensureActor(did.String()); err != nil {
		return err
	}
	if c.Since == nil && c.PrevData == nil { // a repo's first commit
		ix.t.genesis[did.String()] = c.Rev
	} else if _, ok := ix.genesisRev(did.String()); ok {
		ix.t.genesis[did.String()] = "" // no longer only the first
	}
	var car *repo.CARFile
	for _, op := range c.Ops {
		collection, rkey, ok := strings.Cut(op.Path, "/")
		if !ok {
			continue
		}
		uri := "at://" + did.String() + "/" + op.Path
		switch repo.Action(op.Action) {
		case repo.ActionDelete:
			if err := ix.deleteRecord(collection, uri); err != nil {
				return err
			}
		case repo.ActionCreate, repo.ActionUpdate:
			if op.Cid == nil {
				continue
			}
			if car == nil {
				if car, err = repo.ParseCAR(c.Blocks, commitCARLimits); err != nil {
					ix.log.Debug("skip commit with unreadable blocks", "did", c.Repo, "rev", c.Rev, "err", err)
					return nil
				}
			}
			data, ok := car.Get(cid.Cid(*op.Cid))
			if !ok {
				continue
			}
			create := repo.Action(op.Action) == repo.ActionCreate
			if err := ix.putRecord(did.String(), collection, rkey, uri, op.Cid.String(), data, create); err != nil {
				return err
			}
		}
	}
	return nil
}

// putRecord indexes a created or updated record. A record already indexed with the same
// CID is left alone (replays are no-ops); a different CID replaces the old one. For a
// create, the lookup is skipped: every insert is ON CONFLICT DO NOTHING, so a duplicate
// create is still a no-op, and creates are most of the stream.
func (ix *indexTx) putRecord(did, collection, rkey, uri, cid string, cbor []byte, create bool) error {
	if !indexed(collection) {
		return nil
	}
	rec, err := repo.RecordFromCBOR(cbor)
	if err != nil || rec.Type != collection {
		ix.log.Debug("skip invalid record", "did", did, "uri", uri, "err", err)
		return nil
	}
	if !create || collection == colProfile {
		old, err := ix.recordCID(collection, uri)
		if err != nil {
			return err
		}
		if old == cid {
			return nil
		}
		if old != "" {
			if err := ix.deleteRecord(collection, uri); err != nil {
				return err
			}
		}
	}
	m := rec.Data
	ix.cur, ix.curJSON = rec, nil
	switch collection {
	case colPost:
		return ix.insertPost(did, uri, cid, rec)
	case colLike:
		return ix.insertLike(did, uri, cid, m)
	case colRepost:
		return ix.insertRepost(did, uri, cid, m)
	case colFollow:
		return ix.insertFollow(did, uri, cid, m)
	case colBlock:
		return ix.insertBlock(did, uri, cid, m)
	case colProfile:
		if rkey != "self" {
			return nil
		}
		return ix.putProfile(did, cid, m)
	case colList:
		return ix.insertList(did, uri, cid, m)
	case colListItem:
		return ix.insertListItem(did, uri, cid, m)
	case colListBlock:
		return ix.insertListBlock(did, uri, cid, m)
	case colThreadgate:
		return ix.insertGate(`threadgates`, did, uri, cid, rkey, rec)
	case colPostgate:
		return ix.insertGate(`postgates`, did, uri, cid, rkey, rec)
	case colGenerator:
		return ix.insertGenerator(did, uri, cid, rec)
	}
	return nil
}

func indexed(collection string) bool {
	switch collection {
	case colPost, colLike, colRepost, colFollow, colBlock, colProfile, colList, colListItem,
		colListBlock, colThreadgate, colPostgate, colGenerator:
		return true
	}
	return false
}

// tableOf maps a collection to the table holding its records.
func tableOf(collection string) string {
	switch collection {
	case colPost:
		return "posts"
	case colLike:
		return "likes"
	case colRepost:
		return "reposts"
	case colFollow:
		return "follows"
	case colBlock:
		return "blocks"
	case colList:
		return "lists"
	case colListItem:
		return "list_items"
	case colListBlock:
		return "list_blocks"
	case colThreadgate:
		return "threadgates"
	case colPostgate:
		return "postgates"
	case colGenerator:
		return "feed_generators"
	}
	return ""
}

// recordCID returns the CID under which uri is indexed, or "" when it is not indexed.
func (ix *indexTx) recordCID(collection, uri string) (string, error) {
	if collection == colProfile {
		var c sql.NullString
		err := ix.row(`SELECT profile_cid FROM actors WHERE did = ?`, []any{uriAuthority(uri)}, &c)
		if errors.Is(err, sql.ErrNoRows) {
			return "", nil
		}
		return c.String, err
	}
	table := tableOf(collection)
	var c string
	err := ix.row(`SELECT cid FROM `+table+` WHERE uri = ?`, []any{uri}, &c)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return c, err
}

// deleteRecord removes uri from the index and undoes its counts; unknown URIs are a no-op.
func (ix *indexTx) deleteRecord(collection, uri string) error {
	switch collection {
	case colPost:
		return ix.deletePost(uri)
	case colLike:
		return ix.deleteLike(uri)
	case colRepost:
		return ix.deleteRepost(uri)
	case colFollow:
		return ix.deleteFollow(uri)
	case colBlock:
		return ix.deleteBlock(uri)
	case colProfile:
		if !strings.HasSuffix(uri, "/self") {
			return nil
		}
		return ix.deleteProfile(uriAuthority(uri))
	case colList:
		return ix.deleteList(uri)
	case colListItem:
		return ix.deleteListItem(uri)
	case colListBlock:
		_, err := ix.exec(`DELETE FROM list_blocks WHERE uri = ?`, uri)
		return err
	case colThreadgate, colPostgate:
		table := tableOf(collection)
		var post string
		err := ix.row(`DELETE FROM `+table+` WHERE uri = ? RETURNING post`, []any{uri}, &post)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		ix.t.post(post)
		if collection == colPostgate {
			return ix.applyPostgate(post, nil)
		}
		return nil
	case colGenerator:
		return ix.deleteGenerator(uri)
	}
	return nil
}

// deleteActorRecords removes everything did authored except the URIs in keep (account
// deletion keeps nothing; a reindex keeps what the repo still has).
func (ix *indexTx) deleteActorRecords(did string, keep map[string]bool) error {
	for _, collection := range []string{colPost, colLike, colRepost, colFollow, colBlock, colList,
		colListItem, colListBlock, colThreadgate, colPostgate, colGenerator} {
		table := tableOf(collection)
		q := `SELECT uri FROM ` + table + ` WHERE author = ?`
		if collection == colThreadgate || collection == colPostgate {
			q = `SELECT uri FROM ` + table + ` WHERE uri >= ? AND uri < ?`
		}
		args := []any{did}
		if collection == colThreadgate || collection == colPostgate {
			args = []any{"at://" + did + "/", "at://" + did + "0"}
		}
		uris, err := ix.strings(q, args...)
		if err != nil {
			return err
		}
		for _, u := range uris {
			if keep[u] {
				continue
			}
			if err := ix.deleteRecord(collection, u); err != nil {
				return err
			}
		}
	}
	if keep["at://"+did+"/"+colProfile+"/self"] {
		return nil
	}
	return ix.deleteProfile(did)
}

// strings runs q and returns its single text column.
func (ix *indexTx) strings(q string, args ...any) ([]string, error) {
	s, err := ix.stmt(q)
	if err != nil {
		return nil, err
	}
	rows, err := s.QueryContext(ix.ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", firstLine(q), err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("query %q: %w", firstLine(q), err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query %q: %w", firstLine(q), err)
	}
	return out, nil
}

// notify records one notification; a second one for the same recipient and record is
// ignored, nobody is notified of their own actions, and only hosted accounts are notified.
func (ix *indexTx) notify(recipient, author, reason, reasonSubject, uri, cid string) error {
	if recipient == "" || recipient == author || (ix.hosted != nil && !ix.hosted(recipient)) {
		return nil
	}
	js := "" // a plain record: listNotifications rebuilds it from its row
	if !plainRecord(ix.cur.Type, ix.cur.Data) {
		var err error
		if js, err = ix.currentJSON(); err != nil {
			return nil // a record that cannot be rendered cannot be shown either
		}
	}
	_, err := ix.exec(`INSERT INTO notifications (recipient, author, reason, reason_subject, uri, cid, record, indexed_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uri, recipient) DO NOTHING`,
		recipient, author, reason, nullStr(reasonSubject), uri, cid, js, ix.at.UnixMicro())
	return err
}

func (ix *indexTx) insertPost(did, uri, cid string, rec *repo.Record) error {
	p, ok := parsePost(rec.Data)
	if !ok {
		return nil
	}
	js, err := ix.currentJSON()
	if err != nil {
		return nil
	}
	createdRaw, created := createdAtOf(rec.Data, ix.at)
	sortAt := sortAt(created, ix.at)
	violates := false
	if p.replyRoot != "" {
		if violates, err = ix.violatesThreadgate(did, p); err != nil {
			return err
		}
	}
	detached := false
	if p.quoteURI != "" {
		gate, err := ix.postgate(p.quoteURI)
		if err != nil {
			return err
		}
		detached = gate.detaches(p.quoteURI, uri, did)
	}
	// Likes, reposts, replies and quotes may have arrived before the post (another host's
	// stream, a reindex): the insert counts what is there.
	var rowid int64
	err = ix.row(`INSERT INTO posts (uri, cid, author, record, created_at, indexed_at, sort_at,
			reply_root, reply_parent, quote_uri, media, langs, violates_gate, embed_detached,
			like_count, repost_count, reply_count, quote_count)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
			(SELECT count(*) FROM likes WHERE subject = ?1),
			(SELECT count(*) FROM reposts WHERE subject = ?1),
			(SELECT count(*) FROM posts p WHERE p.reply_parent = ?1 AND p.violates_gate = 0),
			(SELECT count(*) FROM posts p WHERE p.quote_uri = ?1 AND p.embed_detached = 0))
		ON CONFLICT (uri) DO NOTHING RETURNING rowid`,
		[]any{uri, cid, did, js, createdRaw, ix.at.UnixMicro(), sortAt,
			nullStr(p.replyRoot), nullStr(p.replyPar), nullStr(p.quoteURI), p.media, nullStr(p.langs), violates, detached},
		&rowid)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	ix.t.post(uri)
	ix.t.actor(did)
	// A postgate may have arrived before its post (another host's stream, a reindex).
	if gate, err := ix.postgate(uri); err != nil {
		return err
	} else if gate != nil {
		if err := ix.applyPostgate(uri, gate); err != nil {
			return err
		}
	}
	if ix.search == nil {
		ix.search = map[int64]string{}
	}
	ix.search[rowid] = p.text
	var rootAuthor any
	if p.replyRoot != "" {
		rootAuthor = uriAuthority(p.replyRoot)
	}
	if !violates {
		if _, err := ix.exec(`INSERT INTO feed_items (originator, sort_at, uri, post_uri, reply_root_author, media)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, did, sortAt, uri, uri, rootAuthor, p.media); err != nil {
			return err
		}
	}
	if _, err := ix.exec(`UPDATE actors SET posts_count = posts_count + 1, last_item_at = max(last_item_at, ?) WHERE did = ?`, sortAt, did); err != nil {
		return err
	}
	if p.replyPar != "" && !violates {
		if _, err := ix.exec(`UPDATE posts SET reply_count = reply_count + 1 WHERE uri = ?`, p.replyPar); err != nil {
			return err
		}
		ix.t.post(p.replyPar)
	}
	if p.quoteURI != "" && !detached {
		if _, err := ix.exec(`UPDATE posts SET quote_count = quote_count + 1 WHERE uri = ?`, p.quoteURI); err != nil {
			return err
		}
		ix.t.post(p.quoteURI)
	}
	if violates {
		return nil // no notifications for a reply the thread's owner did not allow
	}
	// Notifications in priority order: a recipient gets one per record.
	if p.replyPar != "" {
		ancestor := p.replyPar
		for range maxReplyNotifyDepth {
			if err := ix.notify(uriAuthority(ancestor), did, "reply", ancestor, uri, cid); err != nil {
				return err
			}
			var parent sql.NullString
			err := ix.row(`SELECT reply_parent FROM posts WHERE uri = ?`, []any{ancestor}, &parent)
			if errors.Is(err, sql.ErrNoRows) || !parent.Valid {
				break
			}
			if err != nil {
				return err
			}
			ancestor = parent.String
		}
	}
	if p.quoteURI != "" && !detached && uriCollection(p.quoteURI) == colPost {
		if err := ix.notify(uriAuthority(p.quoteURI), did, "quote", p.quoteURI, uri, cid); err != nil {
			return err
		}
	}
	for _, m := range p.mentions {
		if err := ix.notify(m, did, "mention", "", uri, cid); err != nil {
			return err
		}
	}
	return nil
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// violatesThreadgate reports whether a reply by did breaks the threadgate of its root
// (atproto-reference §10): absent allow means anyone, [] nobody; the root's author may
// always reply.
func (ix *indexTx) violatesThreadgate(did string, p post) (bool, error) {
	rootAuthor := uriAuthority(p.replyRoot)
	if rootAuthor == did {
		return false, nil
	}
	var raw string
	err := ix.row(`SELECT record FROM threadgates WHERE post = ?`, []any{p.replyRoot}, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var gate struct {
		Allow *[]struct {
			Type string `json:"$type"`
			List string `json:"list"`
		} `json:"allow"`
	}
	if json.Unmarshal([]byte(raw), &gate) != nil || gate.Allow == nil {
		return false, nil
	}
	for _, rule := range *gate.Allow {
		var q string
		var args []any
		switch rule.Type {
		case "app.bsky.feed.threadgate#mentionRule":
			var rec string
			err := ix.row(`SELECT record FROM posts WHERE uri = ?`, []any{p.replyRoot}, &rec)
			if err == nil && strings.Contains(rec, `"did":"`+did+`"`) {
				return false, nil
			}
			continue
		case "app.bsky.feed.threadgate#followerRule":
			q, args = `SELECT 1 FROM follows WHERE author = ? AND subject = ? LIMIT 1`, []any{did, rootAuthor}
		case "app.bsky.feed.threadgate#followingRule":
			q, args = `SELECT 1 FROM follows WHERE author = ? AND subject = ? LIMIT 1`, []any{rootAuthor, did}
		case "app.bsky.feed.threadgate#listRule":
			q, args = `SELECT 1 FROM list_items WHERE list = ? AND subject = ? LIMIT 1`, []any{rule.List, did}
		default:
			continue
		}
		var one int
		err := ix.row(q, args, &one)
		if err == nil {
			return false, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, err
		}
	}
	return true, nil
}

func (ix *indexTx) deletePost(uri string) error {
	var rowid int64
	var author string
	var parent, quote sql.NullString
	var violates, detached bool
	var at int64
	err := ix.row(`DELETE FROM posts WHERE uri = ? RETURNING rowid, author, reply_parent, quote_uri, violates_gate, embed_detached, sort_at`,
		[]any{uri}, &rowid, &author, &parent, &quote, &violates, &detached, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	ix.t.post(uri)
	ix.t.actor(author)
	if _, pending := ix.search[rowid]; pending {
		delete(ix.search, rowid) // created in this transaction: not in posts_fts yet
	} else if _, err := ix.exec(`DELETE FROM posts_fts WHERE rowid = ?`, rowid); err != nil {
		return err
	}
	if _, err := ix.exec(`DELETE FROM feed_items WHERE originator = ? AND sort_at = ? AND uri = ?`, author, at, uri); err != nil {
		return err
	}
	if _, err := ix.exec(`UPDATE actors SET posts_count = max(posts_count - 1, 0) WHERE did = ?`, author); err != nil {
		return err
	}
	if parent.Valid && !violates {
		if _, err := ix.exec(`UPDATE posts SET reply_count = max(reply_count - 1, 0) WHERE uri = ?`, parent.String); err != nil {
			return err
		}
		ix.t.post(parent.String)
	}
	if quote.Valid && !detached {
		if _, err := ix.exec(`UPDATE posts SET quote_count = max(quote_count - 1, 0) WHERE uri = ?`, quote.String); err != nil {
			return err
		}
		ix.t.post(quote.String)
	}
	_, err = ix.exec(`DELETE FROM notifications WHERE uri = ?`, uri)
	return err
}

func (ix *indexTx) insertLike(did, uri, cid string, m map[string]any) error {
	subject, subjectCID, ok := readStrongRef(mapOf(m, "subject"))
	if !ok {
		return nil
	}
	via, _, _ := readStrongRef(mapOf(m, "via"))
	createdRaw, created := createdAtOf(m, ix.at)
	n, err := ix.exec(`INSERT INTO likes (uri, cid, author, subject, subject_cid, via, created_at, indexed_at, sort_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uri) DO NOTHING`,
		uri, cid, did, subject, subjectCID, nullStr(via), createdRaw, ix.at.UnixMicro(), sortAt(created, ix.at))
	if err != nil || n == 0 {
		return err
	}
	if err := ix.bumpLike(subject, +1); err != nil {
		return err
	}
	if err := ix.notify(uriAuthority(subject), did, "like", subject, uri, cid); err != nil {
		return err
	}
	if via != "" {
		return ix.notify(uriAuthority(via), did, "like-via-repost", via, uri, cid)
	}
	return nil
}

func (ix *indexTx) bumpLike(subject string, d int) error {
	var q string
	switch uriCollection(subject) {
	case colPost:
		q = `UPDATE posts SET like_count = max(like_count + ?, 0) WHERE uri = ?`
		ix.t.post(subject)
	case colGenerator:
		q = `UPDATE feed_generators SET like_count = max(like_count + ?, 0) WHERE uri = ?`
	default:
		return nil
	}
	_, err := ix.exec(q, d, subject)
	return err
}

func (ix *indexTx) deleteLike(uri string) error {
	var subject string
	err := ix.row(`DELETE FROM likes WHERE uri = ? RETURNING subject`, []any{uri}, &subject)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := ix.bumpLike(subject, -1); err != nil {
		return err
	}
	_, err = ix.exec(`DELETE FROM notifications WHERE uri = ?`, uri)
	return err
}

func (ix *indexTx) insertRepost(did, uri, cid string, m map[string]any) error {
	subject, subjectCID, ok := readStrongRef(mapOf(m, "subject"))
	if !ok || uriCollection(subject) != colPost {
		return nil
	}
	via, _, _ := readStrongRef(mapOf(m, "via"))
	createdRaw, created := createdAtOf(m, ix.at)
	at := sortAt(created, ix.at)
	n, err := ix.exec(`INSERT INTO reposts (uri, cid, author, subject, subject_cid, via, created_at, indexed_at, sort_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uri) DO NOTHING`,
		uri, cid, did, subject, subjectCID, nullStr(via), createdRaw, ix.at.UnixMicro(), at)
	if err != nil || n == 0 {
		return err
	}
	ix.t.post(subject)
	ix.t.actor(did)
	if _, err := ix.exec(`UPDATE posts SET repost_count = repost_count + 1 WHERE uri = ?`, subject); err != nil {
		return err
	}
	if _, err := ix.exec(`INSERT INTO feed_items (originator, sort_at, uri, post_uri, repost_cid)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, did, at, uri, subject, cid); err != nil {
		return err
	}
	if _, err := ix.exec(`UPDATE actors SET last_item_at = max(last_item_at, ?) WHERE did = ?`, at, did); err != nil {
		return err
	}
	if err := ix.notify(uriAuthority(subject), did, "repost", subject, uri, cid); err != nil {
		return err
	}
	if via != "" {
		return ix.notify(uriAuthority(via), did, "repost-via-repost", via, uri, cid)
	}
	return nil
}

func (ix *indexTx) deleteRepost(uri string) error {
	var subject, author string
	var at int64
	err := ix.row(`DELETE FROM reposts WHERE uri = ? RETURNING subject, author, sort_at`, []any{uri}, &subject, &author, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	ix.t.post(subject)
	if _, err := ix.exec(`UPDATE posts SET repost_count = max(repost_count - 1, 0) WHERE uri = ?`, subject); err != nil {
		return err
	}
	if _, err := ix.exec(`DELETE FROM feed_items WHERE originator = ? AND sort_at = ? AND uri = ?`, author, at, uri); err != nil {
		return err
	}
	_, err = ix.exec(`DELETE FROM notifications WHERE uri = ?`, uri)
	return err
}

// insertFollow indexes a follow. Duplicate follows of the same subject are kept as rows
// but counted once (the AppView ignores duplicates, §10): the count updates only apply
// while this is the pair's only row.
func (ix *indexTx) insertFollow(did, uri, cid string, m map[string]any) error {
	subject, ok := didOf(m, "subject")
	if !ok {
		return nil
	}
	createdRaw, created := createdAtOf(m, ix.at)
	n, err := ix.exec(`INSERT INTO follows (uri, cid, author, subject, created_at, sort_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uri) DO NOTHING`,
		uri, cid, did, subject, createdRaw, sortAt(created, ix.at))
	if err != nil || n == 0 {
		return err
	}
	ix.t.follow(did)
	n, err = ix.exec(`UPDATE actors SET follows_count = follows_count + 1
		WHERE did = ?1 AND (SELECT count(*) FROM follows WHERE author = ?1 AND subject = ?2) = 1`, did, subject)
	if err != nil || n == 0 {
		return err
	}
	if _, err := ix.exec(`INSERT INTO actors (did, followers_count) VALUES (?, 1)
		ON CONFLICT (did) DO UPDATE SET followers_count = followers_count + 1`, subject); err != nil {
		return err
	}
	ix.t.actor(did)
	ix.t.actor(subject)
	return ix.notify(subject, did, "follow", "", uri, cid)
}

func (ix *indexTx) deleteFollow(uri string) error {
	var author, subject string
	err := ix.row(`DELETE FROM follows WHERE uri = ? RETURNING author, subject`, []any{uri}, &author, &subject)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	ix.t.follow(author)
	var left int
	if err := ix.row(`SELECT count(*) FROM follows WHERE author = ? AND subject = ?`, []any{author, subject}, &left); err != nil {
		return err
	}
	if left == 0 {
		if _, err := ix.exec(`UPDATE actors SET follows_count = max(follows_count - 1, 0) WHERE did = ?`, author); err != nil {
			return err
		}
		if _, err := ix.exec(`UPDATE actors SET followers_count = max(followers_count - 1, 0) WHERE did = ?`, subject); err != nil {
			return err
		}
		ix.t.actor(author)
		ix.t.actor(subject)
	}
	_, err = ix.exec(`DELETE FROM notifications WHERE uri = ?`, uri)
	return err
}

func (ix *indexTx) insertBlock(did, uri, cid string, m map[string]any) error {
	subject, ok := didOf(m, "subject")
	if !ok {
		return nil
	}
	createdRaw, created := createdAtOf(m, ix.at)
	_, err := ix.exec(`INSERT INTO blocks (uri, cid, author, subject, created_at, sort_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uri) DO NOTHING`,
		uri, cid, did, subject, createdRaw, sortAt(created, ix.at))
	return err
}

func (ix *indexTx) deleteBlock(uri string) error {
	_, err := ix.exec(`DELETE FROM blocks WHERE uri = ?`, uri)
	return err
}

func (ix *indexTx) putProfile(did, cid string, m map[string]any) error {
	var pinnedURI, pinnedCID any
	if u, c, ok := readStrongRef(mapOf(m, "pinnedPost")); ok {
		pinnedURI, pinnedCID = u, c
	}
	_, err := ix.exec(`UPDATE actors SET profile_cid = ?, display_name = ?, description = ?, pronouns = ?, website = ?,
			avatar = ?, banner = ?, pinned_uri = ?, pinned_cid = ?, labels = ?, created_at = ?, indexed_at = ?
		WHERE did = ?`,
		cid, nullStr(strOf(m, "displayName")), nullStr(strOf(m, "description")), nullStr(strOf(m, "pronouns")),
		nullStr(strOf(m, "website")), nullStr(blobCID(m["avatar"])), nullStr(blobCID(m["banner"])),
		pinnedURI, pinnedCID, nullStr(selfLabels(m)), nullStr(strOf(m, "createdAt")), ix.at.UnixMicro(), did)
	if err != nil {
		return err
	}
	ix.t.actor(did)
	return ix.reindexActorSearch(did)
}

func (ix *indexTx) deleteProfile(did string) error {
	n, err := ix.exec(`UPDATE actors SET profile_cid = NULL, display_name = NULL, description = NULL, pronouns = NULL,
			website = NULL, avatar = NULL, banner = NULL, pinned_uri = NULL, pinned_cid = NULL, labels = NULL, created_at = NULL
		WHERE did = ? AND profile_cid IS NOT NULL`, did)
	if err != nil || n == 0 {
		return err
	}
	ix.t.actor(did)
	return ix.reindexActorSearch(did)
}

// selfLabels returns the record's self-label values joined by commas, or "".
func selfLabels(m map[string]any) string {
	l := mapOf(m, "labels")
	if strOf(l, "$type") != "com.atproto.label.defs#selfLabels" {
		return ""
	}
	var vals []string
	for _, v := range listOf(l, "values") {
		if vm, ok := v.(map[string]any); ok {
			if s := strOf(vm, "val"); s != "" && !strings.Contains(s, ",") {
				vals = append(vals, s)
			}
		}
	}
	return strings.Join(vals, ",")
}

func (ix *indexTx) insertList(did, uri, cid string, m map[string]any) error {
	name, purpose := strOf(m, "name"), strOf(m, "purpose")
	if name == "" || purpose == "" {
		return nil
	}
	n, err := ix.exec(`INSERT INTO lists (uri, cid, author, name, purpose, description, avatar, labels, indexed_at, item_count)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT count(*) FROM list_items WHERE list = ?1)) ON CONFLICT (uri) DO NOTHING`,
		uri, cid, did, name, purpose, nullStr(strOf(m, "description")), nullStr(blobCID(m["avatar"])),
		nullStr(selfLabels(m)), ix.at.UnixMicro())
	if err != nil || n == 0 {
		return err
	}
	ix.t.actor(did)
	_, err = ix.exec(`UPDATE actors SET lists_count = lists_count + 1 WHERE did = ?`, did)
	return err
}

func (ix *indexTx) deleteList(uri string) error {
	var author string
	err := ix.row(`DELETE FROM lists WHERE uri = ? RETURNING author`, []any{uri}, &author)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	ix.t.actor(author)
	_, err = ix.exec(`UPDATE actors SET lists_count = max(lists_count - 1, 0) WHERE did = ?`, author)
	return err
}

func (ix *indexTx) insertListItem(did, uri, cid string, m map[string]any) error {
	subject, ok := didOf(m, "subject")
	list := strOf(m, "list")
	// A list's items live in the list owner's repo.
	if !ok || uriAuthority(list) != did || uriCollection(list) != colList {
		return nil
	}
	n, err := ix.exec(`INSERT INTO list_items (uri, cid, author, list, subject, sort_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uri) DO NOTHING`,
		uri, cid, did, list, subject, ix.at.UnixMicro())
	if err != nil || n == 0 {
		return err
	}
	_, err = ix.exec(`UPDATE lists SET item_count = item_count + 1 WHERE uri = ?`, list)
	return err
}

func (ix *indexTx) deleteListItem(uri string) error {
	var list string
	err := ix.row(`DELETE FROM list_items WHERE uri = ? RETURNING list`, []any{uri}, &list)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = ix.exec(`UPDATE lists SET item_count = max(item_count - 1, 0) WHERE uri = ?`, list)
	return err
}

func (ix *indexTx) insertListBlock(did, uri, cid string, m map[string]any) error {
	list := strOf(m, "subject")
	if uriCollection(list) != colList {
		return nil
	}
	_, err := ix.exec(`INSERT INTO list_blocks (uri, cid, author, list) VALUES (?, ?, ?, ?) ON CONFLICT (uri) DO NOTHING`, uri, cid, did, list)
	return err
}

// insertGate indexes a threadgate or postgate. Its rkey is the post's rkey in the same
// repo (§10); one naming another post is ignored.
func (ix *indexTx) insertGate(table, did, uri, cid, rkey string, rec *repo.Record) error {
	post := strOf(rec.Data, "post")
	if post != "at://"+did+"/"+colPost+"/"+rkey {
		return nil
	}
	js, err := recordJSON(rec)
	if err != nil {
		return nil
	}
	q := `INSERT INTO threadgates (uri, cid, post, record) VALUES (?, ?, ?, ?) ON CONFLICT (uri) DO NOTHING`
	args := []any{uri, cid, post, string(js)}
	if table == "postgates" {
		q = `INSERT INTO postgates (uri, cid, post, record) VALUES (?, ?, ?, ?) ON CONFLICT (uri) DO NOTHING`
	}
	n, err := ix.exec(q, args...)
	if err != nil || n == 0 {
		return err
	}
	ix.t.post(post)
	if table == "postgates" {
		return ix.applyPostgate(post, parsePostgate(js))
	}
	return nil
}

func (ix *indexTx) insertGenerator(did, uri, cid string, rec *repo.Record) error {
	svc, ok := didOf(rec.Data, "did")
	name := strOf(rec.Data, "displayName")
	if !ok || name == "" {
		return nil
	}
	js, err := recordJSON(rec)
	if err != nil {
		return nil
	}
	n, err := ix.exec(`INSERT INTO feed_generators (uri, cid, author, did, display_name, record, indexed_at, like_count)
		VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT count(*) FROM likes WHERE subject = ?1)) ON CONFLICT (uri) DO NOTHING`,
		uri, cid, did, svc, name, string(js), ix.at.UnixMicro())
	if err != nil || n == 0 {
		return err
	}
	ix.t.actor(did)
	_, err = ix.exec(`UPDATE actors SET feedgens_count = feedgens_count + 1 WHERE did = ?`, did)
	return err
}

func (ix *indexTx) deleteGenerator(uri string) error {
	var author string
	err := ix.row(`DELETE FROM feed_generators WHERE uri = ? RETURNING author`, []any{uri}, &author)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	ix.t.actor(author)
	_, err = ix.exec(`UPDATE actors SET feedgens_count = max(feedgens_count - 1, 0) WHERE did = ?`, author)
	return err
}
