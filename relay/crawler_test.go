package relay

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/coder/websocket"

	"github.com/aerie-social/aerie/repo"
)

// fakeIdentities is a DID directory in memory: the crawler's view of the PLC directory.
type fakeIdentities struct {
	mu sync.Mutex
	m  map[syntax.DID]*identity.Identity
}

func (f *fakeIdentities) LookupIdentity(_ context.Context, atid syntax.AtIdentifier) (*identity.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	did, err := atid.AsDID()
	if err != nil {
		return nil, err
	}
	ident, ok := f.m[did]
	if !ok {
		return nil, fmt.Errorf("no such DID %s", did)
	}
	return ident, nil
}

func (f *fakeIdentities) Purge(context.Context, syntax.DID) error { return nil }

func (f *fakeIdentities) set(did syntax.DID, key atcrypto.PublicKey, pds string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[syntax.DID]*identity.Identity{}
	}
	f.m[did] = &identity.Identity{
		DID:    did,
		Handle: syntax.Handle(strings.ReplaceAll(strings.TrimPrefix(did.String(), "did:plc:"), "-", "") + ".test"),
		Keys:   map[string]identity.VerificationMethod{"atproto": {Type: "Multikey", PublicKeyMultibase: key.Multibase()}},
		Services: map[string]identity.ServiceEndpoint{
			"atproto_pds": {Type: "AtprotoPersonalDataServer", URL: pds},
		},
	}
}

// fakePDS is a host under the test's control: a real repo store, a firehose that sends
// whatever frames the test queues, and getRepo.
type fakePDS struct {
	t      *testing.T
	store  *repo.Store
	srv    *httptest.Server
	frames chan []byte
	seq    int64
	conns  atomic.Int32 // connections accepted
	live   atomic.Int32 // connections still being served
}

func newFakePDS(t *testing.T) *fakePDS {
	t.Helper()
	st, err := repo.Open(t.Context(), t.TempDir(), repo.StoreConfig{}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := &fakePDS{t: t, store: st, frames: make(chan []byte, 64)}
	mux := http.NewServeMux()
	mux.HandleFunc("/xrpc/com.atproto.sync.subscribeRepos", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		p.conns.Add(1)
		p.live.Add(1)
		defer p.live.Add(-1)
		ctx := c.CloseRead(r.Context()) // ends when the crawler hangs up
		for {
			select {
			case <-ctx.Done():
				return
			case f := <-p.frames:
				if f == nil {
					return // drop the connection
				}
				if err := c.Write(ctx, websocket.MessageBinary, f); err != nil {
					return
				}
			}
		}
	})
	mux.HandleFunc("/xrpc/com.atproto.sync.getRepo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
		if err := st.ExportCAR(r.Context(), syntax.DID(r.URL.Query().Get("did")), "", w); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
		}
	})
	mux.HandleFunc("/xrpc/com.atproto.server.describeServer", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"did":"did:web:fake.test","availableUserDomains":[]}`))
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *fakePDS) host() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// account creates a repo on the fake PDS and registers its identity.
func (p *fakePDS) account(ids *fakeIdentities, did syntax.DID) atcrypto.PrivateKeyExportable {
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.store.Create(p.t.Context(), did, key); err != nil {
		p.t.Fatal(err)
	}
	pub, _ := key.PublicKey()
	ids.set(did, pub, p.srv.URL)
	return key
}

// post writes a post and returns its commit as a wire frame with the next seq.
func (p *fakePDS) post(did syntax.DID, text string) []byte {
	rec, err := repo.RecordFromJSON([]byte(fmt.Sprintf(`{"$type":"app.bsky.feed.post","text":%q,"createdAt":"2026-11-25T12:00:00Z"}`, text)))
	if err != nil {
		p.t.Fatal(err)
	}
	ce, err := p.store.ApplyWrites(p.t.Context(), did, []repo.Write{{Action: repo.ActionCreate, Collection: "app.bsky.feed.post", Record: rec}}, repo.WriteOpts{})
	if err != nil {
		p.t.Fatal(err)
	}
	return p.frame(NewCommit(ce))
}

func (p *fakePDS) frame(ev *Event) []byte {
	p.seq++
	ev.setSeq(p.seq, time.Now())
	if err := ev.encode(); err != nil {
		p.t.Fatal(err)
	}
	return ev.frame
}

// capture is a log handler that keeps messages, so tests can see what was rejected.
type capture struct {
	mu   sync.Mutex
	msgs []string
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	c.mu.Lock()
	c.msgs = append(c.msgs, b.String())
	c.mu.Unlock()
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

func (c *capture) dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.msgs, "\n")
}

func (c *capture) count(substr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// crawlerHarness is a running sequencer and crawler over a real relay.sqlite.
type crawlerHarness struct {
	seq       *Sequencer
	crawler   *Crawler
	ids       *fakeIdentities
	log       *capture
	backfills atomic.Int32
	sub       *Subscription
}

func newCrawlerHarness(t *testing.T, cfg Config, tune func(*Crawler)) *crawlerHarness {
	t.Helper()
	cfg.AllowPrivateNetwork = true
	h := &crawlerHarness{ids: &fakeIdentities{}, log: &capture{}}
	h.seq = openSeq(t, filepath.Join(t.TempDir(), "relay.sqlite"), cfg)
	h.crawler = NewCrawler(h.seq, cfg, CrawlerDeps{
		Identities: h.ids,
		HTTP:       http.DefaultClient,
		IsLocal:    func(did string) bool { return strings.HasPrefix(did, "did:plc:local") },
		Backfill: func(ctx context.Context, did syntax.DID, syncSeq int64, r *repo.VerifiedRepo) error {
			h.backfills.Add(1)
			return nil
		},
	}, slog.New(h.log))
	if tune != nil {
		tune(h.crawler)
	}
	sub, err := h.seq.Subscribe(0)
	if err != nil {
		t.Fatal(err)
	}
	h.sub = sub
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.seq.Run(ctx) })
	wg.Go(func() { h.crawler.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		h.seq.Close()
	})
	return h
}

// nextCommits reads sequenced events until n remote #commit events arrived and returns
// their texts' revs.
func (h *crawlerHarness) nextCommits(t *testing.T, n int) []*Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var out []*Event
	for len(out) < n {
		evs, err := h.sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %d commits: Next = %v; log:\n%s", len(out), err, h.log.dump())
		}
		for _, ev := range evs {
			if ev.Commit != nil {
				if !ev.Remote {
					t.Errorf("crawled commit seq %d is not marked remote", ev.Seq)
				}
				out = append(out, ev)
			}
		}
	}
	return out
}

func TestCrawlerRejectsHostilePeer(t *testing.T) {
	t.Parallel()
	pds := newFakePDS(t)
	cfg := DefaultConfig()
	cfg.Mode = ModeFull
	cfg.HostRate = 10_000
	h := newCrawlerHarness(t, cfg, nil)
	alice := syntax.DID("did:plc:alice")
	pds.account(h.ids, alice)
	// mallory's PDS is elsewhere: our fake host may not speak for her.
	mallory := syntax.DID("did:plc:mallory")
	pds.account(h.ids, mallory)
	key, _ := atcrypto.GeneratePrivateKeyK256()
	pub, _ := key.PublicKey()
	h.ids.set(mallory, pub, "https://elsewhere.example.com")

	if err := h.crawler.RequestCrawl(t.Context(), pds.host()); err != nil {
		t.Fatalf("RequestCrawl = %v", err)
	}
	eventually(t, "the crawler connected", func() bool { return pds.conns.Load() == 1 })

	good := pds.post(alice, "one")
	pds.frames <- good
	got := h.nextCommits(t, 1)
	if got[0].Commit.Repo != alice.String() {
		t.Fatalf("sequenced %s, want alice's commit", got[0].Commit.Repo)
	}

	// A commit signed with a key the DID does not name.
	impostor := newFakePDS(t)
	impostor.account(&fakeIdentities{}, alice)
	pds.frames <- pds.frame(mustDecode(t, impostor.post(alice, "forged")))
	// A commit whose prevData is not the tree it inverts to.
	forged := mustDecode(t, pds.post(alice, "two"))
	forged.Commit.PrevData = forged.Commit.Ops[0].Cid
	pds.frames <- pds.frame(forged)
	// An old commit replayed with a new seq: rev going backwards.
	pds.frames <- pds.frame(mustDecode(t, good))
	// Blocks that do not hash to their CIDs.
	corrupt := mustDecode(t, pds.post(alice, "three"))
	corrupt.Commit.Blocks = bytes.Replace(corrupt.Commit.Blocks, []byte("three"), []byte("THREE"), 1)
	pds.frames <- pds.frame(corrupt)
	// An account this host does not host.
	pds.frames <- pds.post(mallory, "not yours")
	// Garbage.
	pds.frames <- []byte{0xa2, 0x01}

	// The crawler is still working: a commit that continues alice's chain goes through.
	// ("two" and "three" were rejected, so the repo's real head moved on without us: the
	// next commit reveals the gap, which a full-mode crawler resyncs.)
	pds.frames <- pds.post(alice, "four")
	eventually(t, "rejections logged", func() bool {
		return h.log.count("rejected commit") >= 5 && h.log.count("malformed frame") >= 1
	})
	for _, want := range []string{"bad signature", "ops undone give root", "rev not after", "host does not host the account", "invalid CAR"} {
		if h.log.count(want) == 0 {
			t.Errorf("no rejection mentioning %q; log:\n%s", want, h.log.dump())
		}
	}
	eventually(t, "the gap repaired by a resync", func() bool { return h.backfills.Load() >= 1 })

	// An oversized frame kills only that connection; the crawler redials.
	pds.frames <- bytes.Repeat([]byte{0}, MaxFrameSize+1)
	eventually(t, "a redial after the oversized frame", func() bool { return pds.conns.Load() == 2 && pds.live.Load() == 1 })
	pds.frames <- pds.post(alice, "five")
	if evs := h.nextCommits(t, 1); !strings.Contains(evs[0].Commit.Repo, "alice") {
		t.Errorf("after the redial: sequenced %s", evs[0].Commit.Repo)
	}
}

func TestCrawlerDropsSlowloris(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		hits.Add(1)
		// Start a frame and never finish it.
		wr, err := c.Writer(r.Context(), websocket.MessageBinary)
		if err != nil {
			return
		}
		wr.Write([]byte{0xa2})
		<-r.Context().Done()
	}))
	defer slow.Close()
	cfg := DefaultConfig()
	h := newCrawlerHarness(t, cfg, func(c *Crawler) { c.frameTimeout = 200 * time.Millisecond })
	if _, err := h.crawler.addHost(t.Context(), strings.TrimPrefix(slow.URL, "http://"), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stalled stream dropped and redialled", func() bool { return hits.Load() >= 2 })
	info, err := h.crawler.HostStatus(strings.TrimPrefix(slow.URL, "http://"))
	if err != nil || info.LastError == "" {
		t.Errorf("HostStatus = %+v, %v; want the read timeout recorded; log:\n%s", info, err, h.log.dump())
	}
}

func TestCrawlerResyncsAfterGap(t *testing.T) {
	t.Parallel()
	pds := newFakePDS(t)
	cfg := DefaultConfig()
	cfg.HostRate = 10_000
	h := newCrawlerHarness(t, cfg, nil)
	bob := syntax.DID("did:plc:bob")
	pds.account(h.ids, bob)
	pds.post(bob, "before anyone followed")

	if err := h.crawler.Want(t.Context(), bob); err != nil {
		t.Fatalf("Want = %v", err)
	}
	eventually(t, "the crawler connected", func() bool { return pds.conns.Load() == 1 })
	eventually(t, "the backfill", func() bool { return h.backfills.Load() == 1 })
	pds.frames <- pds.post(bob, "live one")
	h.nextCommits(t, 1)

	// The connection drops and an event is lost on the way (the host's log skipped it).
	pds.frames <- nil
	pds.post(bob, "lost")
	eventually(t, "a redial", func() bool { return pds.conns.Load() == 2 && pds.live.Load() == 1 })
	pds.frames <- pds.post(bob, "after the gap")
	eventually(t, "the resync", func() bool { return h.backfills.Load() == 2 })
	if h.log.count("desynchronized") == 0 {
		t.Error("the gap was not logged")
	}
	// After the resync the chain continues from the fetched head.
	pds.frames <- pds.post(bob, "in sync again")
	evs := h.nextCommits(t, 1)
	if evs[0].Commit.Repo != bob.String() {
		t.Errorf("sequenced %s after the resync", evs[0].Commit.Repo)
	}
	if !h.crawler.Tracked(bob) {
		t.Error("bob is not tracked")
	}
}

func TestCrawlerInterestMode(t *testing.T) {
	t.Parallel()
	pds := newFakePDS(t)
	cfg := DefaultConfig()
	cfg.HostRate = 10_000
	h := newCrawlerHarness(t, cfg, nil)
	stranger := syntax.DID("did:plc:stranger")
	pds.account(h.ids, stranger)
	if err := h.crawler.RequestCrawl(t.Context(), pds.host()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the crawler connected", func() bool { return pds.conns.Load() == 1 })
	// A post nobody here cares about is dropped; a reply to a local account is taken.
	pds.frames <- pds.post(stranger, "talking to myself")
	pds.frames <- pds.post(stranger, "hey at://did:plc:local1/app.bsky.feed.post/3k")
	evs := h.nextCommits(t, 1)
	if !bytes.Contains(evs[0].Commit.Blocks, []byte("did:plc:local1")) {
		t.Errorf("sequenced the wrong commit")
	}
	info, err := h.crawler.HostStatus(pds.host())
	if err != nil || info.AccountCount != 1 || info.Status != HostActive {
		t.Errorf("HostStatus = %+v, %v; want active with 1 account", info, err)
	}
}

func mustDecode(t *testing.T, frame []byte) *Event {
	t.Helper()
	ev, err := DecodeFrame(frame)
	if err != nil {
		t.Fatal(err)
	}
	return &Event{Commit: ev.Commit}
}

// eventually polls cond for up to 15 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
