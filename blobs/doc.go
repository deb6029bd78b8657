// Package blobs owns the node's media: the blob files accounts upload, their lifecycle
// from temporary upload to record-referenced to deleted, the com.atproto.sync.getBlob and
// com.atproto.repo.uploadBlob handler logic, and the image server at
// /img/<preset>/plain/<did>/<cid>@jpeg that resizes local and remote images into the
// variants Bluesky views link to.
//
// # Where it sits
//
// Blob bytes live in <dir>/<did>/<cid> (dir is <data_dir>/blobs), written temp → fsync →
// rename under an os.Root, so a crash leaves either the whole blob or none of it. Which
// blobs exist, their sniffed MIME type, size and state live in <dir>/blobs.sqlite: a blob
// is temporary from upload until a committed record references it (Store.Committed, called
// by the node with each repo.CommitEvent's BlobsAdded and BlobsRemoved), and a temporary
// blob older than the grace period is removed by Store.GC. The node asks Store.Check while
// validating a write, so a record that names a missing blob is refused before the commit.
//
// The package imports no Aerie component: repositories answer "is this blob referenced"
// through RefChecker, account state through AccountStatus, and DID → PDS resolution
// for remote images through PDSResolver; the node implements all three.
//
// Derived files live under a cache directory (<data_dir>/cache): img/ holds JPEG variants
// and remote/ holds other hosts' blobs fetched for those variants, each bounded by size
// and evicted least-recently-used. Everything in the cache can be deleted at any time.
//
// # Concurrency
//
// A *Store is safe for concurrent use. Writers of one (did, cid) pair are serialized by a
// striped lock so that an upload, a GC sweep and a BlobsRemoved never interleave on the
// same file; image variants are generated once per key however many requests ask, and at
// most GOMAXPROCS at a time, which bounds decode memory. Run owns the periodic GC.
package blobs
