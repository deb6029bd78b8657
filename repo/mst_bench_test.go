package repo

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
)

// BenchmarkMSTPutFlush measures one new key put and flushed on a warm tree of 100k keys
// (nodes in the cache; block reads excluded).
func BenchmarkMSTPutFlush(b *testing.B) {
	ctx := context.Background()
	store, root, _ := bigTree(b, 100000, 10)
	cache := NewNodeCache(1 << 17)
	warmCache(b, store, cache, root)
	tree := NewTree(store, cache, root)
	r := rand.New(rand.NewPCG(11, 11))
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = randomKey(r)
	}
	val := valueCID(-1)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := tree.Put(ctx, keys[i%len(keys)], val); err != nil {
			b.Fatal(err)
		}
		if _, err := tree.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkMSTGet measures a lookup in a 100k-key tree: in a tree already holding the
// path, and in a new tree per lookup over a warm cache (one per request).
func BenchmarkMSTGet(b *testing.B) {
	ctx := context.Background()
	store, root, m := bigTree(b, 100000, 12)
	keys := slices.Sorted(maps.Keys(m))
	cache := NewNodeCache(1 << 17)
	warmCache(b, store, cache, root)
	warm := NewTree(store, cache, root)
	for _, k := range keys {
		if _, err := warm.Get(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
	for _, fresh := range []bool{false, true} {
		b.Run(fmt.Sprintf("new-tree=%v", fresh), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				tree := warm
				if fresh {
					tree = NewTree(store, cache, root)
				}
				if _, err := tree.Get(ctx, keys[(i*7919)%len(keys)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// warmCache reads every node of the tree into cache, so benchmarks exclude block reads.
func warmCache(b *testing.B, store BlockReader, cache *NodeCache, root cid.Cid) {
	b.Helper()
	err := NewTree(store, cache, root).WalkNodes(context.Background(), func(Block, []cid.Cid) error { return nil })
	if err != nil {
		b.Fatal(err)
	}
}
