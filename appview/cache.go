package appview

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
)

// cacheShards is how many generation counters guard each cache. A reader may only Set a
// value if its shard's generation did not move while it read the index; more shards mean
// fewer refused Sets while the indexer invalidates unrelated keys.
const cacheShards = 256

// cache is a ristretto cache of values hydrated from the index, keyed by DID or URI.
//
// ristretto applies Set asynchronously, so a reader that loaded a value from a snapshot
// taken before an index commit could otherwise store it after the indexer's Del and keep a
// stale value forever. Each key hashes to a generation counter that invalidate bumps
// before it deletes; a reader takes stamp before reading the index and set refuses the
// value if the stamp moved. A Set ristretto drops is only a miss: the index is the truth.
type cache[V any] struct {
	c    *ristretto.Cache[string, V]
	gens [cacheShards]atomic.Uint64
}

func newCache[V any](maxCost int64) (*cache[V], error) {
	c, err := ristretto.NewCache(&ristretto.Config[string, V]{
		// NumCounters ~10× the expected entries (ristretto's advice); entries cost
		// about 1 KiB.
		NumCounters: max(maxCost/100, 1000),
		MaxCost:     maxCost,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("new cache: %w", err)
	}
	return &cache[V]{c: c}, nil
}

func shardOf(key string) int {
	// FNV-1a: a few nanoseconds, and any spread will do.
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % cacheShards)
}

func (c *cache[V]) get(key string) (V, bool) { return c.c.Get(key) }

// generations copies every shard's generation. A request takes it before its read
// transaction starts, and passes stamp(g, key) to set: a stamp taken later, after the
// transaction's snapshot was fixed, could postdate an invalidation whose commit the
// snapshot does not show, and let a stale value in for good.
func (c *cache[V]) generations() *[cacheShards]uint64 {
	var g [cacheShards]uint64
	for i := range g {
		g[i] = c.gens[i].Load()
	}
	return &g
}

// stamp returns key's generation in g, to pass to set.
func stamp(g *[cacheShards]uint64, key string) uint64 { return g[shardOf(key)] }

// set stores v unless key's shard was invalidated since stamp.
func (c *cache[V]) set(key string, v V, cost int64, stamp uint64) {
	gen := &c.gens[shardOf(key)]
	if gen.Load() != stamp {
		return
	}
	c.c.Set(key, v, cost)
	// An invalidate between the check above and the Set would have deleted first and
	// let this stale value in after it; ristretto applies Set and Del in call order, so
	// deleting again now that we see the bump leaves the key absent.
	if gen.Load() != stamp {
		c.c.Del(key)
	}
}

// invalidate drops key; called after the index transaction that changed it commits.
func (c *cache[V]) invalidate(key string) {
	c.gens[shardOf(key)].Add(1)
	c.c.Del(key)
}

func (c *cache[V]) close() { c.c.Close() }

// caches are the AppView's hydration caches.
type caches struct {
	actors  *cache[*actorRow]
	posts   *cache[*postRow]
	follows *cache[*followSet] // DID → its follows
}

func newCaches(maxCost int64) (*caches, error) {
	a, err := newCache[*actorRow](maxCost / 4)
	if err != nil {
		return nil, err
	}
	p, err := newCache[*postRow](maxCost / 2)
	if err != nil {
		a.close()
		return nil, err
	}
	f, err := newCache[*followSet](maxCost / 4)
	if err != nil {
		a.close()
		p.close()
		return nil, err
	}
	return &caches{actors: a, posts: p, follows: f}, nil
}

func (c *caches) close() {
	c.actors.close()
	c.posts.close()
	c.follows.close()
}

// touched collects the cache keys an index transaction changed, so they can be
// invalidated once it has committed.
type touched struct {
	actors  map[string]struct{}
	posts   map[string]struct{}
	follows map[string]struct{}
	// ensured are the DIDs whose actors row the transaction made sure of; once it
	// commits they go to knownActors.
	ensured map[string]struct{}
	// genesis maps the DIDs the transaction indexed commits of to the rev of their first
	// commit (one with no since), or to "" once a later commit was indexed; once it
	// commits it goes to knownActors.
	genesis map[string]string
}

func newTouched() *touched {
	return &touched{actors: map[string]struct{}{}, posts: map[string]struct{}{}, follows: map[string]struct{}{},
		ensured: map[string]struct{}{}, genesis: map[string]string{}}
}

func (t *touched) actor(did string) { t.actors[did] = struct{}{} }
func (t *touched) post(uri string) {
	if uri != "" {
		t.posts[uri] = struct{}{}
	}
}
func (t *touched) follow(did string) { t.follows[did] = struct{}{} }

// invalidate drops every touched key. Call it after the transaction commits, never before:
// a reader between the Del and the commit would cache the old value again.
func (c *caches) invalidate(t *touched) {
	for k := range t.actors {
		c.actors.invalidate(k)
	}
	for k := range t.posts {
		c.posts.invalidate(k)
	}
	for k := range t.follows {
		c.follows.invalidate(k)
	}
}

// maxKnownActors bounds knownActors: about 100 bytes each, so at most ~25 MiB.
const maxKnownActors = 1 << 18

// maxGenesisRevs bounds knownActors.genesis. Entries normally last from an account's
// creation to its #sync, a few events later; those of hosts that send no #sync pile up
// until the map is forgotten.
const maxGenesisRevs = 1 << 12

// knownActors are DIDs whose actors row is committed. Rows of actors are never deleted,
// so an entry stays true; the set is only a shortcut, and forgetting it all when full
// costs one statement per DID seen again.
//
// It also remembers the accounts whose only indexed commit is their first, by that
// commit's rev: the #sync that follows an account's creation names the same rev, and the
// index already holds exactly that state, so it needs no reindex. Forgetting one costs a
// reindex of a new repo.
type knownActors struct {
	mu      sync.Mutex
	m       map[string]struct{}
	genesis map[string]string
}

func newKnownActors() *knownActors {
	return &knownActors{m: map[string]struct{}{}, genesis: map[string]string{}}
}

func (k *knownActors) has(did string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.m[did]
	return ok
}

// genesisRev returns the rev of did's first commit while that is its only indexed one.
func (k *knownActors) genesisRev(did string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	rev, ok := k.genesis[did]
	return rev, ok
}

// add records what a committed transaction learnt.
func (k *knownActors) add(t *touched) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.m)+len(t.ensured) > maxKnownActors {
		clear(k.m)
	}
	for d := range t.ensured {
		k.m[d] = struct{}{}
	}
	if len(k.genesis)+len(t.genesis) > maxGenesisRevs {
		clear(k.genesis)
	}
	for d, rev := range t.genesis {
		if rev == "" {
			delete(k.genesis, d)
		} else {
			k.genesis[d] = rev
		}
	}
}
