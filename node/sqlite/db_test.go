package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

func testMigrations() fstest.MapFS {
	return fstest.MapFS{
		"0001_items.sql":  {Data: []byte("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);")},
		"0002_owners.sql": {Data: []byte("CREATE TABLE owners (item INTEGER NOT NULL REFERENCES items(id));")},
		"README.txt":      {Data: []byte("not a migration")},
	}
}

func openTest(t *testing.T, file string, opts Options) *DB {
	t.Helper()
	db, err := Open(t.Context(), file, opts)
	if err != nil {
		t.Fatalf("Open(%s) = %v", file, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenAppliesPragmasOnEveryConnection(t *testing.T) {
	t.Parallel()
	db := openTest(t, filepath.Join(t.TempDir(), "p.sqlite"), Options{Synchronous: "full", TempInMemory: true, Migrations: testMigrations()})
	ctx := t.Context()
	check := func(name string, q func(string, any) error) {
		var mode string
		var fk, syncLevel, temp int
		if err := q("PRAGMA journal_mode", &mode); err != nil || mode != "wal" {
			t.Errorf("%s: journal_mode = %q, %v; want wal", name, mode, err)
		}
		if err := q("PRAGMA foreign_keys", &fk); err != nil || fk != 1 {
			t.Errorf("%s: foreign_keys = %d, %v; want 1", name, fk, err)
		}
		if err := q("PRAGMA synchronous", &syncLevel); err != nil || syncLevel != 2 {
			t.Errorf("%s: synchronous = %d, %v; want 2 (FULL)", name, syncLevel, err)
		}
		if err := q("PRAGMA temp_store", &temp); err != nil || temp != 2 {
			t.Errorf("%s: temp_store = %d, %v; want 2 (MEMORY)", name, temp, err)
		}
	}
	db.Write(ctx, func(tx *sql.Tx) error {
		check("writer", func(q string, v any) error { return tx.QueryRowContext(ctx, q).Scan(v) })
		return nil
	})
	db.Read(ctx, func(tx *sql.Tx) error {
		check("reader", func(q string, v any) error { return tx.QueryRowContext(ctx, q).Scan(v) })
		return nil
	})
}

func TestMigrationsRunOnceAndTrackVersion(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "m.sqlite")
	db := openTest(t, file, Options{Migrations: testMigrations()})
	ctx := t.Context()
	if err := db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES ('a')")
		return err
	}); err != nil {
		t.Fatalf("Write insert = %v", err)
	}
	db.Close()

	// Reopening must not re-run 0001 (it would fail: table exists) and must keep the data.
	db = openTest(t, file, Options{Migrations: testMigrations()})
	var n, version int
	db.Read(ctx, func(tx *sql.Tx) error {
		tx.QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&n)
		return tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version)
	})
	if n != 1 || version != 2 {
		t.Errorf("after reopen: items = %d, user_version = %d; want 1, 2", n, version)
	}
	db.Close()

	// A binary that knows fewer migrations than the file has must refuse it.
	older := fstest.MapFS{"0001_items.sql": testMigrations()["0001_items.sql"]}
	if _, err := Open(ctx, file, Options{Migrations: older}); !errors.Is(err, ErrTooNew) {
		t.Errorf("Open with older migrations = %v, want ErrTooNew", err)
	}
}

func TestBadMigrationLeavesFileUntouched(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "bad.sqlite")
	ms := testMigrations()
	ms["0003_broken.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE x (; nonsense")}
	if _, err := Open(t.Context(), file, Options{Migrations: ms}); err == nil {
		t.Fatal("Open with a broken migration succeeded")
	}
	db := openTest(t, file, Options{})
	var tables, version int
	db.Read(t.Context(), func(tx *sql.Tx) error {
		tx.QueryRowContext(t.Context(), "SELECT count(*) FROM sqlite_master WHERE type = 'table'").Scan(&tables)
		return tx.QueryRowContext(t.Context(), "PRAGMA user_version").Scan(&version)
	})
	if tables != 0 || version != 0 {
		t.Errorf("after failed migration: %d tables, user_version %d; want 0, 0", tables, version)
	}
}

func TestMigrationNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		fs   fstest.MapFS
	}{
		{"gap", fstest.MapFS{"0001_a.sql": {}, "0003_c.sql": {}}},
		{"no number", fstest.MapFS{"first.sql": {}}},
		{"zero", fstest.MapFS{"0000_a.sql": {}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Open(t.Context(), filepath.Join(t.TempDir(), "x.sqlite"), Options{Migrations: tt.fs}); err == nil {
				t.Errorf("Open(%v) succeeded, want a migration naming error", tt.fs)
			}
		})
	}
}

func TestErrorsAreMapped(t *testing.T) {
	t.Parallel()
	db := openTest(t, filepath.Join(t.TempDir(), "e.sqlite"), Options{Migrations: testMigrations()})
	ctx := t.Context()
	insert := func(name string) error {
		return db.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES (?)", name)
			return err
		})
	}
	if err := insert("dup"); err != nil {
		t.Fatalf("first insert = %v", err)
	}
	if err := insert("dup"); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate insert = %v, want ErrConflict", err)
	}
	// Foreign keys are on, so a dangling reference fails and is not a conflict.
	err := db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO owners (item) VALUES (999)")
		return err
	})
	if err == nil || errors.Is(err, ErrConflict) {
		t.Errorf("dangling foreign key insert = %v, want a non-conflict error", err)
	}
	// Readers are query-only: a write through Read must fail.
	if err := db.Read(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES ('r')")
		return err
	}); err == nil {
		t.Error("write inside Read succeeded")
	}
}

func TestWriteRollsBackOnError(t *testing.T) {
	t.Parallel()
	db := openTest(t, filepath.Join(t.TempDir(), "r.sqlite"), Options{Migrations: testMigrations()})
	ctx := t.Context()
	boom := errors.New("boom")
	err := db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES ('half')"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write = %v, want boom", err)
	}
	var n int
	db.Read(ctx, func(tx *sql.Tx) error { return tx.QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&n) })
	if n != 0 {
		t.Errorf("rows after rolled-back write = %d, want 0", n)
	}
}

func TestConcurrentWritersAndReaders(t *testing.T) {
	t.Parallel()
	db := openTest(t, filepath.Join(t.TempDir(), "c.sqlite"), Options{Migrations: testMigrations()})
	ctx := context.Background()
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				errs <- db.Write(ctx, func(tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES (?)", string(rune('a'+w))+string(rune('A'+i)))
					return err
				})
				errs <- db.Read(ctx, func(tx *sql.Tx) error {
					var n int
					return tx.QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&n)
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Write/Read = %v", err)
		}
	}
	var n int
	db.Read(ctx, func(tx *sql.Tx) error { return tx.QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&n) })
	if n != writers*each {
		t.Errorf("rows = %d, want %d", n, writers*each)
	}
}

func TestOpenRejectsBadSynchronous(t *testing.T) {
	t.Parallel()
	if _, err := Open(t.Context(), filepath.Join(t.TempDir(), "s.sqlite"), Options{Synchronous: "sometimes"}); err == nil {
		t.Error("Open with synchronous=sometimes succeeded")
	}
}

func BenchmarkOpenFirstQuery(b *testing.B) {
	file := filepath.Join(b.TempDir(), "b.sqlite")
	db, err := Open(b.Context(), file, Options{Migrations: testMigrations()})
	if err != nil {
		b.Fatal(err)
	}
	db.Close()
	b.ReportAllocs()
	for b.Loop() {
		db, err := Open(b.Context(), file, Options{Migrations: testMigrations()})
		if err != nil {
			b.Fatal(err)
		}
		var n int
		if err := db.Read(b.Context(), func(tx *sql.Tx) error {
			return tx.QueryRowContext(b.Context(), "SELECT count(*) FROM items").Scan(&n)
		}); err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
}

func TestSharedReaderStmtAndPersistentWAL(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	file := filepath.Join(t.TempDir(), "s.sqlite")
	db, err := Open(ctx, file, Options{Readers: SharedReader, PersistWAL: true, Migrations: testMigrations()})
	if err != nil {
		t.Fatalf("Open(%s) = %v", file, err)
	}
	const insert = "INSERT INTO items (name) VALUES (?)"
	for _, name := range []string{"a", "b", "c"} {
		// The first two Writes prepare insert for their transaction only; the third
		// reuses the statement prepared for good once the second had ended.
		err := db.Write(ctx, func(tx *sql.Tx) error {
			st, err := db.Stmt(ctx, tx, insert)
			if err != nil {
				return err
			}
			_, err = st.ExecContext(ctx, name)
			return err
		})
		if err != nil {
			t.Fatalf("Write(insert %s) = %v", name, err)
		}
	}
	if n := len(db.stmts); n != 1 {
		t.Errorf("len(stmts) = %d, want 1 cached statement", n)
	}
	var count int
	err = db.Read(ctx, func(tx *sql.Tx) error {
		st, err := db.Stmt(ctx, tx, "SELECT count(*) FROM items")
		if err != nil {
			return err
		}
		return st.QueryRowContext(ctx).Scan(&count)
	})
	if err != nil || count != 3 {
		t.Errorf("Read(count) = %d, %v; want 3", count, err)
	}
	if err := db.CheckpointPassive(ctx); err != nil {
		t.Errorf("CheckpointPassive = %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	// The WAL stays, emptied by the closing checkpoint, so the next open finds it.
	fi, err := os.Stat(file + "-wal")
	if err != nil || fi.Size() != 0 {
		t.Errorf("WAL after Close: %v, %v; want an empty file", fi, err)
	}
	db = openTest(t, file, Options{Readers: SharedReader, PersistWAL: true, Migrations: testMigrations()})
	err = db.Read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&count)
	})
	if err != nil || count != 3 {
		t.Errorf("Read(count) after reopen = %d, %v; want 3", count, err)
	}
}

func TestQueryRow(t *testing.T) {
	t.Parallel()
	for _, readers := range []int{0, SharedReader} {
		db := openTest(t, filepath.Join(t.TempDir(), "q.sqlite"), Options{Readers: readers, Migrations: testMigrations()})
		ctx := t.Context()
		db.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO items (name) VALUES ('a'), ('b')")
			return err
		})
		const q = "SELECT name FROM items WHERE id = ?"
		for range 3 { // the statement is prepared once and reused
			var name string
			if err := db.QueryRow(ctx, q, []any{2}, &name); err != nil || name != "b" {
				t.Fatalf("QueryRow(id 2) = %q, %v; want b", name, err)
			}
		}
		var name string
		if err := db.QueryRow(ctx, q, []any{99}, &name); !errors.Is(err, sql.ErrNoRows) {
			t.Errorf("QueryRow(missing) = %v, want sql.ErrNoRows", err)
		}
		if err := db.QueryRow(ctx, "SELECT nonsense FROM", nil, &name); err == nil {
			t.Error("QueryRow(bad SQL) succeeded")
		}
		db.Close()
		if err := db.QueryRow(ctx, q, []any{1}, &name); err == nil {
			t.Error("QueryRow after Close succeeded")
		}
	}
}

func TestMustExist(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name string
		file string
		opts Options
	}{
		{"missing file", filepath.Join(dir, "none.sqlite"), Options{MustExist: true, Migrations: testMigrations()}},
		{"missing folder", filepath.Join(dir, "no", "none.sqlite"), Options{MustExist: true}},
		{"persistent WAL", filepath.Join(dir, "none2.sqlite"), Options{MustExist: true, PersistWAL: true, Readers: SharedReader}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if db, err := Open(t.Context(), tt.file, tt.opts); !errors.Is(err, fs.ErrNotExist) {
				if err == nil {
					db.Close()
				}
				t.Fatalf("Open(%s, MustExist) = %v, want fs.ErrNotExist", tt.file, err)
			}
			if _, err := os.Stat(tt.file); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Open(%s, MustExist) left a file: stat = %v", tt.file, err)
			}
		})
	}
	// An existing file opens, migrated as usual.
	file := filepath.Join(dir, "there.sqlite")
	openTest(t, file, Options{Migrations: testMigrations()}).Close()
	db := openTest(t, file, Options{MustExist: true, Migrations: testMigrations()})
	if err := db.Write(t.Context(), func(tx *sql.Tx) error {
		_, err := tx.ExecContext(t.Context(), "INSERT INTO items (name) VALUES ('x')")
		return err
	}); err != nil {
		t.Errorf("Write after Open(MustExist) = %v", err)
	}
}

// TestFileBelongsToThisProcess checks the unix-excl VFS is in use: the WAL index lives in memory
// (no -shm file appears, even with a writer and a reader both in a transaction), and the
// connections of one process still see each other's commits.
func TestFileBelongsToThisProcess(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix-excl is a Unix VFS")
	}
	t.Parallel()
	file := filepath.Join(t.TempDir(), "x.sqlite")
	db := openTest(t, file, Options{Migrations: testMigrations()})
	ctx := t.Context()
	if err := db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('a')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := db.Read(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 1 {
			t.Errorf("reader sees %d items (%v), want 1", n, err)
		}
		return db.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('b')`)
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file + "-wal"); err != nil {
		t.Errorf("no WAL file: %v", err)
	}
	if _, err := os.Stat(file + "-shm"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s-shm = %v, want it absent: the WAL index should be in memory", file, err)
	}
	if err := db.CheckpointPassive(ctx); err != nil {
		t.Errorf("checkpoint from the reader pool: %v", err)
	}
}

func TestReadStmt(t *testing.T) {
	t.Parallel()
	for _, readers := range []int{2, SharedReader} {
		db := openTest(t, filepath.Join(t.TempDir(), "r.sqlite"), Options{Readers: readers, Migrations: testMigrations()})
		ctx := t.Context()
		if err := db.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES ('a'), ('b')`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		const q = `SELECT count(*) FROM items WHERE name <> ?`
		for i := range 3 {
			err := db.Read(ctx, func(tx *sql.Tx) error {
				st, err := db.ReadStmt(ctx, tx, q)
				if err != nil {
					return err
				}
				var n int
				if err := st.QueryRowContext(ctx, "a").Scan(&n); err != nil || n != 1 {
					t.Errorf("readers %d, round %d: count = %d, %v; want 1", readers, i, n, err)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("readers %d: %v", readers, err)
			}
		}
		db.stmtMu.Lock()
		kept := len(db.readStmts)
		db.stmtMu.Unlock()
		if want := map[bool]int{true: 0, false: 1}[readers == SharedReader]; kept != want {
			t.Errorf("readers %d: %d statements kept, want %d", readers, kept, want)
		}
	}
}

// TestRunCheckpoints: while RunCheckpoints runs, the WAL reaches the database file in the
// background, and the writer's own checkpoint is only a far backstop.
func TestRunCheckpoints(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "x.sqlite")
	db := openTest(t, file, Options{Migrations: testMigrations()})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- db.RunCheckpoints(ctx, 10*time.Millisecond) }()

	autoCheckpoint := func() int {
		var n int
		if err := db.Write(t.Context(), func(tx *sql.Tx) error {
			return tx.QueryRowContext(t.Context(), "PRAGMA wal_autocheckpoint").Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for deadline := time.Now().Add(10 * time.Second); autoCheckpoint() != backstopCheckpointPages; {
		if time.Now().After(deadline) {
			t.Fatalf("wal_autocheckpoint = %d, want %d while RunCheckpoints runs", autoCheckpoint(), backstopCheckpointPages)
		}
		time.Sleep(time.Millisecond)
	}

	before, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := db.Write(t.Context(), func(tx *sql.Tx) error {
			_, err := tx.ExecContext(t.Context(), `INSERT INTO items (name) VALUES (?)`, fmt.Sprintf("%04d%01000d", i, 0))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The rows are in the WAL; a background checkpoint copies them into the file.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() >= before.Size()+100*1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("database file is %d bytes (%d before 100 KB of rows): no background checkpoint", st.Size(), before.Size())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunCheckpoints = %v, want nil when ctx ends", err)
	}
}

// TestCheckpointTurnsLeaveTheBackstopToTheWriter: once a checkpoint finds the WAL past the
// backstop's threshold, the next backstopSkips turns with new commits do not checkpoint,
// so the writer's own checkpoint at that threshold does not find one running.
func TestCheckpointTurnsLeaveTheBackstopToTheWriter(t *testing.T) {
	t.Parallel()
	db := openTest(t, filepath.Join(t.TempDir(), "t.sqlite"), Options{Migrations: testMigrations()})
	ctx := t.Context()
	insert := func(i int) {
		t.Helper()
		if err := db.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO items (name) VALUES (?)`, fmt.Sprintf("%04d%03000d", i, 0))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	turns := &checkpointTurns{db: db, backstop: 60}
	var ran []bool
	for i := range 6 {
		insert(i)
		if i == 0 {
			for j := range 100 { // past the backstop
				insert(100 + j)
			}
		}
		did, err := turns.turn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ran = append(ran, did)
	}
	did, _ := turns.turn(ctx)
	ran = append(ran, did) // nothing new committed
	// Skipped turns leave their commits to the next turn that runs; the WAL is small again
	// by then, as those after it are.
	want := []bool{true, false, false, true, true, true, false}
	if !slices.Equal(ran, want) {
		t.Errorf("turns checkpointed %v, want %v", ran, want)
	}
}
