-- Hosts the crawler subscribes to: PDSes, and upstream relays (relay = 1), which carry many
-- hosts' accounts. cursor is the last seq processed from that host's firehose (0: none
-- yet; the first connection starts live).
CREATE TABLE hosts (
	hostname   TEXT    PRIMARY KEY,
	relay      INTEGER NOT NULL DEFAULT 0,
	cursor     INTEGER NOT NULL DEFAULT 0,
	status     TEXT    NOT NULL DEFAULT 'idle',
	added      INTEGER NOT NULL,
	last_error TEXT    NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;

-- Remote repositories the crawler knows: where each is hosted, and the verified head
-- (rev, tree root) every new commit must continue from (the Sync 1.1 prevData chain).
-- full = 1 for followed accounts (backfilled, every commit taken); 0 for accounts seen only
-- through events that touch local accounts.
CREATE TABLE remote_repos (
	did    TEXT    PRIMARY KEY,
	host   TEXT    NOT NULL,
	full   INTEGER NOT NULL DEFAULT 0,
	rev    TEXT    NOT NULL DEFAULT '',
	data   BLOB,
	status TEXT    NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;
