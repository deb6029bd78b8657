// Package appview is Aerie's in-process AppView: it consumes the relay stream, keeps the
// app.bsky index in index.sqlite, and answers app.bsky.* queries with lexicon-shaped views
// (atproto-reference §10–§12).
//
// Data flow: relay.Sequencer → Subscription → AppView.Run applies each batch of events
// (waiting a few milliseconds for more when the batch is small and no read waits) in one
// index transaction that also stores the cursor (so a replay after a crash never counts
// twice) → after the commit, the ristretto caches drop the keys the batch touched
// (cache.go) → WaitForSeq wakes reads waiting for the local writes before them
// (read-after-write, NoteLocalWrite).
//
// The index is derived: repos are the truth, and Reindex rebuilds one account from its
// records. Counts (likes, reposts, replies, quotes, followers, follows, posts) are kept
// incrementally: a row insert or delete and its count change happen in the same
// transaction, and only when the row really changed.
//
// Methods returns the XRPC handlers; the node authenticates the request and passes the
// viewer with WithViewer. All methods of AppView are safe for concurrent use; Run may be
// called once.
package appview
