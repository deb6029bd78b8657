-- The app.bsky index. Everything here is derived from repos and can be rebuilt.
-- Times are INTEGER microseconds since the Unix epoch; URIs and DIDs are TEXT.

-- meta holds the indexer's durable cursor (key 'cursor'), written in the same
-- transaction as the index changes of the events it covers.
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) STRICT;

-- One row per account seen: its handle (from #identity), status (from #account; NULL
-- when active), profile record fields, and counts kept incrementally.
CREATE TABLE actors (
	did             TEXT PRIMARY KEY,
	handle          TEXT,
	status          TEXT,
	needs_reindex   INTEGER NOT NULL DEFAULT 0,
	profile_cid     TEXT,
	display_name    TEXT,
	description     TEXT,
	pronouns        TEXT,
	website         TEXT,
	avatar          TEXT,
	banner          TEXT,
	pinned_uri      TEXT,
	pinned_cid      TEXT,
	labels          TEXT,
	created_at      TEXT,
	indexed_at      INTEGER NOT NULL DEFAULT 0,
	followers_count INTEGER NOT NULL DEFAULT 0,
	follows_count   INTEGER NOT NULL DEFAULT 0,
	posts_count     INTEGER NOT NULL DEFAULT 0,
	lists_count     INTEGER NOT NULL DEFAULT 0,
	feedgens_count  INTEGER NOT NULL DEFAULT 0,
	-- last_item_at is an upper bound of the actor's newest feed item, so the timeline
	-- merge can skip accounts that have nothing new enough.
	last_item_at    INTEGER NOT NULL DEFAULT 0,
	-- seen_at is the notification seenAt (updateSeen), for local viewers.
	seen_at         INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX actors_handle ON actors (handle);
CREATE INDEX actors_reindex ON actors (did) WHERE needs_reindex = 1;

CREATE TABLE posts (
	uri           TEXT PRIMARY KEY,
	cid           TEXT NOT NULL,
	author        TEXT NOT NULL,
	record        TEXT NOT NULL, -- the record as JSON, exactly as getRecord renders it
	text          TEXT NOT NULL,
	created_at    TEXT NOT NULL,
	indexed_at    INTEGER NOT NULL,
	sort_at       INTEGER NOT NULL,
	reply_root    TEXT,
	reply_parent  TEXT,
	quote_uri     TEXT,
	media         INTEGER NOT NULL DEFAULT 0, -- mediaNone, mediaImages, mediaVideo, mediaExternal
	langs         TEXT,
	violates_gate INTEGER NOT NULL DEFAULT 0,
	like_count    INTEGER NOT NULL DEFAULT 0,
	repost_count  INTEGER NOT NULL DEFAULT 0,
	reply_count   INTEGER NOT NULL DEFAULT 0,
	quote_count   INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX posts_author ON posts (author, sort_at);
CREATE INDEX posts_parent ON posts (reply_parent, sort_at) WHERE reply_parent IS NOT NULL;
CREATE INDEX posts_root ON posts (reply_root) WHERE reply_root IS NOT NULL;
CREATE INDEX posts_quote ON posts (quote_uri, sort_at) WHERE quote_uri IS NOT NULL;

-- Full-text search over post text; rowid is posts.rowid.
CREATE VIRTUAL TABLE posts_fts USING fts5 (text, content = '', contentless_delete = 1);

-- feed_items are posts and reposts, clustered by who put them in feeds, newest last,
-- so a timeline reads a short range per followed account.
CREATE TABLE feed_items (
	originator  TEXT NOT NULL,
	sort_at     INTEGER NOT NULL,
	uri         TEXT NOT NULL, -- the post, or the repost record
	post_uri    TEXT NOT NULL,
	repost_cid  TEXT,          -- set for reposts
	reply_root_author TEXT,    -- set for replies: author of the thread root
	media       INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (originator, sort_at, uri)
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX feed_items_uri ON feed_items (uri);

CREATE TABLE likes (
	uri         TEXT PRIMARY KEY,
	cid         TEXT NOT NULL,
	author      TEXT NOT NULL,
	subject     TEXT NOT NULL,
	subject_cid TEXT NOT NULL,
	via         TEXT,
	created_at  TEXT NOT NULL,
	indexed_at  INTEGER NOT NULL,
	sort_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX likes_subject ON likes (subject, sort_at);
CREATE INDEX likes_author_subject ON likes (author, subject);
CREATE INDEX likes_author ON likes (author, sort_at);

CREATE TABLE reposts (
	uri         TEXT PRIMARY KEY,
	cid         TEXT NOT NULL,
	author      TEXT NOT NULL,
	subject     TEXT NOT NULL,
	subject_cid TEXT NOT NULL,
	via         TEXT,
	created_at  TEXT NOT NULL,
	indexed_at  INTEGER NOT NULL,
	sort_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX reposts_subject ON reposts (subject, sort_at);
CREATE INDEX reposts_author_subject ON reposts (author, subject);

CREATE TABLE follows (
	uri        TEXT PRIMARY KEY,
	cid        TEXT NOT NULL,
	author     TEXT NOT NULL,
	subject    TEXT NOT NULL,
	created_at TEXT NOT NULL,
	sort_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX follows_author ON follows (author, subject);
CREATE INDEX follows_subject ON follows (subject, sort_at);

CREATE TABLE blocks (
	uri        TEXT PRIMARY KEY,
	cid        TEXT NOT NULL,
	author     TEXT NOT NULL,
	subject    TEXT NOT NULL,
	created_at TEXT NOT NULL,
	sort_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX blocks_author ON blocks (author, subject);
CREATE INDEX blocks_subject ON blocks (subject, author);

CREATE TABLE lists (
	uri         TEXT PRIMARY KEY,
	cid         TEXT NOT NULL,
	author      TEXT NOT NULL,
	name        TEXT NOT NULL,
	purpose     TEXT NOT NULL,
	description TEXT,
	avatar      TEXT,
	labels      TEXT,
	indexed_at  INTEGER NOT NULL,
	item_count  INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX lists_author ON lists (author, indexed_at);

CREATE TABLE list_items (
	uri      TEXT PRIMARY KEY,
	cid      TEXT NOT NULL,
	author   TEXT NOT NULL,
	list     TEXT NOT NULL,
	subject  TEXT NOT NULL,
	sort_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX list_items_list ON list_items (list, sort_at);
CREATE INDEX list_items_subject ON list_items (subject, list);

CREATE TABLE list_blocks (
	uri     TEXT PRIMARY KEY,
	cid     TEXT NOT NULL,
	author  TEXT NOT NULL,
	list    TEXT NOT NULL
) STRICT;
CREATE INDEX list_blocks_author ON list_blocks (author, list);
CREATE INDEX list_blocks_list ON list_blocks (list);

CREATE TABLE threadgates (
	uri     TEXT PRIMARY KEY,
	cid     TEXT NOT NULL,
	post    TEXT NOT NULL,
	record  TEXT NOT NULL
) STRICT;
CREATE INDEX threadgates_post ON threadgates (post);

CREATE TABLE postgates (
	uri     TEXT PRIMARY KEY,
	cid     TEXT NOT NULL,
	post    TEXT NOT NULL,
	record  TEXT NOT NULL
) STRICT;
CREATE INDEX postgates_post ON postgates (post);

CREATE TABLE feed_generators (
	uri          TEXT PRIMARY KEY,
	cid          TEXT NOT NULL,
	author       TEXT NOT NULL,
	did          TEXT NOT NULL,
	display_name TEXT NOT NULL,
	record       TEXT NOT NULL,
	indexed_at   INTEGER NOT NULL,
	like_count   INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX feed_generators_author ON feed_generators (author, indexed_at);

-- Mutes are private viewer state set by graph.muteActor, not records.
CREATE TABLE mutes (
	viewer     TEXT NOT NULL,
	subject    TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (viewer, subject)
) STRICT, WITHOUT ROWID;

CREATE TABLE notifications (
	id             INTEGER PRIMARY KEY,
	recipient      TEXT NOT NULL,
	author         TEXT NOT NULL,
	reason         TEXT NOT NULL,
	reason_subject TEXT,
	uri            TEXT NOT NULL, -- the record that caused it
	cid            TEXT NOT NULL,
	record         TEXT NOT NULL, -- that record as JSON
	indexed_at     INTEGER NOT NULL,
	UNIQUE (uri, recipient) -- one per recipient per record; also finds them on delete
) STRICT;
CREATE INDEX notifications_recipient ON notifications (recipient, id);

-- Actor search over handles and display names; rowid is actors.rowid.
CREATE VIRTUAL TABLE actors_fts USING fts5 (handle, display_name, content = '', contentless_delete = 1, tokenize = "unicode61 tokenchars '.-'");
