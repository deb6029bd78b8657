-- Events the crawler verified from other hosts share the log with local ones, so the
-- indexer reads one stream; remote marks them, because the PDS firehose serves only this
-- node's own accounts.
ALTER TABLE events ADD COLUMN remote INTEGER NOT NULL DEFAULT 0;
