package repo

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/sqlite"
)

// openTestStore opens a Store in a fresh temporary folder, closed when the test ends.
func openTestStore(t testing.TB, cfg StoreConfig) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(t.Context(), dir, cfg, nil)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
		s.Close()
	})
	return s, dir
}

// actorDID returns a distinct valid did:plc for n.
func actorDID(n int) syntax.DID {
	return syntax.DID(fmt.Sprintf("did:plc:test%020d", n))
}

// createTestRepo creates did's repo with a fresh K-256 key and returns the key.
func createTestRepo(t testing.TB, s *Store, did syntax.DID) atcrypto.PrivateKeyExportable {
	t.Helper()
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(t.Context(), did, key); err != nil {
		t.Fatalf("Create(%s) = %v", did, err)
	}
	return key
}

// postRecord returns an app.bsky.feed.post record with text.
func postRecord(t testing.TB, text string) *Record {
	t.Helper()
	return jsonRecord(t, fmt.Sprintf(`{"$type":"app.bsky.feed.post","text":%q,"createdAt":"2024-01-02T03:04:05.000Z"}`, text))
}

// jsonRecord parses a record from JSON.
func jsonRecord(t testing.TB, raw string) *Record {
	t.Helper()
	rec, err := RecordFromJSON([]byte(raw))
	if err != nil {
		t.Fatalf("RecordFromJSON(%s) = %v", raw, err)
	}
	return rec
}

// create is a one-write ApplyWrites.
func createPost(t testing.TB, s *Store, did syntax.DID, rkey, text string) *CommitEvent {
	t.Helper()
	ev, err := s.ApplyWrites(t.Context(), did, []Write{{
		Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: syntax.RecordKey(rkey), Record: postRecord(t, text),
	}}, WriteOpts{})
	if err != nil {
		t.Fatalf("ApplyWrites(create %s) = %v", rkey, err)
	}
	return ev
}

func TestCreateMakesGenesisCommit(t *testing.T) {
	t.Parallel()
	s, dir := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(1)
	key, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := s.Create(ctx, did, key)
	if err != nil {
		t.Fatalf("Create(%s) = %v", did, err)
	}
	if ev.Since != "" || ev.PrevData.Defined() || len(ev.Ops) != 0 {
		t.Errorf("genesis event = since %q, prevData %s, %d ops; want none", ev.Since, ev.PrevData, len(ev.Ops))
	}
	verifyEvent(t, ev, key)

	commit, rev, data, err := s.Head(ctx, did)
	if err != nil {
		t.Fatalf("Head(%s) = %v", did, err)
	}
	if commit != ev.Commit || rev != ev.Rev || data != ev.Data {
		t.Errorf("Head(%s) = %s %s %s, want the genesis %s %s %s", did, commit, rev, data, ev.Commit, ev.Rev, ev.Data)
	}
	if _, err := s.Create(ctx, did, key); !errors.Is(err, ErrRepoExists) {
		t.Errorf("second Create(%s) = %v, want ErrRepoExists", did, err)
	}
	got, err := s.SigningKey(ctx, did)
	if err != nil {
		t.Fatalf("SigningKey(%s) = %v", did, err)
	}
	if !got.Equal(key) {
		t.Errorf("SigningKey(%s) is not the key given to Create", did)
	}
	fi, err := os.Stat(filepath.Join(dir, "actors", actorDir(did), "key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	// Nothing temporary is left beside the actor folder.
	entries, err := os.ReadDir(filepath.Join(dir, "actors", filepath.Dir(actorDir(did))))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("shard folder holds %d entries, want only the actor's", len(entries))
	}
}

func TestCreateDefaultsToK256(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	did := actorDID(2)
	if _, err := s.Create(t.Context(), did, nil); err != nil {
		t.Fatalf("Create(%s, nil) = %v", did, err)
	}
	key, err := s.SigningKey(t.Context(), did)
	if err != nil {
		t.Fatalf("SigningKey = %v", err)
	}
	if _, ok := key.(*atcrypto.PrivateKeyK256); !ok {
		t.Errorf("default key is %T, want *atcrypto.PrivateKeyK256", key)
	}
}

func TestMissingRepo(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(3)
	ok, err := s.Exists(ctx, did)
	if err != nil || ok {
		t.Errorf("Exists(%s) = %v, %v; want false", did, ok, err)
	}
	calls := []struct {
		name string
		fn   func() error
	}{
		{"Head", func() error { _, _, _, err := s.Head(ctx, did); return err }},
		{"GetRecord", func() error { _, _, err := s.GetRecord(ctx, did, "app.bsky.feed.post", "x"); return err }},
		{"ApplyWrites", func() error {
			_, err := s.ApplyWrites(ctx, did, []Write{{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: "x"}}, WriteOpts{})
			return err
		}},
		{"ExportCAR", func() error { return s.ExportCAR(ctx, did, "", io.Discard) }},
		{"Delete", func() error { return s.Delete(ctx, did) }},
	}
	for _, c := range calls {
		if err := c.fn(); !errors.Is(err, ErrRepoNotFound) {
			t.Errorf("%s(%s) = %v, want ErrRepoNotFound", c.name, did, err)
		}
	}
	// A failed open must not have created anything.
	if ok, _ := s.Exists(ctx, did); ok {
		t.Errorf("Exists(%s) after failed calls = true", did)
	}
}

func TestDeleteRemovesFolder(t *testing.T) {
	t.Parallel()
	s, dir := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(4)
	createTestRepo(t, s, did)
	createPost(t, s, did, "3k2aaaaaaaaa2", "hello") // leaves the actor open in the LRU
	if err := s.Delete(ctx, did); err != nil {
		t.Fatalf("Delete(%s) = %v", did, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "actors", actorDir(did))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("actor folder after Delete: stat = %v, want not exist", err)
	}
	if ok, _ := s.Exists(ctx, did); ok {
		t.Errorf("Exists(%s) after Delete = true", did)
	}
	if _, _, _, err := s.Head(ctx, did); !errors.Is(err, ErrRepoNotFound) {
		t.Errorf("Head after Delete = %v, want ErrRepoNotFound", err)
	}
	// The DID can start again.
	createTestRepo(t, s, did)
}

func TestReopenAfterClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := t.Context()
	did := actorDID(5)
	s, err := Open(ctx, dir, StoreConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	createTestRepo(t, s, did)
	var last *CommitEvent
	for i := range 20 {
		last = createPost(t, s, did, fmt.Sprintf("3k2aaaaaaa%03d", i), fmt.Sprint("post ", i))
	}
	if err := s.PutPreferences(ctx, did, []byte(`[{"$type":"x"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	s2, err := Open(ctx, dir, StoreConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	commit, rev, _, err := s2.Head(ctx, did)
	if err != nil || commit != last.Commit || rev != last.Rev {
		t.Errorf("Head after reopen = %s %s %v, want %s %s", commit, rev, err, last.Commit, last.Rev)
	}
	recs, _, err := s2.ListRecords(ctx, did, "app.bsky.feed.post", "", 100, false)
	if err != nil || len(recs) != 20 {
		t.Errorf("ListRecords after reopen = %d records, %v; want 20", len(recs), err)
	}
	prefs, err := s2.Preferences(ctx, did)
	if err != nil || string(prefs) != `[{"$type":"x"}]` {
		t.Errorf("Preferences after reopen = %s, %v", prefs, err)
	}
	// Writing continues the chain.
	ev := createPost(t, s2, did, "3k2aaaaaaazzz", "after")
	if ev.Since != last.Rev || ev.PrevData != last.Data {
		t.Errorf("first commit after reopen: since %s prevData %s, want %s %s", ev.Since, ev.PrevData, last.Rev, last.Data)
	}
}

// TestCrashKeepsCommittedWrites copies an actor's files while its handle is still open,
// as a kill -9 would leave them (database plus un-checkpointed WAL), and opens the copy.
func TestCrashKeepsCommittedWrites(t *testing.T) {
	t.Parallel()
	s, dir := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(6)
	createTestRepo(t, s, did)
	var last *CommitEvent
	for i := range 10 {
		last = createPost(t, s, did, fmt.Sprintf("3k2aaaaaaa%03d", i), "x")
	}
	src := filepath.Join(dir, "actors", actorDir(did))
	if _, err := os.Stat(filepath.Join(src, "repo.sqlite-wal")); err != nil {
		t.Fatalf("expected a WAL beside the open file: %v", err)
	}
	crashDir := t.TempDir()
	dst := filepath.Join(crashDir, "actors", actorDir(did))
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"key", "repo.sqlite", "repo.sqlite-wal"} {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := Open(ctx, crashDir, StoreConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	commit, _, _, err := s2.Head(ctx, did)
	if err != nil || commit != last.Commit {
		t.Errorf("Head after crash = %s, %v; want %s", commit, err, last.Commit)
	}
	// The crashed session's new nodes are still in the fresh table (migration 0004): the
	// next commit reads them and the next collection moves them.
	if ev := createPost(t, s2, did, "3k2aaaaaaazzz", "after"); ev.Since != last.Rev || ev.PrevData != last.Data {
		t.Errorf("first commit after crash: since %s prevData %s, want %s %s", ev.Since, ev.PrevData, last.Rev, last.Data)
	}
	checkReachable(t, s2, did)
}

// TestStoreLRUBoundsOpenFiles writes to many actors from many goroutines through a store
// that may keep only a few files open.
func TestStoreLRUBoundsOpenFiles(t *testing.T) {
	t.Parallel()
	const actors, maxOpen, workers = 12, 3, 8
	s, _ := openTestStore(t, StoreConfig{MaxOpen: maxOpen})
	for i := range actors {
		createTestRepo(t, s, actorDID(100+i))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[syntax.DID]int{}
	for w := range workers {
		wg.Go(func() {
			for i := range 15 {
				did := actorDID(100 + (w*7+i*5)%actors)
				_, err := s.ApplyWrites(t.Context(), did, []Write{{
					Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(t, fmt.Sprint(w, i)),
				}}, WriteOpts{})
				if err != nil {
					t.Errorf("ApplyWrites(%s) = %v", did, err)
					return
				}
				mu.Lock()
				counts[did]++
				mu.Unlock()
				// Store.Run closes evicted files in the background, closeQueue at most.
				if n := s.handles.openCount(); n > maxOpen+closeQueue {
					t.Errorf("%d actor files open or closing, bound %d open and %d closing", n, maxOpen, closeQueue)
				}
			}
		})
	}
	wg.Wait()
	for did, n := range counts {
		recs, _, err := s.ListRecords(t.Context(), did, "app.bsky.feed.post", "", 100, false)
		if err != nil || len(recs) != n {
			t.Errorf("ListRecords(%s) = %d, %v; want %d", did, len(recs), err, n)
		}
	}
}

// checkReachable asserts that did's blocks are exactly the head commit, its tree's nodes
// and its records' values: nothing leaked, nothing missing.
func checkReachable(t testing.TB, s *Store, did syntax.DID) {
	t.Helper()
	ctx := t.Context()
	var buf bytes.Buffer
	if err := s.ExportCAR(ctx, did, "", &buf); err != nil {
		t.Fatalf("ExportCAR(%s) = %v", did, err)
	}
	car, err := ReadCAR(&buf, DefaultCARLimits())
	if err != nil {
		t.Fatalf("ReadCAR(export) = %v", err)
	}
	want := map[cid.Cid]bool{}
	for _, b := range car.Blocks {
		want[b.CID] = true
	}
	got := map[cid.Cid]bool{}
	err = s.withActor(ctx, did, func(a *actor) error {
		// Replaced nodes stay until a collection (migration 0003); after one, nothing
		// unreachable may be left.
		a.mu.Lock()
		a.garbage++ // collect whatever an earlier session listed, too
		err := a.collectGarbage(ctx)
		a.mu.Unlock()
		if err != nil {
			return err
		}
		return a.read(ctx, func(tx *sql.Tx) error {
			// The head commit is kept in the root row (migration 0002).
			rows, err := tx.QueryContext(ctx, "SELECT cid FROM blocks UNION ALL SELECT cid FROM fresh UNION ALL SELECT commit_cid FROM root")
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var raw []byte
				if err := rows.Scan(&raw); err != nil {
					return err
				}
				c, err := cid.Cast(raw)
				if err != nil {
					return err
				}
				got[c] = true
			}
			return rows.Err()
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for c := range got {
		if !want[c] {
			t.Errorf("block %s is stored but unreachable", c)
		}
	}
	for c := range want {
		if !got[c] {
			t.Errorf("block %s is reachable but not stored", c)
		}
	}
}

func TestNoteCommitRequestsCheckpoints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		queue     int
		commits   int
		wantQueue int
		wantSelf  int
	}{
		{"served by Run", 8, 3 * checkpointEvery, 3, 0},
		{"no Run: the writer checkpoints itself", 0, 2 * checkpointInline, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := &actor{did: actorDID(60), store: &Store{checkpoints: make(chan syntax.DID, tt.queue)}}
			self := 0
			for range tt.commits {
				if a.noteCommit(1) {
					self++
				}
			}
			if len(a.store.checkpoints) != tt.wantQueue || self != tt.wantSelf {
				t.Errorf("after %d commits: %d queued, %d inline; want %d, %d", tt.commits, len(a.store.checkpoints), self, tt.wantQueue, tt.wantSelf)
			}
		})
	}
}

// TestCheckpointKeepsWALSmall writes enough commits through a store whose Run does not
// keep up that the writer must checkpoint itself, and checks the WAL was folded back.
func TestCheckpointKeepsWALSmall(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(t.Context(), dir, StoreConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	did := actorDID(61)
	createTestRepo(t, s, did)
	// A Run that is not draining: the queue is full.
	for len(s.checkpoints) < cap(s.checkpoints) {
		s.checkpoints <- actorDID(62)
	}
	for i := range checkpointInline + 10 {
		createPost(t, s, did, fmt.Sprintf("3k2aaaa%06d", i), "x")
	}
	var frames int
	err = s.withActor(t.Context(), did, func(a *actor) error {
		return a.read(t.Context(), func(tx *sql.Tx) error {
			var busy, done int
			return tx.QueryRowContext(t.Context(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &done)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each commit writes at least 3 pages (records, blocks, root); without the inline
	// checkpoint the WAL would hold them all.
	if frames >= 3*checkpointInline {
		t.Errorf("WAL holds %d frames after %d commits: no checkpoint ran", frames, checkpointInline+10)
	}
}

// TestMigrationMovesCommitToRoot turns a repo file back into the version 1 layout (head
// commit in the blocks table) and checks that migration 0002 moves the commit into the
// root row without losing or leaking a block.
func TestMigrationMovesCommitToRoot(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, dir := openTestStore(t, StoreConfig{})
	did := actorDID(77)
	createTestRepo(t, s, did)
	post := []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(t, "before")}}
	if _, err := s.ApplyWrites(ctx, did, post, WriteOpts{}); err != nil {
		t.Fatalf("ApplyWrites = %v", err)
	}
	commit, _, block, err := s.HeadBlock(ctx, did)
	if err != nil {
		t.Fatalf("HeadBlock = %v", err)
	}
	err = s.exclusive(ctx, did, func() error { // closes the file
		db, err := sqlite.Open(ctx, filepath.Join(dir, actorsDir, actorDir(did), repoFileName), s.sqliteOptions())
		if err != nil {
			return err
		}
		defer db.Close()
		return db.Write(ctx, func(tx *sql.Tx) error {
			for _, q := range []string{
				// The version 1 blocks table (migration 0003 rebuilds it).
				"CREATE TABLE blocks_v1 (cid BLOB NOT NULL PRIMARY KEY, rev INTEGER NOT NULL, refs INTEGER NOT NULL, data BLOB NOT NULL) WITHOUT ROWID",
				"INSERT INTO blocks_v1 SELECT cid, rev, refs, data FROM blocks",
				"DROP TABLE blocks",
				"ALTER TABLE blocks_v1 RENAME TO blocks",
				"DROP TABLE garbage",
				"DROP TABLE fresh",
				"INSERT INTO blocks (cid, rev, refs, data) SELECT commit_cid, 0, 0, commit_block FROM root",
				"ALTER TABLE root DROP COLUMN commit_block",
				"PRAGMA user_version = 1",
			} {
				if _, err := tx.ExecContext(ctx, q); err != nil {
					return fmt.Errorf("%s: %w", q, err)
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("rewrite as version 1: %v", err)
	}

	gotCommit, _, gotBlock, err := s.HeadBlock(ctx, did)
	if err != nil || gotCommit != commit || !bytes.Equal(gotBlock, block) {
		t.Fatalf("HeadBlock after migration = %s, %d bytes, %v; want %s, %d bytes", gotCommit, len(gotBlock), err, commit, len(block))
	}
	checkReachable(t, s, did)
	post[0].Record = postRecord(t, "after")
	if _, err := s.ApplyWrites(ctx, did, post[:1], WriteOpts{}); err != nil {
		t.Fatalf("ApplyWrites after migration = %v", err)
	}
	checkReachable(t, s, did)
}
