-- The event log: one row per sequenced event, its wire frame stored exactly as sent, so a
-- replay is a byte copy. time (unix microseconds of sequencing) sits before frame so that
-- pruning reads it without touching the frame's overflow pages.
CREATE TABLE events (
	seq   INTEGER PRIMARY KEY,
	kind  TEXT    NOT NULL,
	did   TEXT    NOT NULL,
	time  INTEGER NOT NULL,
	frame BLOB    NOT NULL
) STRICT;

-- The newest #commit or #sync rev per repo. It is never pruned, so startup repair can
-- compare a repo's head with the log however long ago the repo last changed.
CREATE TABLE repos (
	did TEXT    PRIMARY KEY,
	rev TEXT    NOT NULL,
	seq INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Small durable counters: 'pruned_through' is the highest seq deleted by retention, so a
-- cursor below it is known to be outdated even when the log is empty.
CREATE TABLE meta (
	key   TEXT    PRIMARY KEY,
	value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
