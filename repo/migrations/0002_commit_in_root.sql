-- The signed head commit lives in the root row instead of the blocks table. Every commit
-- replaces it, and as a blocks row keyed by its (random) CID it cost each commit an insert
-- and a delete on two random B-tree pages, and so WAL pages; the root row is written by
-- every commit anyway. The blocks table keeps the tree nodes and record values.
ALTER TABLE root ADD COLUMN commit_block BLOB;
UPDATE root SET commit_block = (SELECT data FROM blocks WHERE blocks.cid = root.commit_cid);
DELETE FROM blocks WHERE refs = 0 AND cid IN (SELECT commit_cid FROM root);

