package appview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"

	"github.com/aerie-social/aerie/relay"
	"github.com/aerie-social/aerie/repo"
)

// genConfig sizes the synthetic network. The defaults keep `make bench` to a minute or
// two; the full size is AERIE_BENCH_USERS=10000 AERIE_BENCH_POSTS=1000000
// AERIE_BENCH_FOLLOWS=200.
type genConfig struct {
	users, posts, follows int
	// hostedPercent of the accounts (AERIE_BENCH_HOSTED, default 10) are hosted on the
	// node whose index the benchmarks build, and get notifications: a community instance
	// indexes its members' neighbourhood, most of it hosted elsewhere.
	hostedPercent int
	seed          uint64
}

func benchGenConfig() genConfig {
	env := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	return genConfig{
		users:   env("AERIE_BENCH_USERS", 1000),
		posts:   env("AERIE_BENCH_POSTS", 50_000),
		follows: env("AERIE_BENCH_FOLLOWS", 50),
		// 100 hosts them all; env ignores 0, so "none" is not a choice.
		hostedPercent: min(env("AERIE_BENCH_HOSTED", 10), 100),
		seed:          1,
	}
}

// generator produces a deterministic synthetic network as relay events, one record per
// #commit as real clients write them: handles and profiles, power-law follows (a few
// accounts have most followers; each account follows about cfg.follows), posts spread
// over 30 days with replies and quotes, likes and reposts of recent posts.
type generator struct {
	cfg   genConfig
	rng   *rand.Rand
	zipf  *rand.Zipf
	seq   int64
	start time.Time
	rev   int64
	dids  []string
	posts []ref
	// more's state: the time and number of its last post, and events made but not yet
	// returned.
	moreAt  time.Time
	moreI   int
	pending []*relay.Event
}

func newGenerator(cfg genConfig) *generator {
	rng := rand.New(rand.NewPCG(cfg.seed, cfg.seed))
	g := &generator{cfg: cfg, rng: rng, start: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
	g.zipf = rand.NewZipf(rng, 1.2, 10, uint64(cfg.users-1))
	for i := range cfg.users {
		g.dids = append(g.dids, fmt.Sprintf("did:plc:bench%019d", i))
	}
	return g
}

// hosted is Config.Hosted for the network: its first cfg.hostedPercent accounts.
func (g *generator) hosted() func(string) bool {
	n := len(g.dids) * g.cfg.hostedPercent / 100
	set := make(map[string]bool, n)
	for _, did := range g.dids[:n] {
		set[did] = true
	}
	return func(did string) bool { return set[did] }
}

// event stamps ev with the next seq and time t.
func (g *generator) event(ev *relay.Event, t time.Time) *relay.Event {
	g.seq++
	ev.Seq, ev.Time = g.seq, t
	return ev
}

// commit returns a #commit creating one record.
func (g *generator) commit(did, collection string, value map[string]any, t time.Time) (*relay.Event, ref) {
	value["$type"] = collection
	value["createdAt"] = t.UTC().Format(syntax.AtprotoDatetimeLayout)
	raw, err := json.Marshal(value)
	if err != nil {
		panic(err) // our own map: cannot fail
	}
	rec, err := repo.RecordFromJSON(raw)
	if err != nil {
		panic(fmt.Sprintf("generator record %s: %v", raw, err))
	}
	g.rev++
	rkey := syntax.NewTID(t.UnixMicro(), uint(g.rev%1024)).String()
	if collection == colProfile {
		rkey = "self"
	}
	var car bytes.Buffer
	repo.WriteCARHeader(&car, rec.CID)
	repo.WriteCARBlock(&car, rec.CID, rec.CBOR)
	link := lexutil.LexLink(rec.CID)
	ev := &relay.Event{Commit: &comatproto.SyncSubscribeRepos_Commit{
		Repo:   did,
		Rev:    syntax.NewTID(t.UnixMicro(), uint(g.rev%1024)).String(),
		Commit: link,
		Blocks: car.Bytes(),
		Ops:    []*comatproto.SyncSubscribeRepos_RepoOp{{Action: "create", Path: collection + "/" + rkey, Cid: &link}},
		Blobs:  []lexutil.LexLink{},
	}}
	return g.event(ev, t), ref{uri: "at://" + did + "/" + collection + "/" + rkey, cid: rec.CID.String()}
}

// network returns every event of the network in seq order.
func (g *generator) network() []*relay.Event {
	var evs []*relay.Event
	t := g.start
	for i, did := range g.dids {
		evs = append(evs, g.event(relay.NewIdentity(syntax.DID(did), syntax.Handle(fmt.Sprintf("user%d.test", i))), t))
		ev, _ := g.commit(did, colProfile, map[string]any{"displayName": fmt.Sprintf("User %d", i)}, t)
		evs = append(evs, ev)
	}
	for i, did := range g.dids {
		n := g.cfg.follows/2 + g.rng.IntN(g.cfg.follows+1)
		seen := map[uint64]bool{uint64(i): true}
		for range n {
			j := g.zipf.Uint64()
			if seen[j] {
				j = g.rng.Uint64N(uint64(g.cfg.users))
				if seen[j] {
					continue
				}
			}
			seen[j] = true
			ev, _ := g.commit(did, colFollow, map[string]any{"subject": g.dids[j]}, t)
			evs = append(evs, ev)
		}
	}
	step := 30 * 24 * time.Hour / time.Duration(g.cfg.posts)
	for i := range g.cfg.posts {
		t = t.Add(step)
		evs = g.post(evs, i, t)
	}
	return evs
}

// post appends to evs the events of the network's i-th post, at t: the post (a reply or
// a quote now and then), about one like of a recent post and a repost every fifth.
func (g *generator) post(evs []*relay.Event, i int, t time.Time) []*relay.Event {
	did := g.dids[g.rng.IntN(len(g.dids))]
	value := map[string]any{"text": fmt.Sprintf("post %d about topic%d", i, g.rng.IntN(100)), "langs": []any{"en"}}
	if len(g.posts) > 0 {
		switch x := g.rng.IntN(10); {
		case x < 2:
			parent := g.recent()
			value["reply"] = map[string]any{"root": sr(parent), "parent": sr(parent)}
		case x < 3:
			value["embed"] = map[string]any{"$type": "app.bsky.embed.record", "record": sr(g.recent())}
		}
	}
	ev, p := g.commit(did, colPost, value, t)
	evs = append(evs, ev)
	g.posts = append(g.posts, p)
	for range g.rng.IntN(3) {
		ev, _ := g.commit(g.dids[g.zipf.Uint64()], colLike, map[string]any{"subject": sr(g.recent())}, t)
		evs = append(evs, ev)
	}
	if g.rng.IntN(5) == 0 {
		ev, _ := g.commit(g.dids[g.rng.IntN(len(g.dids))], colRepost, map[string]any{"subject": sr(g.recent())}, t)
		evs = append(evs, ev)
	}
	return evs
}

// more returns the next n events of a network whose first cfg.posts posts are indexed
// already (seeded): posts, likes and reposts as network makes them, and two new follows
// per post, so the mix of kinds stays the network's. Set seq to the index's cursor before
// the first call. Its own first posts have nothing recent to reply to, quote, like or
// repost but posts of its own.
func (g *generator) more(n int) []*relay.Event {
	if g.moreAt.IsZero() {
		g.moreAt, g.moreI = g.start.Add(31*24*time.Hour), g.cfg.posts
	}
	step := 30 * 24 * time.Hour / time.Duration(g.cfg.posts)
	for len(g.pending) < n {
		g.moreAt = g.moreAt.Add(step)
		g.pending = g.post(g.pending, g.moreI, g.moreAt)
		g.moreI++
		for range 2 {
			author, subject := g.dids[g.rng.IntN(len(g.dids))], g.dids[g.zipf.Uint64()]
			if author != subject {
				ev, _ := g.commit(author, colFollow, map[string]any{"subject": subject}, g.moreAt)
				g.pending = append(g.pending, ev)
			}
		}
	}
	evs := g.pending[:n:n]
	g.pending = g.pending[n:]
	return evs
}

// recent returns one of the last 1000 posts.
func (g *generator) recent() ref {
	n := min(len(g.posts), 1000)
	return g.posts[len(g.posts)-1-g.rng.IntN(n)]
}

func TestGeneratorIsDeterministic(t *testing.T) {
	t.Parallel()
	cfg := genConfig{users: 20, posts: 50, follows: 5, seed: 7}
	a, b := newGenerator(cfg).network(), newGenerator(cfg).network()
	if len(a) != len(b) {
		t.Fatalf("two runs gave %d and %d events", len(a), len(b))
	}
	for i := range a {
		if a[i].DID() != b[i].DID() || a[i].Kind() != b[i].Kind() {
			t.Fatalf("event %d differs", i)
		}
	}
}
