package repo

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
)

// KeyChange is one key's change between two trees: Old is cid.Undef for a created key,
// New is cid.Undef for a deleted one.
type KeyChange struct {
	Key      string
	Old, New cid.Cid
}

// diffItem is what a diffWalker yields next: a subtree not yet read (node) or an entry.
type diffItem struct {
	node   bool
	c      cid.Cid
	layer  int // subtree layer, or -1 for a root
	lo, hi string
	key    string
	val    cid.Cid
}

// diffWalker yields a tree's entries in key order, with subtrees left unread until
// expand is called, so equal subtrees of two trees can be skipped unread.
type diffWalker struct {
	t     *Tree
	stack []diffItem // next item last
}

func newDiffWalker(t *Tree, root cid.Cid) *diffWalker {
	w := &diffWalker{t: t}
	if root.Defined() {
		w.stack = append(w.stack, diffItem{node: true, c: root, layer: -1})
	}
	return w
}

func (w *diffWalker) done() bool      { return len(w.stack) == 0 }
func (w *diffWalker) peek() *diffItem { return &w.stack[len(w.stack)-1] }
func (w *diffWalker) pop()            { w.stack = w.stack[:len(w.stack)-1] }

// expand replaces the next item, a subtree, by its entries and subtrees, and returns
// the node read.
func (w *diffWalker) expand(ctx context.Context) (*tnode, error) {
	it := *w.peek()
	w.pop()
	n, err := w.t.view(ctx, it.c, it.layer, it.lo, it.hi)
	if err != nil {
		return nil, err
	}
	layer := it.layer
	if layer < 0 {
		layer = n.layer
	}
	p := place{n: n, layer: layer, lo: it.lo, hi: it.hi}
	for i := len(n.entries); i >= 0; i-- {
		if i < len(n.entries) {
			e := &n.entries[i]
			w.stack = append(w.stack, diffItem{key: e.key, val: e.val, layer: layer})
		}
		if r := n.ptr(i); r.c.Defined() {
			lo, hi := p.lo, p.hi
			if i > 0 {
				lo = n.entries[i-1].key
			}
			if i < len(n.entries) {
				hi = n.entries[i].key
			}
			w.stack = append(w.stack, diffItem{node: true, c: r.c, layer: layer - 1, lo: lo, hi: hi})
		}
	}
	return n, nil
}

// Diff returns the key changes from the tree oldRoot to the tree newRoot in key order,
// and the nodes of newRoot that oldRoot does not have (for getRepo?since and for checking
// imports). It reads only subtrees whose CIDs differ between the two. Either root may be
// cid.Undef for an empty tree; cache may be nil.
func Diff(ctx context.Context, br BlockReader, cache *NodeCache, oldRoot, newRoot cid.Cid) ([]KeyChange, []Block, error) {
	if oldRoot == newRoot {
		return nil, nil, nil
	}
	t := &Tree{br: br, cache: cache}
	a, b := newDiffWalker(t, oldRoot), newDiffWalker(t, newRoot)
	var changes []KeyChange
	var added []*tnode
	oldNodes := make(map[cid.Cid]bool)
	expandA := func() error {
		oldNodes[a.peek().c] = true
		_, err := a.expand(ctx)
		return err
	}
	expandB := func() error {
		n, err := b.expand(ctx)
		if err == nil {
			added = append(added, n)
		}
		return err
	}
	// Roots have no layer until read: open both, so every item left has one.
	if !a.done() {
		if err := expandA(); err != nil {
			return nil, nil, fmt.Errorf("diff %s to %s: %w", oldRoot, newRoot, err)
		}
	}
	if !b.done() {
		if err := expandB(); err != nil {
			return nil, nil, fmt.Errorf("diff %s to %s: %w", oldRoot, newRoot, err)
		}
	}
	for !a.done() || !b.done() {
		var err error
		switch {
		case b.done():
			if ia := a.peek(); ia.node {
				err = expandA()
			} else {
				changes = append(changes, KeyChange{Key: ia.key, Old: ia.val})
				a.pop()
			}
		case a.done():
			if ib := b.peek(); ib.node {
				err = expandB()
			} else {
				changes = append(changes, KeyChange{Key: ib.key, New: ib.val})
				b.pop()
			}
		default:
			ia, ib := a.peek(), b.peek()
			switch {
			case ia.node && ib.node && ia.c == ib.c:
				oldNodes[ia.c] = true
				a.pop()
				b.pop()
			case !ia.node && !ib.node:
				switch {
				case ia.key == ib.key:
					if ia.val != ib.val {
						changes = append(changes, KeyChange{Key: ia.key, Old: ia.val, New: ib.val})
					}
					a.pop()
					b.pop()
				case ia.key < ib.key:
					changes = append(changes, KeyChange{Key: ia.key, Old: ia.val})
					a.pop()
				default:
					changes = append(changes, KeyChange{Key: ib.key, New: ib.val})
					b.pop()
				}
			case ia.node && (!ib.node || ia.layer > ib.layer):
				// Open the higher subtree first: the lower one may equal a part of it.
				err = expandA()
			default:
				err = expandB()
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("diff %s to %s: %w", oldRoot, newRoot, err)
		}
	}
	var blocks []Block
	for _, n := range added {
		// A node of both trees is read or skipped on the old side wherever the new side
		// reads it, so this leaves exactly the new tree's own nodes.
		if !oldNodes[n.cid] {
			blocks = append(blocks, Block{CID: n.cid, Data: encodeNode(n)})
		}
	}
	return changes, blocks, nil
}
