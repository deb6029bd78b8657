-- Fewer indexes for a faster indexer (BenchmarkIndexerIngest): every index is one more
-- B-tree insert at a random place per record, and one more dirty page per insert for the
-- WAL to write and the checkpoint to copy.

-- Nothing reads posts by reply_root through an index (threads walk reply_parent).
DROP INDEX posts_root;
-- Feed items are deleted by their primary key: the post or repost row being deleted
-- knows its author and sort_at.
DROP INDEX feed_items_uri;
-- getActorLikes (the viewer's own likes only) sorts the viewer's likes found through
-- likes_author_subject; every other read of likes by author wants that index.
DROP INDEX likes_author;
