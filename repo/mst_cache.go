package repo

import (
	"container/list"
	"sync"

	"github.com/ipfs/go-cid"
)

// NodeCache is a bounded cache of decoded MST nodes keyed by CID, shared by the trees
// of every actor. Nodes are immutable and content-addressed, so an entry can never be
// stale; the least recently used node is evicted first. It is safe for concurrent use,
// and a nil *NodeCache is a valid cache that holds nothing.
type NodeCache struct {
	mu    sync.Mutex
	max   int
	items map[cid.Cid]*list.Element
	lru   list.List // front: most recently used; values are *cachedNode
}

type cachedNode struct {
	c cid.Cid
	n *tnode
}

// NewNodeCache returns a cache of at most maxNodes nodes (at least one).
func NewNodeCache(maxNodes int) *NodeCache {
	maxNodes = max(maxNodes, 1)
	return &NodeCache{max: maxNodes, items: make(map[cid.Cid]*list.Element, min(maxNodes, 4096))}
}

// Len returns the number of cached nodes.
func (nc *NodeCache) Len() int {
	if nc == nil {
		return 0
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	return nc.lru.Len()
}

// get returns the cached node c; callers must not modify it.
func (nc *NodeCache) get(c cid.Cid) (*tnode, bool) {
	if nc == nil {
		return nil, false
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	el, ok := nc.items[c]
	if !ok {
		return nil, false
	}
	nc.lru.MoveToFront(el)
	return el.Value.(*cachedNode).n, true
}

// add caches n as the decoded form of c; n must not be modified afterwards.
func (nc *NodeCache) add(c cid.Cid, n *tnode) {
	if nc == nil {
		return
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if el, ok := nc.items[c]; ok {
		nc.lru.MoveToFront(el)
		return
	}
	if nc.lru.Len() >= nc.max {
		oldest := nc.lru.Back()
		nc.lru.Remove(oldest)
		delete(nc.items, oldest.Value.(*cachedNode).c)
	}
	nc.items[c] = nc.lru.PushFront(&cachedNode{c: c, n: n})
}
