package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"
)

// MST sentinels. (They sit here rather than in errors.go until the package's sentinels
// are consolidated.)
var (
	// ErrBlockNotFound is returned (wrapped) by a BlockReader, and so by tree
	// operations, when a block is not stored: a partial tree or a missing block.
	ErrBlockNotFound = errors.New("repo: block not found")
	// ErrInvalidMST is returned when an MST node is malformed or misplaced (bad
	// encoding, ordering, prefix, key, height or shape), when a stored block does not
	// hash to its CID, or when a key given to Put is not a valid repo path.
	ErrInvalidMST = errors.New("repo: invalid MST")
	// ErrStopWalk may be returned by a Walk callback to end the walk early; Walk then
	// returns nil.
	ErrStopWalk = errors.New("repo: stop walk")
)

// BlockReader is what a tree loads nodes through (the actor store's blocks table
// implements it).
type BlockReader interface {
	// ReadBlock returns the bytes of block c, or an error wrapping ErrBlockNotFound.
	ReadBlock(ctx context.Context, c cid.Cid) ([]byte, error)
}

// Block is a content-addressed block.
type Block struct {
	CID  cid.Cid
	Data []byte
}

// TreeDelta is what Flush returns: the new root, the encoded nodes that are new since
// the previous flush and reachable from the root, and the CIDs of nodes of the previous
// root that the new root no longer reaches. Storing NewBlocks and deleting Removed keeps
// a block store holding exactly the current tree's nodes. Kept lists the NewBlocks that
// the previous root reached already (a node a split left as it was), which a block store
// holding the previous tree need not store again.
type TreeDelta struct {
	Root      cid.Cid
	NewBlocks []Block
	Removed   []cid.Cid
	Kept      []cid.Cid
}

// Tree is a mutable working view of a Merkle Search Tree (atproto-reference.md §5.3)
// rooted at a CID. Nodes are read through the BlockReader (and the NodeCache) only when
// an operation reaches them, so an operation on a large tree reads and rewrites only the
// nodes on its path. A Tree is not safe for concurrent use.
type Tree struct {
	br    BlockReader
	cache *NodeCache
	// root is the root node once loaded; rootCID the root as of NewTree or the last Flush.
	root    *tnode
	rootCID cid.Cid
	// dirty is set by any change since the last flush.
	dirty bool
	// touched holds the CIDs of previously flushed nodes that were modified or dropped.
	touched []cid.Cid
}

// NewTree returns a tree rooted at root, reading nodes through br and sharing decoded
// nodes through cache (which may be nil). root == cid.Undef means an empty tree.
func NewTree(br BlockReader, cache *NodeCache, root cid.Cid) *Tree {
	t := &Tree{br: br, cache: cache, rootCID: root}
	if !root.Defined() {
		// A new empty tree: its empty root node is a new block on the first Flush.
		t.root = &tnode{}
		t.dirty = true
	}
	return t
}

// Get returns the value stored under key, or an error wrapping ErrRecordNotFound.
func (t *Tree) Get(ctx context.Context, key string) (cid.Cid, error) {
	n, err := t.loadRoot(ctx)
	if err != nil {
		return cid.Undef, err
	}
	for n != nil {
		i := n.search(key)
		if i < len(n.entries) && n.entries[i].key == key {
			return n.entries[i].val, nil
		}
		if n, err = t.child(ctx, n, i); err != nil {
			return cid.Undef, err
		}
	}
	return cid.Undef, fmt.Errorf("get %s: %w", key, ErrRecordNotFound)
}

// Put stores val under key, replacing any previous value. The key must be a valid repo
// path (collection/rkey), else the error wraps ErrInvalidMST.
func (t *Tree) Put(ctx context.Context, key string, val cid.Cid) error {
	if !validMSTKey(key) {
		return fmt.Errorf("put %q: %w: invalid key", key, ErrInvalidMST)
	}
	if !val.Defined() {
		return fmt.Errorf("put %s: undefined value CID", key)
	}
	root, err := t.loadRoot(ctx)
	if err != nil {
		return err
	}
	kh := KeyHeight(key)
	if root.empty() {
		t.mut(root)
		root.layer = kh
		root.entries = []tentry{{key: key, val: val}}
		return nil
	}
	// A key above the root raises the tree: empty nodes up to the key's layer, where
	// the insert below splits the old root around the key (layers are never skipped).
	for t.root.layer < kh {
		t.root = &tnode{layer: t.root.layer + 1, left: nodeRef(t.root)}
		t.dirty = true
	}
	if _, err := t.insert(ctx, t.root, key, kh, val); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// Delete removes key, or returns an error wrapping ErrRecordNotFound.
func (t *Tree) Delete(ctx context.Context, key string) error {
	root, err := t.loadRoot(ctx)
	if err != nil {
		return err
	}
	kh := KeyHeight(key)
	found := false
	if root.layer >= kh && !root.empty() {
		if found, err = t.remove(ctx, root, key, kh); err != nil {
			return fmt.Errorf("delete %s: %w", key, err)
		}
	}
	if !found {
		return fmt.Errorf("delete %s: %w", key, ErrRecordNotFound)
	}
	// The root is never an empty node that only points down (§5.3): drop such roots.
	for len(t.root.entries) == 0 && t.root.left.present() {
		c, err := t.child(ctx, t.root, 0)
		if err != nil {
			return fmt.Errorf("delete %s: %w", key, err)
		}
		t.mut(t.root)
		t.root = c
	}
	return nil
}

// Flush encodes the nodes changed since the previous flush and returns the new root
// with the blocks to store and the ones to delete (see TreeDelta). Flushing an unchanged
// tree returns its root and no blocks.
func (t *Tree) Flush(ctx context.Context) (*TreeDelta, error) {
	if !t.dirty {
		return &TreeDelta{Root: t.rootCID}, nil
	}
	root, err := t.loadRoot(ctx)
	if err != nil {
		return nil, err
	}
	d := &TreeDelta{}
	if err := t.encodeDirty(root, &d.NewBlocks); err != nil {
		return nil, fmt.Errorf("flush tree: %w", err)
	}
	d.Root = root.cid
	// A node's CID names its content, which includes its keys, so a previous node
	// is still reachable only if an identical node was rebuilt (a put undone).
	for _, c := range t.touched {
		if slices.Contains(d.Removed, c) || slices.Contains(d.Kept, c) {
			continue
		}
		if slices.ContainsFunc(d.NewBlocks, func(b Block) bool { return b.CID == c }) {
			d.Kept = append(d.Kept, c)
		} else {
			d.Removed = append(d.Removed, c)
		}
	}
	t.touched = t.touched[:0]
	t.dirty = false
	t.rootCID = d.Root
	return d, nil
}

// encodeDirty encodes n and its changed descendants, children first, appending the
// blocks to out and caching the decoded nodes for the next tree over this repo.
func (t *Tree) encodeDirty(n *tnode, out *[]Block) error {
	if n.cid.Defined() {
		return nil
	}
	if len(n.entries) > maxNodeEntries {
		return fmt.Errorf("%w: node would have %d entries, more than %d", ErrInvalidMST, len(n.entries), maxNodeEntries)
	}
	for i := 0; i <= len(n.entries); i++ {
		if r := n.ptr(i); r.n != nil {
			if err := t.encodeDirty(r.n, out); err != nil {
				return err
			}
		}
	}
	data := encodeNode(n)
	n.cid = CBORCID(data)
	*out = append(*out, Block{CID: n.cid, Data: data})
	t.cache.add(n.cid, frozen(n))
	return nil
}

// frozen returns an immutable copy of a flushed node for the cache, pointing at its
// children by CID only.
func frozen(n *tnode) *tnode {
	f := &tnode{cid: n.cid, layer: n.layer, left: ref{c: n.left.cid()}}
	if len(n.entries) == 0 {
		f.layer = -1
		return f
	}
	f.entries = make([]tentry, len(n.entries))
	for i, e := range n.entries {
		f.entries[i] = tentry{key: e.key, val: e.val, right: ref{c: e.right.cid()}}
	}
	return f
}

// mut marks n as modified (or about to be dropped), remembering its flushed CID for
// TreeDelta.Removed.
func (t *Tree) mut(n *tnode) {
	t.dirty = true
	if n.cid.Defined() {
		t.touched = append(t.touched, n.cid)
		n.cid = cid.Undef
	}
}

// loadRoot returns the root node, loading it on first use.
func (t *Tree) loadRoot(ctx context.Context) (*tnode, error) {
	if t.root != nil {
		return t.root, nil
	}
	n, err := t.open(ctx, t.rootCID, -1, "", "")
	if err != nil {
		return nil, fmt.Errorf("load MST root: %w", err)
	}
	if len(n.entries) == 0 {
		n.layer = 0
	}
	t.root = n
	return n, nil
}

// child returns n's subtree before entry i, loading it and keeping it in n; nil for a
// null pointer.
func (t *Tree) child(ctx context.Context, n *tnode, i int) (*tnode, error) {
	r := n.ptr(i)
	if r.n != nil || !r.c.Defined() {
		return r.n, nil
	}
	lo, hi := n.bounds(i)
	c, err := t.open(ctx, r.c, n.layer-1, lo, hi)
	if err != nil {
		return nil, err
	}
	r.n = c
	n.setPtr(i, r)
	return c, nil
}

// open loads node c for this tree's own use: a private copy of the cached node, checked
// against its place (layer -1 for the root).
func (t *Tree) open(ctx context.Context, c cid.Cid, layer int, lo, hi string) (*tnode, error) {
	shared, err := t.view(ctx, c, layer, lo, hi)
	if err != nil {
		return nil, err
	}
	n := &tnode{cid: c, layer: layer, left: shared.left, lo: lo, hi: hi}
	if layer < 0 {
		n.layer = shared.layer
	}
	if len(shared.entries) > 0 {
		n.entries = slices.Clone(shared.entries)
	}
	return n, nil
}

// view returns the shared decoded node c after checking it against its place; callers
// must not modify it.
func (t *Tree) view(ctx context.Context, c cid.Cid, layer int, lo, hi string) (*tnode, error) {
	if layer > maxMSTLayer || layer < -1 {
		return nil, fmt.Errorf("%w: tree deeper than %d layers", ErrInvalidMST, maxMSTLayer)
	}
	n, err := t.fetch(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := checkPlace(n, layer, lo, hi); err != nil {
		return nil, fmt.Errorf("node %s: %w", c, err)
	}
	return n, nil
}

// fetch returns the decoded node c from the cache, or reads, verifies and decodes it.
func (t *Tree) fetch(ctx context.Context, c cid.Cid) (*tnode, error) {
	if n, ok := t.cache.get(c); ok {
		return n, nil
	}
	data, err := t.br.ReadBlock(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("read MST node %s: %w", c, err)
	}
	// Blocks from a CAR were hashed on reading, but a partial tree from another host
	// or a damaged store must not put a wrong node under a trusted CID in the cache.
	if got := CBORCID(data); !bytes.Equal(got.Bytes(), c.Bytes()) {
		return nil, fmt.Errorf("%w: block %s hashes to %s", ErrInvalidMST, c, got)
	}
	n, err := decodeNode(data)
	if err != nil {
		return nil, fmt.Errorf("decode MST node %s: %w", c, err)
	}
	n.cid = c
	t.cache.add(c, n)
	return n, nil
}

// insert puts key (of height kh <= n.layer) into n's subtree; it reports whether
// anything changed.
func (t *Tree) insert(ctx context.Context, n *tnode, key string, kh int, val cid.Cid) (bool, error) {
	i := n.search(key)
	found := i < len(n.entries) && n.entries[i].key == key
	if n.layer == kh {
		if found {
			if n.entries[i].val == val {
				return false, nil
			}
			t.mut(n)
			n.entries[i].val = val
			return true, nil
		}
		c, err := t.child(ctx, n, i)
		if err != nil {
			return false, err
		}
		lo, hi, err := t.split(ctx, c, key)
		if err != nil {
			return false, err
		}
		t.mut(n)
		n.setPtr(i, nodeRef(lo))
		n.entries = slices.Insert(n.entries, i, tentry{key: key, val: val, right: nodeRef(hi)})
		return true, nil
	}
	if found {
		return false, fmt.Errorf("%w: key %s found at layer %d, its height is %d", ErrInvalidMST, key, n.layer, kh)
	}
	c, err := t.child(ctx, n, i)
	if err != nil {
		return false, err
	}
	if c == nil {
		// An empty range gains a key: a new node, empty down to the key's layer.
		lo, hi := n.bounds(i)
		c = &tnode{layer: n.layer - 1, lo: lo, hi: hi}
		n.setPtr(i, nodeRef(c))
		t.dirty = true
	}
	changed, err := t.insert(ctx, c, key, kh, val)
	if changed {
		t.mut(n)
	}
	return changed, err
}

// split divides n's subtree (of layer below key's height) into the parts before and
// after key, either of which may be nil.
func (t *Tree) split(ctx context.Context, n *tnode, key string) (lo, hi *tnode, err error) {
	if n == nil {
		return nil, nil, nil
	}
	i := n.search(key)
	if i < len(n.entries) && n.entries[i].key == key {
		return nil, nil, fmt.Errorf("%w: key %s found at layer %d below its height", ErrInvalidMST, key, n.layer)
	}
	c, err := t.child(ctx, n, i)
	if err != nil {
		return nil, nil, err
	}
	clo, chi, err := t.split(ctx, c, key)
	if err != nil {
		return nil, nil, err
	}
	hi = &tnode{layer: n.layer, left: nodeRef(chi), entries: slices.Clone(n.entries[i:]), lo: key, hi: n.hi}
	t.mut(n)
	n.entries = n.entries[:i:i]
	n.setPtr(i, nodeRef(clo))
	n.hi = key
	lo = n
	if lo.empty() {
		lo = nil
	}
	if hi.empty() {
		hi = nil
	}
	return lo, hi, nil
}

// remove deletes key (of height kh) from n's subtree and reports whether it was there.
func (t *Tree) remove(ctx context.Context, n *tnode, key string, kh int) (bool, error) {
	i := n.search(key)
	if n.layer == kh {
		if i == len(n.entries) || n.entries[i].key != key {
			return false, nil
		}
		a, err := t.child(ctx, n, i)
		if err != nil {
			return false, err
		}
		b, err := t.child(ctx, n, i+1)
		if err != nil {
			return false, err
		}
		m, err := t.merge(ctx, a, b)
		if err != nil {
			return false, err
		}
		t.mut(n)
		n.entries = slices.Delete(n.entries, i, i+1)
		n.setPtr(i, nodeRef(m))
		return true, nil
	}
	if n.layer < kh {
		return false, nil
	}
	c, err := t.child(ctx, n, i)
	if c == nil || err != nil {
		return false, err
	}
	found, err := t.remove(ctx, c, key, kh)
	if !found || err != nil {
		return false, err
	}
	t.mut(n)
	if c.empty() {
		n.setPtr(i, ref{})
	}
	return true, nil
}

// merge joins two adjacent subtrees of one layer, all of a's keys before b's.
func (t *Tree) merge(ctx context.Context, a, b *tnode) (*tnode, error) {
	if a == nil {
		return b, nil
	}
	if b == nil {
		return a, nil
	}
	ca, err := t.child(ctx, a, len(a.entries))
	if err != nil {
		return nil, err
	}
	cb, err := t.child(ctx, b, 0)
	if err != nil {
		return nil, err
	}
	m, err := t.merge(ctx, ca, cb)
	if err != nil {
		return nil, err
	}
	t.mut(a)
	t.mut(b)
	a.setPtr(len(a.entries), nodeRef(m))
	a.entries = append(a.entries, b.entries...)
	a.hi = b.hi
	return a, nil
}

// sha256String hashes s without converting it to a heap-allocated []byte.
func sha256String(s string) [sha256.Size]byte {
	var buf [256]byte
	if len(s) <= len(buf) {
		n := copy(buf[:], s)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(s))
}
