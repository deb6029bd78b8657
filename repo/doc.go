// Package repo owns each account's repository: per-user SQLite actor stores, the MST,
// signed commits, CAR, records.
//
// The Merkle Search Tree (mst*.go) is loaded lazily node by node through a BlockReader,
// with decoded nodes shared between trees by a bounded NodeCache, so a write to a large
// repo reads and re-encodes only the nodes on its path (atproto-reference.md §5.3, §5.6).
// A Tree is a working view for one goroutine; NodeCache is safe for concurrent use.
package repo
