-- One actor's repository. Keys are compact (binary CIDs, TIDs as integers) and every table
-- but the two single-row ones is WITHOUT ROWID, so a commit touches as few B-tree pages (and
-- so WAL pages) as possible: there is no secondary index anywhere.

-- Every block of the current repo: the head commit, the MST nodes and the record values.
-- rev is the integer form of the TID of the commit that wrote the block (getRepo?since);
-- refs counts the records whose value is this block (0 for MST nodes and the commit), so a
-- record block is deleted when the last record using it goes.
CREATE TABLE blocks (
	cid  BLOB    NOT NULL PRIMARY KEY,
	rev  INTEGER NOT NULL,
	refs INTEGER NOT NULL,
	data BLOB    NOT NULL
) WITHOUT ROWID;

-- The record index: path -> value CID, ordered for listRecords. rev as in blocks.
CREATE TABLE records (
	collection TEXT    NOT NULL,
	rkey       TEXT    NOT NULL,
	cid        BLOB    NOT NULL,
	rev        INTEGER NOT NULL,
	PRIMARY KEY (collection, rkey)
) WITHOUT ROWID;

-- The head: exactly one row once the repo exists.
CREATE TABLE root (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	commit_cid BLOB NOT NULL,
	rev        TEXT NOT NULL,
	data_cid   BLOB NOT NULL
);

-- Blobs referenced by records. Keyed blob first: "is this blob still used" is a prefix
-- seek; a record's own blobs are found again from its value when it is deleted.
CREATE TABLE blob_refs (
	blob       BLOB NOT NULL,
	collection TEXT NOT NULL,
	rkey       TEXT NOT NULL,
	PRIMARY KEY (blob, collection, rkey)
) WITHOUT ROWID;

-- Records pointing at a subject (an AT-URI or a DID): likes, reposts, follows, blocks and
-- reply parents. Keyed subject first for "does this account already like X".
CREATE TABLE backlinks (
	subject    TEXT NOT NULL,
	collection TEXT NOT NULL,
	rkey       TEXT NOT NULL,
	PRIMARY KEY (subject, collection, rkey)
) WITHOUT ROWID;

-- app.bsky preferences: the JSON array as the client sent it.
CREATE TABLE preferences (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	json BLOB NOT NULL
);
