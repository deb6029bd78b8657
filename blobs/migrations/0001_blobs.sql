-- One row per (account, blob). rev is NULL while the blob is temporary (uploaded, not
-- yet referenced by a committed record) and the rev of the commit that first referenced
-- it afterwards; created_at (unix milliseconds) is when the grace period started.
CREATE TABLE blobs (
	did        TEXT    NOT NULL,
	cid        TEXT    NOT NULL,
	mime       TEXT    NOT NULL,
	size       INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	rev        TEXT,
	PRIMARY KEY (did, cid)
) WITHOUT ROWID;

-- GC looks only at temporary blobs, oldest first.
CREATE INDEX blobs_temporary ON blobs (created_at) WHERE rev IS NULL;
