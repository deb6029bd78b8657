package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sqlite "modernc.org/sqlite" // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Synchronous levels accepted by Options.Synchronous, as SQLite names them.
const (
	SyncOff    = "OFF"
	SyncNormal = "NORMAL"
	SyncFull   = "FULL"
	SyncExtra  = "EXTRA"
)

// defaultReaders is enough parallel readers for two cores; more only adds open files.
const defaultReaders = 4

// persistWALLimit is the size a persistent WAL file is cut back to after a checkpoint
// resets it: big enough that a busy file does not shrink and regrow it every time.
const persistWALLimit = 8 << 20

// backstopSkips is how many of its turns RunCheckpoints leaves out once the WAL is past
// the backstop's threshold, so that the writer's own checkpoint does not find it busy
// (see checkpointTurns.turn).
const backstopSkips = 2

// backstopCheckpointPages is the writer's automatic checkpoint threshold in WAL pages
// while RunCheckpoints runs, at least: 64 MiB, seconds of a busy file's commits.
const backstopCheckpointPages = 16384

// defaultBusyTimeout covers a checkpoint or another process's backup holding the lock.
const defaultBusyTimeout = 5 * time.Second

// SharedReader is the Options.Readers value that runs reads on the writer connection.
const SharedReader = -1

// Options says how to open a database file. The zero value is valid: NORMAL durability,
// four readers, no migrations.
type Options struct {
	// Synchronous is SQLite's synchronous pragma: OFF, NORMAL (default) or FULL/EXTRA.
	// With WAL, NORMAL loses at most the last transactions on power loss, never on a crash.
	Synchronous string
	// Readers is the size of the read-only connection pool (default 4). SharedReader (-1)
	// means no pool: reads run on the writer connection, one at a time and never beside a
	// write. That suits small files with rarely more than one user at a time (an account's
	// repo), where a second connection costs an open, a schema read and a page cache.
	Readers int
	// PersistWAL keeps the -wal file when the last connection closes
	// (SQLITE_FCNTL_PERSIST_WAL), so a file that is closed and reopened often (an LRU of
	// repos) does not delete and create it each time. The close still checkpoints.
	PersistWAL bool
	// BusyTimeout is how long a statement waits for a lock held by another connection.
	BusyTimeout time.Duration
	// CacheKiB is each connection's page cache in KiB (0: SQLite's default of 2 MiB). Pages
	// are cached as they are read, so a small file never uses its whole budget.
	CacheKiB int
	// TempInMemory keeps temporary tables, sorts and savepoint journals in memory
	// (temp_store=MEMORY). Otherwise a savepoint whose changes pass 64 KiB journals them
	// to a temporary file, created and deleted each time. It suits a file whose
	// transactions and sorts are small.
	TempInMemory bool
	// Migrations holds files named NNNN_what.sql at its root, applied in order once each.
	Migrations fs.FS
	// MustExist makes Open fail with an error wrapping fs.ErrNotExist when the file is
	// missing, instead of creating it. SQLite's own open finds that out, which saves a
	// caller that opens many files (an LRU of repos) a stat of each.
	MustExist bool
}

// DB is one SQLite file with a single writer connection and a pool of readers.
type DB struct {
	path    string
	writer  *sql.DB
	readers *sql.DB
	shared  bool // SharedReader: reads use writer, readers only checkpoints

	// stmts caches statements prepared on the writer connection for Stmt; they live as
	// long as the DB, because the writer connection does.
	stmtMu  sync.Mutex
	stmts   map[string]*sql.Stmt // nil once Close has begun
	seen    map[string]bool      // queries Stmt prepared per transaction once
	pending []string             // and those it did twice, to prepare for good
	// readStmts caches QueryRow's statements, prepared on the read pool.
	readStmts map[string]*sql.Stmt // nil once Close has begun

	// commits counts Write's commits, so RunCheckpoints can tell an idle file and callers
	// can tell a copy that is still current (Commits).
	commits atomic.Uint64
	closed  atomic.Bool // Close has begun
}

// Open opens (creating if needed) the SQLite file at path, applies our pragmas to every
// connection and runs pending migrations. It returns ErrTooNew when the file's schema is
// newer than the migrations this binary carries.
func Open(ctx context.Context, filePath string, opts Options) (*DB, error) {
	sync := strings.ToUpper(opts.Synchronous)
	if sync == "" {
		sync = SyncNormal
	}
	switch sync {
	case SyncOff, SyncNormal, SyncFull, SyncExtra:
	default:
		return nil, fmt.Errorf("open %s: synchronous must be OFF, NORMAL, FULL or EXTRA, not %q", filePath, opts.Synchronous)
	}
	readers := opts.Readers
	if readers == 0 || readers < SharedReader {
		readers = defaultReaders
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = defaultBusyTimeout
	}
	migrations, err := loadMigrations(opts.Migrations)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filePath, err)
	}

	// busy_timeout goes first so that the journal_mode switch itself waits for a lock.
	pragmas := url.Values{}
	pragmas.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	pragmas.Add("_pragma", "journal_mode(WAL)")
	pragmas.Add("_pragma", "synchronous("+sync+")")
	pragmas.Add("_pragma", "foreign_keys(ON)")
	if opts.CacheKiB > 0 {
		pragmas.Add("_pragma", fmt.Sprintf("cache_size(-%d)", opts.CacheKiB))
	}
	if opts.TempInMemory {
		pragmas.Add("_pragma", "temp_store(MEMORY)")
	}
	if opts.PersistWAL {
		// A persistent WAL is truncated on close only under a size limit; left whole, its
		// stale frames would be read back by the next open's WAL recovery. The limit also
		// bounds the file after a checkpoint resets it.
		pragmas.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", persistWALLimit))
	}
	vfs, err := vfsName()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filePath, err)
	}
	if vfs != "" {
		pragmas.Set("vfs", vfs)
	}
	// The path is a URI path: escape what SQLite would decode (did:web DIDs contain "%3A").
	uriPath := strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23").Replace(filePath)
	if opts.MustExist {
		// mode=rw is SQLite's URI parameter for an open without SQLITE_OPEN_CREATE.
		pragmas.Set("mode", "rw")
	}
	writerDSN := "file:" + uriPath + "?" + pragmas.Encode() + "&_txlock=immediate"
	pragmas.Add("_pragma", "query_only(1)")
	readerDSN := "file:" + uriPath + "?" + pragmas.Encode()

	w, err := sql.Open("sqlite", writerDSN)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filePath, err)
	}
	// One writer: BEGIN IMMEDIATE on a single connection means our own writers queue in
	// database/sql instead of spinning on SQLITE_BUSY.
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	db := &DB{path: filePath, writer: w, stmts: make(map[string]*sql.Stmt), seen: make(map[string]bool)}
	if opts.PersistWAL {
		if err := db.persistWAL(ctx); err != nil {
			w.Close()
			return nil, fmt.Errorf("open %s: %w", filePath, missing(filePath, err))
		}
	}
	if err := db.migrate(ctx, opts.Migrations, migrations); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", filePath, missing(filePath, err))
	}
	if readers == SharedReader {
		// Reads use the writer; the pool below only runs CheckpointPassive, and
		// database/sql connects it on first use.
		db.shared = true
		readers = 1
	}

	r, err := sql.Open("sqlite", readerDSN)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", filePath, err)
	}
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	r.SetConnMaxLifetime(0)
	r.SetConnMaxIdleTime(0)
	db.readers = r
	return db, nil
}

// missing returns err, or an error wrapping fs.ErrNotExist when err is SQLite failing to
// open a file that is not there (with MustExist).
func missing(filePath string, err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_CANTOPEN {
		return err
	}
	if _, serr := os.Stat(filePath); errors.Is(serr, fs.ErrNotExist) {
		return serr
	}
	return err
}

// persistWAL sets SQLITE_FCNTL_PERSIST_WAL on the writer connection. The writer is the
// one connection that lives as long as the DB, so it is the last to close: the one whose
// setting decides whether the WAL file stays.
func (db *DB) persistWAL(ctx context.Context) error {
	conn, err := db.writer.Conn(ctx)
	if err != nil {
		return fmt.Errorf("persist WAL: %w", MapError(err))
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		fc, ok := dc.(sqlite.FileControl)
		if !ok {
			return errors.New("driver has no file control")
		}
		_, err := fc.FileControlPersistWAL("main", 1)
		return err
	})
	if err != nil {
		return fmt.Errorf("persist WAL: %w", MapError(err))
	}
	return nil
}

// Path returns the file the DB was opened from.
func (db *DB) Path() string { return db.path }

// Write runs fn in an immediate transaction on the writer connection and commits it when fn
// returns nil. An error from fn, or a panic, rolls the transaction back.
func (db *DB) Write(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin write: %w", MapError(err))
	}
	defer func() {
		if p := recover(); p != nil {
			tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		tx.Rollback()
		return MapError(err)
	}
	err = tx.Commit()
	// Counted even when the commit failed, as the file may have changed anyway.
	db.commits.Add(1)
	if err != nil {
		return fmt.Errorf("commit: %w", MapError(err))
	}
	db.preparePending(ctx)
	return nil
}

// Commits counts the transactions of Write that have committed (or tried to). Nothing
// Write did changed the file between two reads of the same count, so a value read from
// the file after the first is still current: the count validates in-memory copies.
func (db *DB) Commits() uint64 { return db.commits.Load() }

// Stmt returns query prepared once on the writer connection, bound to tx; tx must come
// from Write (or from Read with SharedReader), and the returned statement ends with it.
// Hot write paths use it because preparing (parsing and planning) a statement costs more
// than running a small one. A query's first uses prepare it for tx alone, since the single
// writer connection is busy with tx; after its second, Write prepares it for good once tx
// has ended, and keeps it until Close.
func (db *DB) Stmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	db.stmtMu.Lock()
	st, ok := db.stmts[query]
	if !ok {
		// Only a query seen twice is worth keeping: a file opened for one write (an LRU
		// miss) would otherwise prepare each of its queries twice.
		if db.seen[query] {
			if !slices.Contains(db.pending, query) {
				db.pending = append(db.pending, query)
			}
		} else if db.seen != nil {
			db.seen[query] = true
		}
	}
	db.stmtMu.Unlock()
	if ok {
		return tx.StmtContext(ctx, st), nil
	}
	st, err := tx.PrepareContext(ctx, query)
	if err != nil {
		return nil, MapError(err)
	}
	return st, nil
}

// preparePending prepares on the writer the queries Stmt has prepared per transaction
// twice. It must not run inside a transaction: preparing waits for the writer connection.
func (db *DB) preparePending(ctx context.Context) {
	db.stmtMu.Lock()
	pending := db.pending
	db.pending = nil
	db.stmtMu.Unlock()
	for _, q := range pending {
		st, err := db.writer.PrepareContext(ctx, q)
		if err != nil {
			continue // the next use of q asks again
		}
		db.stmtMu.Lock()
		if _, dup := db.stmts[q]; dup || db.stmts == nil {
			st.Close() // prepared twice by racing writers, or the DB is closing
		} else {
			db.stmts[q] = st
		}
		db.stmtMu.Unlock()
	}
}

// Read runs fn in a read-only transaction on the reader pool (the writer connection with
// SharedReader), so every query in fn sees one consistent snapshot.
func (db *DB) Read(ctx context.Context, fn func(*sql.Tx) error) error {
	pool := db.readers
	if db.shared {
		pool = db.writer
	}
	tx, err := pool.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin read: %w", MapError(err))
	}
	defer func() {
		tx.Rollback()
		if db.shared {
			db.preparePending(ctx)
		}
	}()
	if err := fn(tx); err != nil {
		return MapError(err)
	}
	return nil
}

// QueryRow runs one read-only query as its own implicit transaction on the read pool (the
// writer connection with SharedReader) and scans its first row into dest, returning
// sql.ErrNoRows when there is none. Its statement is prepared once per DB: for the point
// lookups on every request (an account, a blob) that saves the prepare and the explicit
// BEGIN and ROLLBACK that Read costs.
func (db *DB) QueryRow(ctx context.Context, query string, args []any, dest ...any) error {
	pool := db.readers
	if db.shared {
		pool = db.writer
	}
	db.stmtMu.Lock()
	if db.stmts == nil { // Close has begun
		db.stmtMu.Unlock()
		return fmt.Errorf("query %s: database is closed", db.path)
	}
	st, ok := db.readStmts[query]
	if !ok {
		var err error
		if st, err = pool.PrepareContext(ctx, query); err != nil {
			db.stmtMu.Unlock()
			return fmt.Errorf("prepare: %w", MapError(err))
		}
		if db.readStmts == nil {
			db.readStmts = map[string]*sql.Stmt{}
		}
		db.readStmts[query] = st
	}
	db.stmtMu.Unlock()
	return MapError(st.QueryRowContext(ctx, args...).Scan(dest...))
}

// readPrepareWait bounds how long ReadStmt waits for a free reader to prepare on.
const readPrepareWait = 10 * time.Millisecond

// ReadStmt returns query as a statement of tx, a transaction from Read, prepared once per
// reader connection and kept until Close instead of parsed and planned by every
// transaction: for the index's views, preparing cost as much as running. query should be
// a fixed text (bounded in number), not one built around its arguments.
func (db *DB) ReadStmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	var st *sql.Stmt
	if !db.shared { // the one shared connection is tx's: there is none to prepare on
		db.stmtMu.Lock()
		st = db.readStmts[query]
		open := db.stmts != nil
		db.stmtMu.Unlock()
		if st == nil && open {
			// The statement is prepared on a free reader. tx holds one already, so wait
			// only briefly: if every reader were inside a transaction waiting here, none
			// would come free. Until one does, tx prepares it for itself.
			pctx, cancel := context.WithTimeout(ctx, readPrepareWait)
			p, err := db.readers.PrepareContext(pctx, query)
			cancel()
			if err == nil {
				db.stmtMu.Lock()
				switch prev := db.readStmts[query]; {
				case db.stmts == nil: // Close has begun
					p.Close()
				case prev != nil:
					p.Close()
					st = prev
				default:
					if db.readStmts == nil {
						db.readStmts = map[string]*sql.Stmt{}
					}
					db.readStmts[query] = p
					st = p
				}
				db.stmtMu.Unlock()
			}
		}
	}
	if st == nil {
		p, err := tx.PrepareContext(ctx, query)
		if err != nil {
			return nil, MapError(err)
		}
		return p, nil
	}
	return tx.StmtContext(ctx, st), nil
}

// Checkpoint folds the WAL back into the database file and truncates it.
func (db *DB) Checkpoint(ctx context.Context) error {
	if _, err := db.writer.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return fmt.Errorf("checkpoint %s: %w", db.path, MapError(err))
	}
	return nil
}

// CheckpointPassive copies what it can of the WAL into the database file without waiting
// for or blocking writers (a PASSIVE checkpoint). It runs on a reader connection, so a
// commit can proceed beside it; with SharedReader that is a connection kept for
// checkpoints alone, opened on first use.
func (db *DB) CheckpointPassive(ctx context.Context) error {
	_, err := db.checkpointPassive(ctx)
	return err
}

// checkpointPassive is CheckpointPassive, returning the WAL's size in frames.
func (db *DB) checkpointPassive(ctx context.Context) (frames int, err error) {
	var busy, done int
	err = db.readers.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &done)
	if err != nil {
		return 0, fmt.Errorf("checkpoint %s: %w", db.path, MapError(err))
	}
	return frames, nil
}

// RunCheckpoints copies the WAL back into the database file in the background until ctx
// ends: a CheckpointPassive at most every interval, when something was committed since
// the last one. A busy writer then stops paying for checkpoints, which SQLite otherwise
// runs inside whichever commit crosses wal_autocheckpoint (copying thousands of pages and
// two fsyncs); that automatic checkpoint stays as a backstop in case this one falls
// behind, at a threshold raised to backstopCheckpointPages meanwhile. It returns nil when
// ctx ends or Close begins, and otherwise the first checkpoint error, after which the
// backstop alone checkpoints, at its usual threshold again.
func (db *DB) RunCheckpoints(ctx context.Context, interval time.Duration) error {
	// At SQLite's default of 1000 pages, a file written a few thousand pages a second
	// (the relay log and the index under load) reaches the backstop between two of these
	// checkpoints, and pays for the copy and its fsyncs inside a commit several times a
	// second, with every writer queued behind it.
	var usual int
	if err := db.writer.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&usual); err != nil {
		return fmt.Errorf("read %s's automatic checkpoint: %w", db.path, MapError(err))
	}
	if _, err := db.writer.ExecContext(ctx, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", max(usual, backstopCheckpointPages))); err != nil {
		return fmt.Errorf("raise %s's automatic checkpoint: %w", db.path, MapError(err))
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	turns := &checkpointTurns{db: db, backstop: max(usual, backstopCheckpointPages)}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if _, err := turns.turn(ctx); err != nil {
			if ctx.Err() != nil || db.closed.Load() {
				return nil
			}
			// From now on the backstop is the only checkpoint: back to its usual size.
			db.writer.ExecContext(ctx, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", usual))
			return err
		}
	}
}

// checkpointTurns is what RunCheckpoints keeps between its turns.
type checkpointTurns struct {
	db *DB
	// backstop is the writer's automatic checkpoint threshold, in frames.
	backstop int
	// done is the commit count at the last checkpoint; skip is how many turns to leave out.
	done uint64
	skip int
}

// turn is one of RunCheckpoints' turns: a PASSIVE checkpoint if anything was committed
// since the last one and no turn is to be left out. It reports whether it checkpointed.
//
// When the WAL is past the backstop's threshold, a writer is outrunning these checkpoints,
// and the WAL starts again from its beginning only after a checkpoint has copied all of
// it: one that runs while nothing is appended, such as the writer's own at that
// threshold. That one gives up when it finds this one busy, which let the index's WAL
// grow to 0.5 GB building the 200k-post index (and past 1 GB at 1M posts). So then the
// next backstopSkips turns are left out.
func (c *checkpointTurns) turn(ctx context.Context) (bool, error) {
	n := c.db.commits.Load()
	if n == c.done {
		return false, nil
	}
	if c.skip > 0 {
		c.skip--
		return false, nil
	}
	frames, err := c.db.checkpointPassive(ctx)
	if err != nil {
		return true, err
	}
	if frames > c.backstop {
		c.skip = backstopSkips
	}
	c.done = n
	return true, nil
}

// Close closes every connection. Pending Write and Read calls finish first.
func (db *DB) Close() error {
	db.closed.Store(true)
	var errs []error
	db.stmtMu.Lock()
	for _, st := range db.stmts {
		errs = append(errs, st.Close())
	}
	for _, st := range db.readStmts {
		errs = append(errs, st.Close())
	}
	db.stmts, db.readStmts = nil, nil
	db.stmtMu.Unlock()
	if db.readers != nil {
		errs = append(errs, db.readers.Close())
	}
	errs = append(errs, db.writer.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close %s: %w", db.path, err)
	}
	return nil
}

type migration struct {
	version int
	name    string
}

// loadMigrations lists NNNN_what.sql files and checks they number 1, 2, 3... without gaps,
// because user_version can only say how far a file got, not which steps it skipped. Their
// text is read only when one must be applied: most opens find the file up to date.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	if fsys == nil {
		return nil, nil
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_what.sql", e.Name())
		}
		ms = append(ms, migration{version: v, name: e.Name()})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected number %04d", m.name, i+1)
		}
	}
	return ms, nil
}

// migrate applies pending migrations in one transaction, so a crash leaves the file either
// before or after all of them.
func (db *DB) migrate(ctx context.Context, fsys fs.FS, ms []migration) error {
	var current int
	if err := db.writer.QueryRowContext(ctx, "PRAGMA user_version").Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", MapError(err))
	}
	if current > len(ms) {
		return fmt.Errorf("%w: file at version %d, binary knows %d", ErrTooNew, current, len(ms))
	}
	if current == len(ms) {
		return nil
	}
	return db.Write(ctx, func(tx *sql.Tx) error {
		for _, m := range ms[current:] {
			body, err := fs.ReadFile(fsys, m.name)
			if err != nil {
				return fmt.Errorf("read migration %s: %w", m.name, err)
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
		}
		// PRAGMA takes no bound parameters; the value is an int we computed.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(ms))); err != nil {
			return fmt.Errorf("set schema version: %w", err)
		}
		return nil
	})
}
