//go:build unix

package sqlite

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
)

func blobMigrations() fstest.MapFS {
	return fstest.MapFS{"0001_blobs.sql": {Data: []byte("CREATE TABLE blobs (id INTEGER PRIMARY KEY, tag TEXT NOT NULL, data BLOB NOT NULL);")}}
}

func openWALFiles() int {
	n := 0
	walFiles.Range(func(any, any) bool { n++; return true })
	return n
}

// A committed transaction is in the WAL file when Write returns, though the connection
// is still open: what the wrapper holds back never outlives the commit.
func TestWALFramesReachTheFileAtCommit(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "w.sqlite")
	db := openTest(t, file, Options{Migrations: blobMigrations()})
	ctx := t.Context()
	if openWALFiles() == 0 {
		t.Fatal("no WAL file is open through the wrapper VFS")
	}
	for i := range 20 {
		marker := fmt.Sprintf("marker-%03d-%s", i, bytes.Repeat([]byte{'x'}, 40))
		err := db.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO blobs (tag, data) VALUES (?, ?)", marker, []byte("payload"))
			return err
		})
		if err != nil {
			t.Fatalf("Write = %v", err)
		}
		wal, err := os.ReadFile(file + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(wal, []byte(marker)) {
			t.Fatalf("commit %d: its row is not in the WAL file (%d bytes) after Write returned", i, len(wal))
		}
	}
}

// A transaction far bigger than the page cache and the wrapper's buffer spills to the
// log before it commits: it must read back its own pages, stay invisible to readers
// until it commits, and leave a sound file whether it commits or rolls back.
func TestWALBigTransactions(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "big.sqlite")
	db := openTest(t, file, Options{Migrations: blobMigrations()})
	ctx := t.Context()
	const rows, size = 12000, 1000 // 12 MB, three times walFlushBytes
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, size) }
	errAbort := errors.New("abort")
	fill := func(tag string, abort bool) error {
		return db.Write(ctx, func(tx *sql.Tx) error {
			// A 1 MiB cache makes the pager spill dirty pages to the log mid-transaction.
			if _, err := tx.ExecContext(ctx, "PRAGMA cache_size = -1024"); err != nil {
				return err
			}
			for i := range rows {
				if _, err := tx.ExecContext(ctx, "INSERT INTO blobs (tag, data) VALUES (?, ?)", tag, payload(i)); err != nil {
					return err
				}
			}
			var n, total int
			if err := tx.QueryRowContext(ctx, "SELECT count(*), sum(length(data)) FROM blobs WHERE tag = ?", tag).Scan(&n, &total); err != nil {
				return err
			}
			if n != rows || total != rows*size {
				return fmt.Errorf("inside the transaction: %d rows, %d bytes", n, total)
			}
			var first []byte
			if err := tx.QueryRowContext(ctx, "SELECT data FROM blobs WHERE tag = ? ORDER BY id LIMIT 1", tag).Scan(&first); err != nil {
				return err
			}
			if !bytes.Equal(first, payload(0)) {
				return errors.New("inside the transaction: first row read back wrong")
			}
			err := db.Read(ctx, func(rtx *sql.Tx) error {
				var seen int
				if err := rtx.QueryRowContext(ctx, "SELECT count(*) FROM blobs WHERE tag = ?", tag).Scan(&seen); err != nil {
					return err
				}
				if seen != 0 {
					return fmt.Errorf("a reader sees %d uncommitted rows", seen)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if abort {
				return errAbort
			}
			return nil
		})
	}
	if err := fill("rolled-back", true); !errors.Is(err, errAbort) {
		t.Fatalf("rolled-back fill = %v", err)
	}
	if err := fill("kept", false); err != nil {
		t.Fatalf("kept fill = %v", err)
	}
	check := func(db *DB) {
		t.Helper()
		err := db.Read(ctx, func(tx *sql.Tx) error {
			var ok string
			if err := tx.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
				return fmt.Errorf("integrity_check = %q, %v", ok, err)
			}
			var kept, dropped int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FILTER (WHERE tag = 'kept'), count(*) FILTER (WHERE tag = 'rolled-back') FROM blobs").Scan(&kept, &dropped); err != nil {
				return err
			}
			if kept != rows || dropped != 0 {
				return fmt.Errorf("kept %d rows (want %d), rolled back %d (want 0)", kept, rows, dropped)
			}
			var mid []byte
			if err := tx.QueryRowContext(ctx, "SELECT data FROM blobs WHERE tag = 'kept' ORDER BY id LIMIT 1 OFFSET ?", rows/2).Scan(&mid); err != nil {
				return err
			}
			if !bytes.Equal(mid, payload(rows/2)) {
				return errors.New("a committed row reads back wrong")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	check(openTest(t, file, Options{Migrations: blobMigrations()}))
}
