-- Commits write about 40% fewer WAL pages (18.6 to 11 on a repo of 10k records).
--
-- New MST nodes go into fresh, a small table of their own, and move into blocks in bulk
-- when the actor collects replaced nodes (migration 0003). Inserted into blocks directly,
-- each new node cost its commit one random page of the blocks_cid index: 8.7 of the 18.6
-- pages a commit wrote. Most of the nodes a commit writes (the upper levels of the tree)
-- are replaced within a few commits, so they never reach blocks at all, and the survivors
-- enter its index as one sorted batch that shares pages.
--
-- fresh is looked up by tag, 31 bits of the node's digest, and the CID compared after: an
-- index of small integers keeps the table's index at a few pages however the CIDs fall.
CREATE TABLE fresh (
	id   INTEGER PRIMARY KEY,
	tag  INTEGER NOT NULL,
	cid  BLOB    NOT NULL,
	rev  INTEGER NOT NULL,
	data BLOB    NOT NULL
);
CREATE INDEX fresh_tag ON fresh (tag);
