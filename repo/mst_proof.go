package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// errUnflushed is returned by operations that hand out node blocks when the tree has
// changes that Flush has not yet encoded.
var errUnflushed = errors.New("tree has unflushed changes")

// place is a node reached by a read-only traversal with what its parent says of it.
type place struct {
	n      *tnode
	layer  int
	lo, hi string
}

// rootPlace returns the root for a read-only traversal, without keeping it loaded.
func (t *Tree) rootPlace(ctx context.Context) (place, error) {
	if t.root != nil {
		return place{n: t.root, layer: t.root.layer}, nil
	}
	n, err := t.view(ctx, t.rootCID, -1, "", "")
	if err != nil {
		return place{}, fmt.Errorf("load MST root: %w", err)
	}
	return place{n: n, layer: max(n.layer, 0)}, nil
}

// sub returns the subtree of p before entry i for a read-only traversal; its n is nil
// for a null pointer. Nodes not yet in memory are read (through the cache) but not kept.
func (t *Tree) sub(ctx context.Context, p place, i int) (place, error) {
	r := p.n.ptr(i)
	lo, hi := p.lo, p.hi
	if i > 0 {
		lo = p.n.entries[i-1].key
	}
	if i < len(p.n.entries) {
		hi = p.n.entries[i].key
	}
	c := place{n: r.n, layer: p.layer - 1, lo: lo, hi: hi}
	if r.n != nil || !r.c.Defined() {
		return c, nil
	}
	n, err := t.view(ctx, r.c, c.layer, lo, hi)
	if err != nil {
		return place{}, err
	}
	c.n = n
	return c, nil
}

// Walk calls fn for entries in key order, or in reverse order when reverse is set. With
// from == "" it visits every key; otherwise forward visits only keys > from and reverse
// only keys < from, so a listRecords cursor can be passed as it is. To list a collection,
// pass from = collection+"/" (forward) or collection+"0" ('0' follows '/'; reverse) and
// stop at the first key without the collection+"/" prefix. When fn returns ErrStopWalk,
// Walk stops and returns nil; any other error from fn is returned as it is. Walk reads
// only the nodes it passes through and also works on a tree with unflushed changes.
func (t *Tree) Walk(ctx context.Context, from string, reverse bool, fn func(key string, val cid.Cid) error) error {
	root, err := t.rootPlace(ctx)
	if err != nil {
		return err
	}
	if reverse {
		err = t.walkReverse(ctx, root, from, fn)
	} else {
		err = t.walkForward(ctx, root, from, fn)
	}
	if errors.Is(err, ErrStopWalk) {
		return nil
	}
	return err
}

func (t *Tree) walkForward(ctx context.Context, p place, from string, fn func(string, cid.Cid) error) error {
	i0 := 0
	if from != "" {
		i0 = p.n.search(from)
	}
	for i := i0; i <= len(p.n.entries); i++ {
		c, err := t.sub(ctx, p, i)
		if err != nil {
			return err
		}
		if c.n != nil {
			// Only the first subtree can hold keys <= from.
			f := ""
			if i == i0 {
				f = from
			}
			if err := t.walkForward(ctx, c, f, fn); err != nil {
				return err
			}
		}
		if i < len(p.n.entries) {
			if e := &p.n.entries[i]; from == "" || e.key > from {
				if err := fn(e.key, e.val); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (t *Tree) walkReverse(ctx context.Context, p place, from string, fn func(string, cid.Cid) error) error {
	i0 := len(p.n.entries)
	if from != "" {
		i0 = p.n.search(from) // entries before i0 are < from
	}
	for i := i0; i >= 0; i-- {
		c, err := t.sub(ctx, p, i)
		if err != nil {
			return err
		}
		if c.n != nil {
			f := ""
			if i == i0 {
				f = from
			}
			if err := t.walkReverse(ctx, c, f, fn); err != nil {
				return err
			}
		}
		if i > 0 {
			e := &p.n.entries[i-1]
			if err := fn(e.key, e.val); err != nil {
				return err
			}
		}
	}
	return nil
}

// WalkNodes visits every node of the flushed tree in the preferred CAR order
// (atproto-reference.md §5.5): a node, then (by fn, which gets the node's record CIDs in
// entry order) its records, then its subtrees depth-first, left subtree first. values is
// fn's own. An error from fn ends the walk and is returned as it is.
func (t *Tree) WalkNodes(ctx context.Context, fn func(node Block, values []cid.Cid) error) error {
	if t.dirty {
		return fmt.Errorf("walk nodes: %w", errUnflushed)
	}
	root, err := t.rootPlace(ctx)
	if err != nil {
		return err
	}
	return t.walkNodes(ctx, root, fn)
}

func (t *Tree) walkNodes(ctx context.Context, p place, fn func(Block, []cid.Cid) error) error {
	values := make([]cid.Cid, len(p.n.entries))
	for i := range p.n.entries {
		values[i] = p.n.entries[i].val
	}
	if err := fn(Block{CID: p.n.cid, Data: encodeNode(p.n)}, values); err != nil {
		return err
	}
	for i := 0; i <= len(p.n.entries); i++ {
		c, err := t.sub(ctx, p, i)
		if err != nil {
			return err
		}
		if c.n != nil {
			if err := t.walkNodes(ctx, c, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// ProofBlocks returns the nodes of the flushed tree on the search path to key, root
// first: with the commit, they prove key's value or its absence (sync.getRecord).
func (t *Tree) ProofBlocks(ctx context.Context, key string) ([]Block, error) {
	if t.dirty {
		return nil, fmt.Errorf("prove %s: %w", key, errUnflushed)
	}
	var out []Block
	err := t.path(ctx, key, func(n *tnode) {
		out = append(out, Block{CID: n.cid, Data: encodeNode(n)})
	})
	if err != nil {
		return nil, fmt.Errorf("prove %s: %w", key, err)
	}
	return out, nil
}

// path calls visit for each node on the search path to key: down to the node holding
// it, or for an absent key to the null pointer where it would go.
func (t *Tree) path(ctx context.Context, key string, visit func(*tnode)) error {
	p, err := t.rootPlace(ctx)
	if err != nil {
		return err
	}
	for p.n != nil {
		visit(p.n)
		i := p.n.search(key)
		if i < len(p.n.entries) && p.n.entries[i].key == key {
			return nil
		}
		if p, err = t.sub(ctx, p, i); err != nil {
			return err
		}
	}
	return nil
}

// InversionBlocks returns the nodes of the flushed tree that a #commit writing keys must
// carry so a consumer can invert its operations (Sync 1.1, atproto-reference.md §5.6,
// §6.6). As the reference PDS does, it takes for each key the nodes on the search path to
// the key and those on the paths to its nearest neighbours on the left and on the right:
// deleting a key merges the subtrees along those paths, inserting one splits along its
// own. Blocks are in discovery order without duplicates.
func (t *Tree) InversionBlocks(ctx context.Context, keys []string) ([]Block, error) {
	if t.dirty {
		return nil, fmt.Errorf("collect inversion blocks: %w", errUnflushed)
	}
	seen := make(map[cid.Cid]bool)
	var out []Block
	visit := func(n *tnode) {
		if !seen[n.cid] {
			seen[n.cid] = true
			out = append(out, Block{CID: n.cid, Data: encodeNode(n)})
		}
	}
	for _, key := range keys {
		if err := t.path(ctx, key, visit); err != nil {
			return nil, fmt.Errorf("collect inversion blocks for %s: %w", key, err)
		}
		for _, reverse := range []bool{true, false} {
			neighbour := ""
			err := t.Walk(ctx, key, reverse, func(k string, _ cid.Cid) error {
				neighbour = k
				return ErrStopWalk
			})
			if err == nil && neighbour != "" {
				err = t.path(ctx, neighbour, visit)
			}
			if err != nil {
				return nil, fmt.Errorf("collect inversion blocks for %s: %w", key, err)
			}
		}
	}
	return out, nil
}
