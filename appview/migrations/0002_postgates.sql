-- Postgates in views (atproto-reference §10): a quote that the quoted post's postgate
-- detaches (detachedEmbeddingUris, or a disableRule against someone else's quote) shows
-- as app.bsky.embed.record#viewDetached and is left out of quoteCount and getQuotes.
-- Both flags are derived from the postgates table and recomputed whenever a postgate or
-- a post changes, so they do not depend on the order records arrive in.

-- embed_detached is set on a quoting post whose quote the quoted post's postgate detaches.
ALTER TABLE posts ADD COLUMN embed_detached INTEGER NOT NULL DEFAULT 0;
-- embedding_disabled is set on a post whose postgate has a disableRule (viewer state
-- embeddingDisabled for everyone but its author).
ALTER TABLE posts ADD COLUMN embedding_disabled INTEGER NOT NULL DEFAULT 0;
