package repo

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	indigomst "github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/google/go-cmp/cmp"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/interop"
)

// memBlocks is an in-memory block store for tests (the SQLite store is tested with it).
type memBlocks map[cid.Cid][]byte

func (m memBlocks) ReadBlock(_ context.Context, c cid.Cid) ([]byte, error) {
	b, ok := m[c]
	if !ok {
		return nil, fmt.Errorf("read block %s: %w", c, ErrBlockNotFound)
	}
	return b, nil
}

// apply stores a flush's new blocks and deletes its removed ones, as the store does: a
// kept block is not stored again, so a wrong TreeDelta.Kept shows as a missing block.
func (m memBlocks) apply(d *TreeDelta) {
	for _, c := range d.Removed {
		delete(m, c)
	}
	for _, b := range d.NewBlocks {
		if !slices.Contains(d.Kept, b.CID) {
			m[b.CID] = b.Data
		}
	}
}

// countingBlocks counts reads.
type countingBlocks struct {
	BlockReader
	reads atomic.Int64
}

func (c *countingBlocks) ReadBlock(ctx context.Context, id cid.Cid) ([]byte, error) {
	c.reads.Add(1)
	return c.BlockReader.ReadBlock(ctx, id)
}

// cidComparer lets cmp compare CIDs, whose field is unexported.
func cidComparer() cmp.Option { return cmp.Comparer(func(a, b cid.Cid) bool { return a == b }) }

func mustCID(t testing.TB, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatalf("cid.Decode(%q) = %v", s, err)
	}
	return c
}

// valueCID returns a distinct record CID for i.
func valueCID(i int) cid.Cid { return CBORCID(fmt.Appendf(nil, "value %d", i)) }

// buildTree puts every key of m into a new tree over store, flushes and stores it.
func buildTree(t testing.TB, store memBlocks, cache *NodeCache, m map[string]cid.Cid) cid.Cid {
	t.Helper()
	ctx := context.Background()
	tree := NewTree(store, cache, cid.Undef)
	for k, v := range m {
		if err := tree.Put(ctx, k, v); err != nil {
			t.Fatalf("Put(%q) = %v", k, err)
		}
	}
	d, err := tree.Flush(ctx)
	if err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	store.apply(d)
	return d.Root
}

// indigoRoot returns the root CID indigo computes for the key set m.
func indigoRoot(t testing.TB, m map[string]cid.Cid) cid.Cid {
	t.Helper()
	tree, err := indigomst.LoadTreeFromMap(m)
	if err != nil {
		t.Fatalf("indigo LoadTreeFromMap = %v", err)
	}
	root, err := tree.RootCID()
	if err != nil {
		t.Fatalf("indigo RootCID = %v", err)
	}
	return *root
}

// readAll walks a fresh tree (fresh cache) over store and returns its entries.
func readAll(t testing.TB, store BlockReader, root cid.Cid) map[string]cid.Cid {
	t.Helper()
	got := map[string]cid.Cid{}
	var last string
	err := NewTree(store, NewNodeCache(16), root).Walk(context.Background(), "", false, func(k string, v cid.Cid) error {
		if k <= last {
			t.Errorf("Walk visited %q after %q", k, last)
		}
		last = k
		got[k] = v
		return nil
	})
	if err != nil {
		t.Fatalf("Walk() = %v", err)
	}
	return got
}

// reachable returns the CIDs of every node reachable from root, read from store alone.
func reachable(t testing.TB, store BlockReader, root cid.Cid) map[cid.Cid]bool {
	t.Helper()
	out := map[cid.Cid]bool{}
	err := NewTree(store, nil, root).WalkNodes(context.Background(), func(n Block, _ []cid.Cid) error {
		if out[n.CID] {
			return fmt.Errorf("node %s visited twice", n.CID)
		}
		if CBORCID(n.Data) != n.CID {
			return fmt.Errorf("node %s data hashes differently", n.CID)
		}
		out[n.CID] = true
		return nil
	})
	if err != nil {
		t.Fatalf("WalkNodes() = %v", err)
	}
	return out
}

func TestKeyHeightVectors(t *testing.T) {
	t.Parallel()
	var vectors []struct {
		Key    string `json:"key"`
		Height int    `json:"height"`
	}
	interop.JSON(t, "mst/key_heights.json", &vectors)
	for _, v := range vectors {
		if got := KeyHeight(v.Key); got != v.Height {
			t.Errorf("KeyHeight(%q) = %d, want %d", v.Key, got, v.Height)
		}
		if got := indigomst.HeightForKey([]byte(v.Key)); got != v.Height {
			t.Errorf("indigo HeightForKey(%q) = %d, want %d", v.Key, got, v.Height)
		}
	}
}

func TestCommonPrefixVectors(t *testing.T) {
	t.Parallel()
	var vectors []struct {
		Left  string `json:"left"`
		Right string `json:"right"`
		Len   int    `json:"len"`
	}
	interop.JSON(t, "mst/common_prefix.json", &vectors)
	for _, v := range vectors {
		if got := commonPrefixLen(v.Left, v.Right); got != v.Len {
			t.Errorf("commonPrefixLen(%q, %q) = %d, want %d", v.Left, v.Right, got, v.Len)
		}
	}
}

func TestExampleKeysMatchIndigo(t *testing.T) {
	t.Parallel()
	keys := interop.Lines(t, "mst/example_keys.txt")
	m := map[string]cid.Cid{}
	for i, k := range keys {
		m[k] = valueCID(i)
	}
	store := memBlocks{}
	root := buildTree(t, store, nil, m)
	if want := indigoRoot(t, m); root != want {
		t.Errorf("root of example keys = %s, indigo %s", root, want)
	}
	if diff := cmp.Diff(m, readAll(t, store, root), cidComparer()); diff != "" {
		t.Errorf("entries read back (-want +got):\n%s", diff)
	}
}

func TestEmptyTree(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memBlocks{}
	tree := NewTree(store, nil, cid.Undef)
	d, err := tree.Flush(ctx)
	if err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	empty := indigomst.NewEmptyTree()
	want, err := empty.RootCID()
	if err != nil {
		t.Fatalf("indigo RootCID() = %v", err)
	}
	if d.Root != *want || len(d.NewBlocks) != 1 || len(d.Removed) != 0 {
		t.Fatalf("Flush() of empty tree = root %s, %d new, %d removed; want root %s, 1 new, 0 removed", d.Root, len(d.NewBlocks), len(d.Removed), *want)
	}
	store.apply(d)
	// Fill and empty it again: back to the same root, and the empty node is new again.
	tree = NewTree(store, nil, d.Root)
	if err := tree.Put(ctx, "app.bsky.feed.post/a", valueCID(1)); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	d2, err := tree.Flush(ctx)
	if err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	if !slices.Equal(d2.Removed, []cid.Cid{d.Root}) {
		t.Errorf("Flush() Removed = %v, want the empty root %s", d2.Removed, d.Root)
	}
	store.apply(d2)
	if err := tree.Delete(ctx, "app.bsky.feed.post/a"); err != nil {
		t.Fatalf("Delete() = %v", err)
	}
	d3, err := tree.Flush(ctx)
	if err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	if d3.Root != d.Root {
		t.Errorf("root after emptying = %s, want %s", d3.Root, d.Root)
	}
	if _, err := tree.Get(ctx, "app.bsky.feed.post/a"); !errors.Is(err, ErrRecordNotFound) {
		t.Errorf("Get() of deleted key = %v, want ErrRecordNotFound", err)
	}
	if err := tree.Delete(ctx, "app.bsky.feed.post/a"); !errors.Is(err, ErrRecordNotFound) {
		t.Errorf("Delete() of absent key = %v, want ErrRecordNotFound", err)
	}
}

func TestPutRejectsInvalidKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		key  string
	}{
		{"empty", ""},
		{"no slash", "app.bsky.feed.post"},
		{"two slashes", "a/b/c"},
		{"empty rkey", "app.bsky.feed.post/"},
		{"empty collection", "/abc"},
		{"space", "app.bsky.feed.post/a b"},
		{"too long", "a/" + string(make([]byte, maxMSTKeyLen))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tree := NewTree(memBlocks{}, nil, cid.Undef)
			if err := tree.Put(context.Background(), tt.key, valueCID(1)); !errors.Is(err, ErrInvalidMST) {
				t.Errorf("Put(%q) = %v, want ErrInvalidMST", tt.key, err)
			}
		})
	}
}

type commitProofFixture struct {
	Comment          string   `json:"comment"`
	LeafValue        string   `json:"leafValue"`
	Keys             []string `json:"keys"`
	Adds             []string `json:"adds"`
	Dels             []string `json:"dels"`
	RootBeforeCommit string   `json:"rootBeforeCommit"`
	RootAfterCommit  string   `json:"rootAfterCommit"`
	BlocksInProof    []string `json:"blocksInProof"`
}

func TestCommitProofFixtures(t *testing.T) {
	t.Parallel()
	var fixtures []commitProofFixture
	interop.JSON(t, "firehose/commit-proof-fixtures.json", &fixtures)
	if len(fixtures) == 0 {
		t.Fatal("no commit-proof fixtures")
	}
	for _, f := range fixtures {
		t.Run(f.Comment, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			leaf := mustCID(t, f.LeafValue)
			m := map[string]cid.Cid{}
			for _, k := range f.Keys {
				m[k] = leaf
			}
			store := memBlocks{}
			before := buildTree(t, store, NewNodeCache(64), m)
			if want := mustCID(t, f.RootBeforeCommit); before != want {
				t.Fatalf("root before commit = %s, want %s", before, want)
			}

			tree := NewTree(store, NewNodeCache(64), before)
			for _, k := range f.Adds {
				if err := tree.Put(ctx, k, leaf); err != nil {
					t.Fatalf("Put(%q) = %v", k, err)
				}
			}
			for _, k := range f.Dels {
				if err := tree.Delete(ctx, k); err != nil {
					t.Fatalf("Delete(%q) = %v", k, err)
				}
			}
			d, err := tree.Flush(ctx)
			if err != nil {
				t.Fatalf("Flush() = %v", err)
			}
			if want := mustCID(t, f.RootAfterCommit); d.Root != want {
				t.Fatalf("root after commit = %s, want %s", d.Root, want)
			}
			// Asked before the new blocks are stored, as the store does.
			proof, err := tree.InversionBlocks(ctx, slices.Concat(f.Adds, f.Dels))
			if err != nil {
				t.Fatalf("InversionBlocks() = %v", err)
			}
			partial := memBlocks{}
			for _, b := range proof {
				partial[b.CID] = b.Data
			}
			for _, s := range f.BlocksInProof {
				if _, ok := partial[mustCID(t, s)]; !ok {
					t.Errorf("InversionBlocks() lacks %s", s)
				}
			}

			// Invert the commit from the proof blocks alone, as a Sync 1.1 consumer does.
			inv := NewTree(partial, NewNodeCache(64), d.Root)
			for _, k := range f.Dels {
				if err := inv.Put(ctx, k, leaf); err != nil {
					t.Fatalf("inverting delete of %s: Put() = %v", k, err)
				}
			}
			for _, k := range f.Adds {
				if err := inv.Delete(ctx, k); err != nil {
					t.Fatalf("inverting create of %s: Delete() = %v", k, err)
				}
			}
			id, err := inv.Flush(ctx)
			if err != nil {
				t.Fatalf("inverted Flush() = %v", err)
			}
			if id.Root != before {
				t.Errorf("inverted root = %s, want %s", id.Root, before)
			}
		})
	}
}

// randomKey returns a repo path like the ones TIDs make, in a few collections.
func randomKey(r *rand.Rand) string {
	colls := []string{"app.bsky.feed.like", "app.bsky.feed.post", "app.bsky.graph.follow", "xyz.test.a"}
	const chars = "234567abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 13)
	for i := range b {
		b[i] = chars[r.IntN(len(chars))]
	}
	return colls[r.IntN(len(colls))] + "/" + string(b)
}

func TestRandomOpsMatchIndigo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	model := map[string]cid.Cid{}
	store := memBlocks{}
	cache := NewNodeCache(256) // small: evictions must not matter
	tree := NewTree(store, cache, cid.Undef)
	ops := 0
	for batch := 0; batch < 40; batch++ {
		for range 100 {
			ops++
			keys := slices.Collect(maps.Keys(model))
			switch op := r.IntN(10); {
			case op < 6 || len(keys) == 0:
				k := randomKey(r)
				model[k] = valueCID(ops)
				if err := tree.Put(ctx, k, model[k]); err != nil {
					t.Fatalf("Put(%q) = %v", k, err)
				}
			case op < 7:
				k := keys[r.IntN(len(keys))]
				model[k] = valueCID(ops)
				if err := tree.Put(ctx, k, model[k]); err != nil {
					t.Fatalf("Put(%q) = %v", k, err)
				}
			default:
				k := keys[r.IntN(len(keys))]
				delete(model, k)
				if err := tree.Delete(ctx, k); err != nil {
					t.Fatalf("Delete(%q) = %v", k, err)
				}
			}
		}
		d, err := tree.Flush(ctx)
		if err != nil {
			t.Fatalf("Flush() = %v", err)
		}
		if want := indigoRoot(t, model); d.Root != want {
			t.Fatalf("batch %d: root %s, indigo %s (%d keys)", batch, d.Root, want, len(model))
		}
		store.apply(d)
		// The store holds exactly the current tree's nodes.
		nodes := reachable(t, store, d.Root)
		if len(nodes) != len(store) {
			t.Fatalf("batch %d: store holds %d nodes, %d reachable", batch, len(store), len(nodes))
		}
		if diff := cmp.Diff(model, readAll(t, store, d.Root), cidComparer()); diff != "" {
			t.Fatalf("batch %d: entries read back (-want +got):\n%s", batch, diff)
		}
		if batch%8 == 7 {
			// Go on with a fresh tree from the stored blocks, as the next commit does.
			tree = NewTree(store, cache, d.Root)
		}
	}
	// Delete everything, back to the empty tree.
	for k := range model {
		if err := tree.Delete(ctx, k); err != nil {
			t.Fatalf("Delete(%q) = %v", k, err)
		}
	}
	d, err := tree.Flush(ctx)
	if err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	if want := indigoRoot(t, map[string]cid.Cid{}); d.Root != want {
		t.Errorf("root after deleting everything = %s, want %s", d.Root, want)
	}
	store.apply(d)
	if len(store) != 1 {
		t.Errorf("store holds %d nodes after deleting everything, want 1", len(store))
	}
}

// bigTree returns a stored tree of n random keys.
func bigTree(t testing.TB, n int, seed uint64) (memBlocks, cid.Cid, map[string]cid.Cid) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	m := make(map[string]cid.Cid, n)
	for i := 0; len(m) < n; i++ {
		m[randomKey(r)] = valueCID(i)
	}
	store := memBlocks{}
	return store, buildTree(t, store, nil, m), m
}

func TestLazyLoading(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, root, m := bigTree(t, 12000, 3)
	keys := slices.Sorted(maps.Keys(m))
	rootNode, err := decodeNode(store[root])
	if err != nil {
		t.Fatalf("decodeNode(root) = %v", err)
	}
	depth := int64(rootNode.layer + 1)

	tests := []struct {
		name     string
		maxReads int64
		op       func(*Tree) error
	}{
		{"get present", depth, func(tr *Tree) error {
			_, err := tr.Get(ctx, keys[len(keys)/3])
			return err
		}},
		{"get absent", depth, func(tr *Tree) error {
			if _, err := tr.Get(ctx, "app.bsky.feed.post/zzzz"); !errors.Is(err, ErrRecordNotFound) {
				return fmt.Errorf("want ErrRecordNotFound, got %w", err)
			}
			return nil
		}},
		{"put and flush", 2 * depth, func(tr *Tree) error {
			if err := tr.Put(ctx, "app.bsky.feed.post/3lzzzzzzzzzzz", valueCID(-1)); err != nil {
				return err
			}
			_, err := tr.Flush(ctx)
			return err
		}},
		{"delete and flush", 3 * depth, func(tr *Tree) error {
			if err := tr.Delete(ctx, keys[len(keys)/2]); err != nil {
				return err
			}
			_, err := tr.Flush(ctx)
			return err
		}},
		{"walk one", depth, func(tr *Tree) error {
			return tr.Walk(ctx, keys[100], false, func(string, cid.Cid) error { return ErrStopWalk })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cb := &countingBlocks{BlockReader: store}
			tree := NewTree(cb, NewNodeCache(100000), root)
			if err := tt.op(tree); err != nil {
				t.Fatalf("%s = %v", tt.name, err)
			}
			if got := cb.reads.Load(); got > tt.maxReads {
				t.Errorf("%s read %d blocks of a %d-layer tree of %d keys, want <= %d", tt.name, got, depth, len(keys), tt.maxReads)
			}
		})
	}
}

func TestWalk(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, root, m := bigTree(t, 600, 4)
	keys := slices.Sorted(maps.Keys(m))
	tree := NewTree(store, nil, root)
	// A dirty tree walks too.
	extra := "app.bsky.feed.post/222222"
	if err := tree.Put(ctx, extra, valueCID(-1)); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	keys = slices.Sorted(slices.Values(append(keys, extra)))
	collect := func(from string, reverse bool, limit int) []string {
		var got []string
		err := tree.Walk(ctx, from, reverse, func(k string, _ cid.Cid) error {
			got = append(got, k)
			if len(got) == limit {
				return ErrStopWalk
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Walk(%q, %v) = %v", from, reverse, err)
		}
		return got
	}
	idx := func(k string) int { i, _ := slices.BinarySearch(keys, k); return i }
	rev := slices.Clone(keys)
	slices.Reverse(rev)
	tests := []struct {
		name    string
		from    string
		reverse bool
		limit   int
		want    []string
	}{
		{"all forward", "", false, 0, keys},
		{"all reverse", "", true, 0, rev},
		{"after existing key", keys[100], false, 0, keys[101:]},
		{"before existing key", keys[100], true, 0, rev[len(keys)-100:]},
		{"after absent key", "app.bsky.feed.like/zz", false, 5, keys[idx("app.bsky.feed.like/zz"):][:5]},
		{"collection forward", "app.bsky.feed.post/", false, 3, keys[idx("app.bsky.feed.post/"):][:3]},
		{"collection reverse", "app.bsky.feed.post0", true, 3, rev[len(keys)-idx("app.bsky.feed.post0"):][:3]},
		{"past the end", "zzz", false, 0, nil},
		{"before the start", "a", true, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect(tt.from, tt.reverse, tt.limit)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Walk(%q, %v) (-want +got):\n%s", tt.from, tt.reverse, diff)
			}
		})
	}
	boom := errors.New("boom")
	if err := tree.Walk(ctx, "", false, func(string, cid.Cid) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Walk() with failing callback = %v, want %v", err, boom)
	}
}

func TestWalkNodesOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, root, m := bigTree(t, 500, 5)
	tree := NewTree(store, nil, root)
	var values []cid.Cid
	nodes := 0
	err := tree.WalkNodes(ctx, func(n Block, vals []cid.Cid) error {
		if nodes == 0 && n.CID != root {
			t.Errorf("WalkNodes() began with %s, want the root %s", n.CID, root)
		}
		nodes++
		values = append(values, vals...)
		return nil
	})
	if err != nil {
		t.Fatalf("WalkNodes() = %v", err)
	}
	if nodes != len(store) {
		t.Errorf("WalkNodes() visited %d nodes, store has %d", nodes, len(store))
	}
	// Pre-order with entries before subtrees is not key order, but holds every value.
	if len(values) != len(m) {
		t.Errorf("WalkNodes() gave %d values, want %d", len(values), len(m))
	}
	if err := tree.Put(ctx, "app.bsky.feed.post/x", valueCID(1)); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	if err := tree.WalkNodes(ctx, func(Block, []cid.Cid) error { return nil }); err == nil {
		t.Error("WalkNodes() on an unflushed tree = nil, want an error")
	}
}

func TestProofBlocks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, root, m := bigTree(t, 2000, 6)
	keys := slices.Sorted(maps.Keys(m))
	tests := []struct {
		name    string
		key     string
		present bool
	}{
		{"present", keys[777], true},
		{"absent", "app.bsky.feed.post/3lzzzzzzzzzzy", false},
		{"first", keys[0], true},
		{"last", keys[len(keys)-1], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			proof, err := NewTree(store, nil, root).ProofBlocks(ctx, tt.key)
			if err != nil {
				t.Fatalf("ProofBlocks(%q) = %v", tt.key, err)
			}
			partial := memBlocks{}
			for _, b := range proof {
				partial[b.CID] = b.Data
			}
			if proof[0].CID != root {
				t.Errorf("ProofBlocks(%q) starts with %s, want root", tt.key, proof[0].CID)
			}
			got, err := NewTree(partial, nil, root).Get(ctx, tt.key)
			switch {
			case tt.present && (err != nil || got != m[tt.key]):
				t.Errorf("Get(%q) from proof = %s, %v; want %s", tt.key, got, err, m[tt.key])
			case !tt.present && !errors.Is(err, ErrRecordNotFound):
				t.Errorf("Get(%q) from proof = %v, want ErrRecordNotFound", tt.key, err)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, root, m := bigTree(t, 3000, 8)
	r := rand.New(rand.NewPCG(9, 9))
	tests := []struct {
		name    string
		creates int
		updates int
		deletes int
	}{
		{"no change", 0, 0, 0},
		{"one create", 1, 0, 0},
		{"one update", 0, 1, 0},
		{"one delete", 0, 0, 1},
		{"mixed", 40, 30, 50},
		{"heavy", 800, 200, 900},
	}
	for _, tt := range tests {
		newM := maps.Clone(m)
		keys := slices.Sorted(maps.Keys(m))
		r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		var want []KeyChange
		for i := 0; i < tt.creates; i++ {
			k := randomKey(r)
			if _, ok := newM[k]; ok {
				continue
			}
			newM[k] = valueCID(1e6 + i)
			want = append(want, KeyChange{Key: k, New: newM[k]})
		}
		for _, k := range keys[:tt.updates] {
			newM[k] = valueCID(2e6 + len(want))
			want = append(want, KeyChange{Key: k, Old: m[k], New: newM[k]})
		}
		for _, k := range keys[tt.updates : tt.updates+tt.deletes] {
			delete(newM, k)
			want = append(want, KeyChange{Key: k, Old: m[k]})
		}
		slices.SortFunc(want, func(a, b KeyChange) int { return strings.Compare(a.Key, b.Key) })
		s := maps.Clone(store)
		newRoot := buildTree(t, s, nil, newM)
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, blocks, err := Diff(ctx, s, NewNodeCache(1000), root, newRoot)
			if err != nil {
				t.Fatalf("Diff() = %v", err)
			}
			if diff := cmp.Diff(want, got, cidComparer()); diff != "" {
				t.Errorf("Diff() changes (-want +got):\n%s", diff)
			}
			oldNodes, newNodes := reachable(t, s, root), reachable(t, s, newRoot)
			wantBlocks := map[cid.Cid]bool{}
			for c := range newNodes {
				if !oldNodes[c] {
					wantBlocks[c] = true
				}
			}
			gotBlocks := map[cid.Cid]bool{}
			for _, b := range blocks {
				gotBlocks[b.CID] = true
				if !slices.Equal(b.Data, s[b.CID]) {
					t.Errorf("Diff() block %s data differs from the stored one", b.CID)
				}
			}
			if diff := cmp.Diff(wantBlocks, gotBlocks); diff != "" {
				t.Errorf("Diff() blocks (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("from empty", func(t *testing.T) {
		t.Parallel()
		got, blocks, err := Diff(ctx, store, nil, cid.Undef, root)
		if err != nil {
			t.Fatalf("Diff() = %v", err)
		}
		if len(got) != len(m) || len(blocks) != len(store) {
			t.Errorf("Diff() from empty = %d changes, %d blocks; want %d, %d", len(got), len(blocks), len(m), len(store))
		}
	})
}
