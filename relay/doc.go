// Package relay owns the event log of an Aerie node: the sequencer that gives every event a
// seq, the durable log in relay.sqlite, and the com.atproto.sync.subscribeRepos firehose.
//
// Data flow (style.md §2): the repo write hook hands a repo.CommitEvent to
// [Sequencer.Submit] (as [NewCommit]) while the repo's writer lock is held; identity and
// account changes arrive as [NewIdentity], [NewAccount] and [NewSync]. The sequencer's
// [Sequencer.Run] loop takes every pending submission, assigns consecutive seqs, encodes each
// event once as its wire frame (atproto-reference §6.2) and appends the whole batch to the log
// in one SQLite transaction; only after the commit does it publish the batch to subscribers
// and acknowledge the submitters. So a subscriber never sees an event that is not durable, and
// Submit returning nil means the event is in the log.
//
// Fan-out goes through an in-memory window of the newest events shared by every subscriber:
// publishing is O(1) per event whatever the number of subscribers, and never blocks. A
// [Subscription] (the in-process indexer uses one) replays from the log, hands over to the
// window without a gap or a duplicate, and falls back to the log when it lags behind the
// window. [Firehose] serves the same stream over WebSocket; there a subscriber that lags
// behind the window is cut off with ConsumerTooSlow instead, so it never slows the others or
// the sequencer.
//
// Every exported method is safe for concurrent use, except that a [Subscription] belongs to
// one goroutine. Events handed out by subscriptions are shared and must not be modified.
package relay
