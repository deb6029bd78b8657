package appview

import (
	"context"
	"database/sql"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/api/bsky"
)

// TestReadsWaitForLocalWrites: a write the node has acknowledged (NoteLocalWrite) shows
// in every later read, whoever reads, because the read waits for the indexer to pass it;
// with no indexer running, the read is answered after WaitTimeout all the same.
func TestReadsWaitForLocalWrites(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	alice, bob := n.account("alice"), n.account("bob")
	n.sync()
	n.stopAVAndClose()
	p := n.post(alice, "written while the indexer is down")

	// An index that is open but not yet consuming the stream, as after a restart.
	cfg := DefaultConfig()
	cfg.PublicURL = "https://pds.test"
	cfg.WaitTimeout = time.Minute
	av, err := Open(context.Background(), filepath.Join(n.dir, "index.sqlite"), cfg, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	var running atomic.Bool
	n.mu.Lock()
	n.av = av
	n.stopAV = func() {
		cancel()
		if running.Load() {
			if err := <-ran; err != nil {
				t.Errorf("AppView.Run = %v", err)
			}
		}
		if err := av.Close(); err != nil {
			t.Errorf("AppView.Close = %v", err)
		}
	}
	seq := n.lastSeq
	n.mu.Unlock()
	av.NoteLocalWrite(seq)

	var out bsky.FeedGetAuthorFeed_Output
	answered := make(chan int, 1)
	go func() {
		st := 0
		defer func() { answered <- st }()
		st = n.call(bob, http.MethodGet, "app.bsky.feed.getAuthorFeed", vals("actor", alice.String()), nil, &out)
	}()
	select {
	case st := <-answered:
		t.Fatalf("getAuthorFeed answered %d before the index had the acknowledged write", st)
	case <-time.After(200 * time.Millisecond):
	}
	running.Store(true)
	go func() { ran <- av.Run(ctx, n.seq) }()
	if st := <-answered; st != http.StatusOK {
		t.Fatalf("getAuthorFeed = %d", st)
	}
	if len(out.Feed) != 1 || out.Feed[0].Post.Uri != p.uri {
		t.Errorf("getAuthorFeed = %+v, want the post written before the read", out.Feed)
	}

	// A write the index never reaches delays reads by WaitTimeout, never fails them.
	cfg.WaitTimeout = 50 * time.Millisecond
	stalled, err := Open(context.Background(), filepath.Join(t.TempDir(), "index.sqlite"), cfg, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.NoteLocalWrite(seq)
	began := time.Now()
	st, body := callMethod(t, stalled, "app.bsky.actor.getProfile", "actor="+alice.String())
	if took := time.Since(began); st != http.StatusBadRequest || !strings.Contains(body, "Profile not found") || took < 50*time.Millisecond {
		t.Errorf("getProfile on a stalled index = %d %s after %s; want the index's answer after the 50ms wait", st, body, took)
	}
}

// callMethod serves one GET of nsid with the query string q from av's method table.
func callMethod(t *testing.T, av *AppView, nsid, q string) (int, string) {
	t.Helper()
	for _, m := range av.Methods() {
		if m.NSID == nsid {
			rec := httptest.NewRecorder()
			m.Handler(rec, httptest.NewRequest(http.MethodGet, "/xrpc/"+nsid+"?"+q, nil))
			return rec.Code, rec.Body.String()
		}
	}
	t.Fatalf("no method %s", nsid)
	return 0, ""
}

// TestIndexerGathersSmallBatches: with no read waiting, a lone event is indexed only after
// the indexer has waited gatherWait for more to share its transaction; a read that waits
// for it still gets it.
func TestIndexerGathersSmallBatches(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	alice := n.account("alice")
	n.sync()
	av := n.appview()
	for range 3 {
		n.post(alice, "alone")
		n.mu.Lock()
		seq := n.lastSeq
		n.mu.Unlock()
		began := time.Now()
		for av.Cursor() < seq {
			time.Sleep(100 * time.Microsecond)
		}
		if took := time.Since(began); took < gatherWait/2 {
			t.Errorf("a lone event was indexed %s after it was sequenced, before the %s gather wait", took, gatherWait)
		}
	}
	p := n.post(alice, "waited for")
	n.sync()
	var out bsky.FeedGetAuthorFeed_Output
	n.get(alice, "app.bsky.feed.getAuthorFeed", vals("actor", alice.String()), &out)
	if len(out.Feed) != 4 || out.Feed[0].Post.Uri != p.uri {
		t.Errorf("getAuthorFeed has %d posts, want 4 with %s first", len(out.Feed), p.uri)
	}
}

// TestWriterCacheFollowsIndexSize: the writer's page cache is the small one until the index
// passes bigCacheAbove, then Config.IndexCacheBytes, and none of that with the big cache
// turned off.
func TestWriterCacheFollowsIndexSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		bigBytes  int64
		above     int64
		wantCache int64
	}{
		{"small index", 64 << 20, 1 << 30, -writerCacheKiB},
		{"big index", 64 << 20, 4096, -(64 << 10)},
		{"big cache off", 0, 4096, -writerCacheKiB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.IndexCacheBytes = tc.bigBytes
			av, err := Open(context.Background(), filepath.Join(t.TempDir(), "index.sqlite"), cfg, discardLog())
			if err != nil {
				t.Fatal(err)
			}
			defer av.Close()
			av.bigCacheAbove = tc.above
			g := newGenerator(genConfig{users: 3, posts: 5, follows: 2, seed: 1})
			if err := av.apply(context.Background(), g.network()); err != nil {
				t.Fatal(err)
			}
			var cache int64
			err = av.db.Write(context.Background(), func(tx *sql.Tx) error { return tx.QueryRow("PRAGMA cache_size").Scan(&cache) })
			if err != nil {
				t.Fatal(err)
			}
			if cache != tc.wantCache {
				t.Errorf("writer cache_size = %d after a batch; want %d", cache, tc.wantCache)
			}
		})
	}
}

// TestIndexWriterSettings: the writer connection keeps the page cache, memory map and
// checkpoint threshold Open gives it.
func TestIndexWriterSettings(t *testing.T) {
	t.Parallel()
	av, err := Open(context.Background(), filepath.Join(t.TempDir(), "index.sqlite"), DefaultConfig(), discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer av.Close()
	var cache, mmap, auto, spill int64
	err = av.db.Write(context.Background(), func(tx *sql.Tx) error {
		for q, v := range map[string]*int64{"PRAGMA cache_size": &cache, "PRAGMA mmap_size": &mmap, "PRAGMA wal_autocheckpoint": &auto, "PRAGMA cache_spill": &spill} {
			if err := tx.QueryRow(q).Scan(v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// SQLite caps the map at its build's maximum (2 GiB less 64 KiB here).
	if cache != -writerCacheKiB || mmap < 1<<30 || auto != walCheckpointPages || spill != writerSpillPages {
		t.Errorf("writer cache_size %d, mmap_size %d, wal_autocheckpoint %d, cache_spill %d; want %d, about %d, %d, %d",
			cache, mmap, auto, spill, -writerCacheKiB, writerMmapBytes, walCheckpointPages, writerSpillPages)
	}
}
