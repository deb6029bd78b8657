package appview

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"iter"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bluesky-social/indigo/api/bsky"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/relay"
	"github.com/aerie-social/aerie/repo"
)

// allEvents reads the whole relay log.
func (n *testNet) allEvents() []*relay.Event {
	n.t.Helper()
	sub, err := n.seq.Subscribe(0)
	if err != nil {
		n.t.Fatalf("Subscribe(0) = %v", err)
	}
	var out []*relay.Event
	for int64(len(out)) < n.seq.LastSeq() {
		evs, err := sub.Next(context.Background())
		if err != nil {
			n.t.Fatalf("Next = %v", err)
		}
		out = append(out, evs...)
	}
	return out
}

// indexCounts returns a fingerprint of every count in the index.
func indexCounts(t testing.TB, a *AppView) string {
	t.Helper()
	var s string
	err := a.db.Read(context.Background(), func(tx *sql.Tx) error {
		for _, q := range []string{
			`SELECT group_concat(uri || ':' || like_count || '/' || repost_count || '/' || reply_count || '/' || quote_count, ' ') FROM (SELECT * FROM posts ORDER BY uri)`,
			`SELECT group_concat(did || ':' || followers_count || '/' || follows_count || '/' || posts_count, ' ') FROM (SELECT * FROM actors ORDER BY did)`,
			`SELECT count(*) || ' notifications' FROM notifications`,
			`SELECT count(*) || ' feed items' FROM feed_items`,
		} {
			var v sql.NullString
			if err := tx.QueryRowContext(context.Background(), q).Scan(&v); err != nil {
				return err
			}
			s += v.String + "\n"
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read counts: %v", err)
	}
	return s
}

func TestReplayNeverDoubleCounts(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	a, b := n.account("a"), n.account("b")
	p := n.post(a, "post")
	n.like(b, p)
	n.repost(b, p)
	n.follow(b, a)
	n.reply(b, "reply", p, p)
	n.sync()
	av := n.appview()
	before := indexCounts(t, av)

	evs := n.allEvents()
	// Past the cursor check: every event applied a second time, as a crash between the
	// index commit and the cursor write would (it cannot, they share a transaction) or a
	// duplicate delivery from another host.
	err := av.db.Write(context.Background(), func(tx *sql.Tx) error {
		ix := newIndexTx(context.Background(), av.db, tx, newTouched(), newKnownActors(), nil, discardLog())
		defer ix.close()
		for _, ev := range evs {
			if err := ix.event(ev, av.now()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("re-apply = %v", err)
	}
	if after := indexCounts(t, av); after != before {
		t.Errorf("counts after replay:\n%s\nwant:\n%s", after, before)
	}
	// Through apply, the cursor skips them.
	if err := av.apply(context.Background(), evs); err != nil {
		t.Fatalf("apply = %v", err)
	}
	if after := indexCounts(t, av); after != before {
		t.Errorf("counts after apply of old events:\n%s\nwant:\n%s", after, before)
	}
}

func TestRestartMidStreamResumes(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	author := n.account("author")
	p := n.post(author, "popular")
	fans := make([]syntax.DID, 12)
	for i := range fans {
		fans[i] = n.account(fmt.Sprintf("fan%d", i))
	}
	n.sync()
	for i, f := range fans {
		if i == len(fans)/2 {
			// Stop the indexer while events keep coming; it resumes from its cursor.
			n.stopAVAndClose()
		}
		n.like(f, p)
		n.follow(f, author)
		if i%3 == 0 {
			n.repost(f, p)
		}
	}
	n.startAV()
	n.sync()
	if got := n.appview().Cursor(); got != n.seq.LastSeq() {
		t.Errorf("Cursor() = %d, want %d", got, n.seq.LastSeq())
	}
	pv := n.postView(author, p.uri)
	if got, want := countsOf(pv), (counts{likes: 12, reposts: 4}); got != want {
		t.Errorf("counts after restart = %+v, want %+v", got, want)
	}
	if prof := n.profile(author, author); *prof.FollowersCount != 12 {
		t.Errorf("followersCount after restart = %d, want 12", *prof.FollowersCount)
	}
	if got := reasons(n.notifications(author)); got["like"] != 12 || got["follow"] != 12 || got["repost"] != 4 {
		t.Errorf("notifications after restart = %v", got)
	}
}

// repoRecords iterates every record of did's repo, as the node feeds Reindex.
func (n *testNet) repoRecords(did syntax.DID) iter.Seq2[RepoRecord, error] {
	return func(yield func(RepoRecord, error) bool) {
		cols, err := n.store.Describe(context.Background(), did)
		if err != nil {
			yield(RepoRecord{}, err)
			return
		}
		for _, col := range cols {
			cursor := ""
			for {
				recs, next, err := n.store.ListRecords(context.Background(), did, col, cursor, 100, false)
				if err != nil {
					yield(RepoRecord{}, err)
					return
				}
				for _, r := range recs {
					if !yield(RepoRecord{Collection: col, RKey: r.RKey, CID: r.CID, CBOR: r.CBOR}, nil) {
						return
					}
				}
				if next == "" {
					break
				}
				cursor = next
			}
		}
	}
}

func TestReindexRebuildsTheSameIndex(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	a, b, c := n.account("a"), n.account("b"), n.account("c")
	pa := n.post(a, "first")
	pb := n.reply(b, "re", pa, pa)
	n.like(b, pa)
	n.like(c, pa)
	n.like(c, pb)
	n.repost(c, pa)
	n.quote(c, "q", pb)
	n.follow(a, b)
	n.follow(b, a)
	n.follow(c, a)
	n.create(a, colProfile, "self", map[string]any{"displayName": "A"})
	n.sync()
	live := n.appview()
	want := indexCounts(t, live)

	// A reindex of an up-to-date account changes nothing.
	for _, d := range []syntax.DID{a, b, c} {
		if err := live.Reindex(context.Background(), d, n.repoRecords(d)); err != nil {
			t.Fatalf("Reindex(%s) = %v", d, err)
		}
	}
	if got := indexCounts(t, live); got != want {
		t.Errorf("counts after reindex of current accounts:\n%s\nwant:\n%s", got, want)
	}

	// A fresh index built from the repos alone (aerie reindex), in an order where likes
	// and replies arrive before the posts they name, has the same counts.
	fresh, err := Open(context.Background(), filepath.Join(t.TempDir(), "index.sqlite"), DefaultConfig(), discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	for _, d := range []syntax.DID{c, b, a} {
		if err := fresh.Reindex(context.Background(), d, n.repoRecords(d)); err != nil {
			t.Fatalf("Reindex(%s) = %v", d, err)
		}
	}
	got := indexCounts(t, fresh)
	// Notification times differ; their number and every count must not.
	if got != want {
		t.Errorf("counts of a rebuilt index:\n%s\nwant:\n%s", got, want)
	}
}

// markForReindex sends a #sync for did's current commit through the index.
func (n *testNet) markForReindex(t *testing.T, did syntax.DID) {
	t.Helper()
	commit, rev, _, err := n.store.Head(context.Background(), did)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := n.store.GetBlocks(context.Background(), did, []cid.Cid{commit}, &buf); err != nil {
		t.Fatal(err)
	}
	car, err := repo.ReadCAR(&buf, repo.DefaultCARLimits())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := car.Get(commit)
	ev, err := relay.NewSync(did, rev, commit, block)
	if err != nil {
		t.Fatal(err)
	}
	n.submit(ev)
	n.sync()
}

// TestNeedsReindexPages checks that marked accounts are listed in pages after a cursor,
// so accounts that stay marked cannot hide the rest.
func TestNeedsReindexPages(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	var all []syntax.DID
	for _, name := range []string{"a", "b", "c"} {
		d := n.account(name)
		n.post(d, "so that the #sync is not the creation's")
		n.markForReindex(t, d)
		all = append(all, d)
	}
	slices.Sort(all)
	var got []syntax.DID
	var after syntax.DID
	for range 3 {
		page, err := n.appview().NeedsReindex(context.Background(), after, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1]
	}
	if !slices.Equal(got, all) {
		t.Errorf("NeedsReindex pages = %v, want %v", got, all)
	}
}

func TestSyncMarksForReindex(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	a := n.account("a")
	n.post(a, "x")
	n.markForReindex(t, a)
	dids, err := n.appview().NeedsReindex(context.Background(), "", 10)
	if err != nil || len(dids) != 1 || dids[0] != a {
		t.Fatalf("NeedsReindex = %v, %v; want [%s]", dids, err, a)
	}
	if err := n.appview().Reindex(context.Background(), a, n.repoRecords(a)); err != nil {
		t.Fatal(err)
	}
	if dids, _ := n.appview().NeedsReindex(context.Background(), "", 10); len(dids) != 0 {
		t.Errorf("NeedsReindex after Reindex = %v, want none", dids)
	}
}

// TestSyncOfANewAccountNeedsNoReindex checks that the #sync every account creation sends
// after its first commit marks nothing, while one sent after a later commit does, also
// when the first commit was indexed in an earlier transaction.
func TestSyncOfANewAccountNeedsNoReindex(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	fresh := n.account("fresh")
	n.sync()
	n.markForReindex(t, fresh)
	posted := n.account("posted")
	n.post(posted, "after the first commit")
	n.markForReindex(t, posted)
	dids, err := n.appview().NeedsReindex(context.Background(), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dids, []syntax.DID{posted}) {
		t.Errorf("NeedsReindex = %v, want [%s] (%s was only created)", dids, posted, fresh)
	}
	// A second #sync of the first commit is not the creation's: the first consumed it.
	n.markForReindex(t, fresh)
	if dids, _ := n.appview().NeedsReindex(context.Background(), "", 10); len(dids) != 2 {
		t.Errorf("NeedsReindex after a second #sync = %v, want both accounts", dids)
	}
}

// TestSearchRowsFollowBatchedPosts checks posts_fts when posts are created and deleted
// inside one index transaction (the indexer writes search rows once, at its end) and
// across transactions.
func TestSearchRowsFollowBatchedPosts(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	alice := n.account("alice")
	kept := n.post(alice, "zebra crossing")
	gone := n.post(alice, "zebra stripes")
	later := n.post(alice, "zebra herd")
	n.delete(alice, gone.uri) // not the newest row, so its rowid is not reused
	n.sync()

	// The whole log in one transaction, into a fresh index.
	fresh := openBenchIndex(t, t.TempDir(), nil)
	defer fresh.Close()
	if err := fresh.apply(context.Background(), n.allEvents()); err != nil {
		t.Fatalf("apply = %v", err)
	}
	match := func(a *AppView, q string) []string {
		var uris []string
		err := a.db.Read(context.Background(), func(tx *sql.Tx) error {
			rows, err := tx.Query(`SELECT p.uri FROM posts_fts f JOIN posts p ON p.rowid = f.rowid
				WHERE posts_fts MATCH ? ORDER BY p.uri`, q)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var u string
				if err := rows.Scan(&u); err != nil {
					return err
				}
				uris = append(uris, u)
			}
			return rows.Err()
		})
		if err != nil {
			t.Fatalf("search %q: %v", q, err)
		}
		return uris
	}
	var stale int
	err := fresh.db.Read(context.Background(), func(tx *sql.Tx) error {
		return tx.QueryRow(`SELECT count(*) FROM posts_fts WHERE posts_fts MATCH 'stripes'`).Scan(&stale)
	})
	if err != nil || stale != 0 {
		t.Errorf("posts_fts rows for the post deleted in the batch = %d (%v), want 0", stale, err)
	}
	want := []string{kept.uri, later.uri}
	slices.Sort(want)
	for _, a := range []*AppView{fresh, n.appview()} {
		if got := match(a, "zebra"); !slices.Equal(got, want) {
			t.Errorf("search = %v, want %v", got, want)
		}
	}

	// A later transaction deletes a post whose search row is already written.
	n.delete(alice, kept.uri)
	n.sync()
	if got := match(n.appview(), "zebra"); !slices.Equal(got, []string{later.uri}) {
		t.Errorf("search after deleting %s = %v, want only %s", kept.uri, got, later.uri)
	}
	var out bsky.FeedSearchPosts_Output
	n.get(alice, "app.bsky.feed.searchPosts", vals("q", "zebra"), &out)
	if len(out.Posts) != 1 || out.Posts[0].Uri != later.uri {
		t.Errorf("searchPosts(zebra) = %d posts, want only %s", len(out.Posts), later.uri)
	}
}
