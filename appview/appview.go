package appview

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aerie-social/aerie/node/sqlite"
	"github.com/aerie-social/aerie/relay"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// indexReaders is the read pool of index.sqlite: views are read-heavy and each request
// holds a connection for one snapshot.
const indexReaders = 8

// readerCacheKiB is the page cache of each index reader connection. A timeline reads a
// few pages of feed_items, follows, likes and posts per followed account; with SQLite's
// default 2 MiB, warm requests still read most of them again through pread. Pages are
// cached as they are read, so an idle reader holds little.
const readerCacheKiB = 16 << 10

// writerMmapBytes has the writer connection read the index through a memory map, as far
// as SQLite allows (2 GiB): indexing probes its B-trees at random, and with the file bigger
// than the writer's page cache each miss was a pread and a copy. Building a 200k-post index
// ran 14-23% faster with the map. The readers keep plain reads: with a map each, a
// warm getTimeline on that index had a slower median (3.0 ms against 2.4).
const writerMmapBytes = 2 << 30

// writerCacheKiB is the page cache of the index's writer connection while the index is
// under 1 GiB. Bigger than SQLite's default so a batch finds the hot B-tree pages in
// memory, but not much bigger: below 1 GiB every commit that splits a page walks the
// cache's hash table (see sizeWriterCache), and at 64 MiB that walk was a fifth of
// indexing one local post in its own transaction (BenchmarkIndexOnePost).
const writerCacheKiB = 16 << 10

// writerSpillPages is how many pages the writer's cache may hold before a transaction
// writes dirty pages to the WAL ahead of its commit (SQLite's cache_spill; by default the
// cache size). A batch of a thousand events dirties more than writerCacheKiB, and every
// spilled page was written twice: once early, once more in place when the batch changed
// it again, after which the commit read back and rewrote every frame from the first
// overwritten one to fix the checksums. Building the 200k-post index went from 4,840 to
// 5,893 events/s without the spills. 256 MiB of dirty pages is far more than a batch of
// Next's limits makes, and the cache gives the pages back when the batch commits.
const writerSpillPages = 65536

// cacheCheckEvery is how many index transactions pass between two looks at the index's
// size by sizeWriterCache.
const cacheCheckEvery = 64

// walCheckpointPages is the WAL size (in 4 KiB pages, so 256 MiB) at which the writer
// checkpoints itself inside a commit. Run checkpoints in the background, on another
// connection, well before that; the writer's own checkpoint only lets the WAL start over
// from its beginning once the background ones have copied nearly all of it. At 8192
// pages, a fast indexer reached it several times a second and copied pages inside its
// commits (6-13 s of building the 200k-post index).
const walCheckpointPages = 65536

// checkpointInterval is how often Run checkpoints the index in the background while it is
// written: the copying then runs beside the indexer instead of inside one of its commits.
// A catching-up indexer writes some 20,000 pages a second; checkpointing every second let
// the WAL reach the writer's own checkpoint first.
const checkpointInterval = 200 * time.Millisecond

// An index transaction costs more than the events in it when they are few: its commit,
// and a WAL frame for each page it dirties, most of which (the cursor row, the last leaf
// of each index, the search segment) the next one dirties again. So when the stream has
// delivered fewer than gatherBelow events and no read is waiting for the index
// (read-after-write), Run waits up to gatherWait for more before indexing them.
const (
	gatherBelow = 256
	gatherWait  = 5 * time.Millisecond
)

// AppView is the index and its read API. Build it with Open, feed it with Run, close it
// with Close after Run has returned.
type AppView struct {
	db        *sqlite.DB
	cfg       Config
	log       *slog.Logger
	publicURL string
	cache     *caches
	known     *knownActors
	// now is the clock for indexedAt of events without a time and for mutes; tests may
	// replace it before Run.
	now func() time.Time

	started atomic.Bool
	// cursor is the seq of the last event whose changes are committed.
	cursor atomic.Int64
	// written is the highest seq of a local write that has been acknowledged to its
	// client; reads wait for cursor to reach it (see NoteLocalWrite).
	written atomic.Int64
	// mu guards advanced, which is closed (and replaced) whenever cursor moves, to wake
	// WaitForSeq callers.
	mu       sync.Mutex
	advanced chan struct{}
	// waiting counts the WaitForSeq calls not yet satisfied; each new one also leaves a
	// token in hurry, which ends Run's wait for more events (see gatherWait).
	waiting atomic.Int64
	hurry   chan struct{}
	// batch holds the events Run gathers; only Run uses it.
	batch []*relay.Event
	// applied counts apply's transactions, and bigCache says whether the writer has
	// Config.IndexCacheBytes of page cache (see sizeWriterCache); only apply uses them.
	applied  int
	bigCache bool
	// bigCacheAbove is the index size, in bytes, past which the writer gets the big
	// cache: SQLite's lock page at 1 GiB. Tests lower it.
	bigCacheAbove int64
}

// Open opens (creating and migrating) the index at path. It starts no goroutine; call Run.
func Open(ctx context.Context, path string, cfg Config, log *slog.Logger) (*AppView, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	db, err := sqlite.Open(ctx, path, sqlite.Options{Synchronous: cfg.Synchronous, Readers: indexReaders,
		CacheKiB: readerCacheKiB, Migrations: migrations})
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	// The index is written in big batches that touch pages all over its B-trees; SQLite's
	// default 2 MiB page cache makes each batch re-read (and spill) pages through syscalls.
	// The writer connection lives as long as db, so setting its cache once holds.
	err = db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size = -%d", writerCacheKiB)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA mmap_size = %d", writerMmapBytes)); err != nil {
			return err
		}
		// cache_spill as a page count: its boolean form reaches the pager only outside a
		// transaction.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_spill = %d", writerSpillPages)); err != nil {
			return err
		}
		// See walCheckpointPages.
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", walCheckpointPages))
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open index: set cache size: %w", err)
	}
	var cursor int64
	err = db.Read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT coalesce((SELECT value FROM meta WHERE key = 'cursor'), 0)`).Scan(&cursor)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open index: read cursor: %w", err)
	}
	c, err := newCaches(cfg.CacheBytes)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open index: %w", err)
	}
	a := &AppView{
		db:        db,
		cfg:       cfg,
		log:       log.With("component", "appview"),
		publicURL: strings.TrimSuffix(cfg.PublicURL, "/"),
		cache:     c,
		known:     newKnownActors(),
		now:       time.Now,
		advanced:  make(chan struct{}),
		hurry:     make(chan struct{}, 1),

		bigCacheAbove: 1 << 30,
	}
	a.cursor.Store(cursor)
	return a, nil
}

// Close closes the caches and the index file. Call it after Run has returned.
func (a *AppView) Close() error {
	a.cache.close()
	if err := a.db.Close(); err != nil {
		return fmt.Errorf("close index: %w", err)
	}
	return nil
}

// Cursor returns the seq of the last relay event the index has committed.
func (a *AppView) Cursor() int64 { return a.cursor.Load() }

// Run consumes seq's stream from the durable cursor until ctx ends, applying each batch of
// events in one index transaction. It returns nil when ctx ends or the sequencer stops, and
// an error only when the index cannot be written. It may be called once.
func (a *AppView) Run(ctx context.Context, seq *relay.Sequencer) error {
	if !a.started.CompareAndSwap(false, true) {
		return ErrClosed
	}
	var wg sync.WaitGroup
	cpCtx, stopCheckpoints := context.WithCancel(ctx)
	wg.Go(func() {
		if err := a.db.RunCheckpoints(cpCtx, checkpointInterval); err != nil {
			a.log.Warn("background checkpoints of the index stopped; commits checkpoint instead", "err", err)
		}
	})
	defer func() {
		stopCheckpoints()
		wg.Wait()
	}()
	cursor := a.cursor.Load()
	a.log.Info("indexer running", "cursor", cursor)
	sub, err := a.subscribe(seq, cursor)
	if err != nil {
		return err
	}
	for {
		evs, err := sub.Next(ctx)
		switch {
		case ctx.Err() != nil, errors.Is(err, relay.ErrClosed):
			return nil
		case errors.Is(err, relay.ErrOutdatedCursor):
			// Retention pruned events we had not read: resume at the oldest one left. The
			// accounts whose commits were lost are stale until reindexed.
			a.log.Warn("indexer fell behind retention; events were skipped", "cursor", a.cursor.Load())
			if sub, err = a.subscribe(seq, a.cursor.Load()); err != nil {
				return err
			}
			continue
		case err != nil:
			return fmt.Errorf("read relay stream: %w", err)
		}
		if len(evs) < gatherBelow {
			evs = a.gather(ctx, sub, evs)
		}
		if err := a.apply(ctx, evs); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// gather adds to evs what the stream delivers within gatherWait, up to gatherBelow
// events, unless a read is waiting for the index. An error from the stream only ends the
// wait: Run meets it again at its next read.
func (a *AppView) gather(ctx context.Context, sub *relay.Subscription, evs []*relay.Event) []*relay.Event {
	// A token now is from a read that has had its answer since, or that waiting shows.
	select {
	case <-a.hurry:
	default:
	}
	if a.waiting.Load() > 0 {
		return evs
	}
	// Next reuses its slice, so the events move to a buffer of Run's own.
	a.batch = append(a.batch[:0], evs...)
	gctx, cancel := context.WithTimeout(ctx, gatherWait)
	defer cancel()
	go func() {
		select {
		case <-a.hurry:
			cancel()
		case <-gctx.Done():
		}
	}()
	for len(a.batch) < gatherBelow && a.waiting.Load() == 0 {
		more, err := sub.Next(gctx)
		if err != nil {
			break
		}
		a.batch = append(a.batch, more...)
	}
	return a.batch
}

// subscribe opens the stream after cursor. A cursor above the log's last seq means the
// relay log was reset under the index: resume at its end rather than stall.
func (a *AppView) subscribe(seq *relay.Sequencer, cursor int64) (*relay.Subscription, error) {
	sub, err := seq.Subscribe(cursor)
	if errors.Is(err, relay.ErrFutureCursor) {
		a.log.Warn("index cursor is ahead of the relay log; resuming at its end", "cursor", cursor, "seq", seq.LastSeq())
		sub, err = seq.Subscribe(seq.LastSeq())
	}
	if err != nil {
		return nil, fmt.Errorf("subscribe to relay stream at %d: %w", cursor, err)
	}
	if sub.Outdated() {
		a.log.Warn("events after the index cursor were pruned; some accounts need a reindex", "cursor", cursor)
	}
	return sub, nil
}

// apply indexes evs and moves the cursor past them in one transaction, then invalidates
// the caches and wakes WaitForSeq.
func (a *AppView) apply(ctx context.Context, evs []*relay.Event) error {
	if len(evs) == 0 {
		return nil
	}
	last := evs[len(evs)-1].Seq
	t := newTouched()
	// A batch is bounded, and finishing it at shutdown beats redoing it. The statements
	// need a context that cannot end: the driver starts a goroutine per statement to
	// watch one that can, which cost the indexer more than some of its statements.
	ctx = context.WithoutCancel(ctx)
	err := a.db.Write(ctx, func(tx *sql.Tx) error {
		if err := a.sizeWriterCache(ctx, tx); err != nil {
			return err
		}
		ix := newIndexTx(ctx, a.db, tx, t, a.known, a.cfg.Hosted, a.log)
		defer ix.close()
		for _, ev := range evs {
			if ev.Seq <= a.cursor.Load() {
				continue // already indexed: replays never count twice
			}
			if err := ix.event(ev, a.now()); err != nil {
				return fmt.Errorf("index seq %d: %w", ev.Seq, err)
			}
		}
		if err := ix.writeSearch(); err != nil {
			return err
		}
		return ix.setCursor(last)
	})
	if err != nil {
		return fmt.Errorf("index events through seq %d: %w", last, err)
	}
	a.cache.invalidate(t)
	a.known.add(t)
	a.advance(last)
	return nil
}

// sizeWriterCache gives the writer Config.IndexCacheBytes of page cache while the index is
// bigger than bigCacheAbove, and writerCacheKiB otherwise, checking every cacheCheckEvery
// transactions.
//
// Below 1 GiB a big cache costs more than it saves. When a B-tree page splits, SQLite
// renumbers the new pages through the lock page (page 262,145 of 4 KiB pages, at the
// 1 GiB offset) as a scratch number, and the cache's highest page number sticks there; at
// commit, the pager drops cached pages past the end of the file, and with that number far
// past the end it walks the cache's whole hash table. With a 512 MiB cache on a 700 MiB
// index that walk took 36 ms a commit. Once the file is past the lock page, nothing is
// past the end and the walk never happens; then the cache saves the writer's reads: at 1M
// posts, 16 MiB of cache left two thirds of the indexer's system time in preads.
func (a *AppView) sizeWriterCache(ctx context.Context, tx *sql.Tx) error {
	a.applied++
	if a.cfg.IndexCacheBytes <= writerCacheKiB<<10 || a.applied%cacheCheckEvery != 1 {
		return nil
	}
	var pages, pageSize int64
	if err := tx.QueryRowContext(ctx, "SELECT page_count, page_size FROM pragma_page_count(), pragma_page_size()").Scan(&pages, &pageSize); err != nil {
		return fmt.Errorf("read index size: %w", err)
	}
	big := pages*pageSize > a.bigCacheAbove
	if big == a.bigCache {
		return nil
	}
	kib := int64(writerCacheKiB)
	if big {
		kib = a.cfg.IndexCacheBytes >> 10
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size = -%d", kib)); err != nil {
		return fmt.Errorf("size index cache: %w", err)
	}
	a.bigCache = big
	a.log.Info("index writer cache resized", "index_bytes", pages*pageSize, "cache_kib", kib)
	return nil
}

// advance publishes a new cursor and wakes waiters.
func (a *AppView) advance(seq int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if seq > a.cursor.Load() {
		a.cursor.Store(seq)
	}
	close(a.advanced)
	a.advanced = make(chan struct{})
}

// NoteLocalWrite records that a local write, sequenced at seq, is about to be
// acknowledged. Every read the AppView serves from then on first waits for the index to
// pass seq (at most Config.WaitTimeout), so a write that has returned shows in every later
// read (read-after-write) while the write itself does not wait for the indexer: writers
// stay ahead, and the indexer takes their events in bigger batches.
func (a *AppView) NoteLocalWrite(seq int64) {
	for {
		cur := a.written.Load()
		if seq <= cur || a.written.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// awaitLocalWrites is the read side of NoteLocalWrite. A slow indexer delays a read, never
// fails it; only the end of ctx does.
func (a *AppView) awaitLocalWrites(ctx context.Context) error {
	seq := a.written.Load()
	if seq <= a.cursor.Load() {
		return nil
	}
	err := a.WaitForSeq(ctx, seq)
	if errors.Is(err, ErrNotCaughtUp) {
		a.log.WarnContext(ctx, "serving a read before the index has local writes", "err", err)
		return nil
	}
	return err
}

// WaitForSeq waits until the index has committed every event up to seq, so a local
// write's author sees it in their next read. It waits at most Config.WaitTimeout (less if
// ctx ends sooner) and then returns ErrNotCaughtUp; it returns ctx's error when ctx ends.
func (a *AppView) WaitForSeq(ctx context.Context, seq int64) error {
	if a.cursor.Load() >= seq {
		return nil
	}
	a.waiting.Add(1)
	defer a.waiting.Add(-1)
	select {
	case a.hurry <- struct{}{}:
	default:
	}
	timer := time.NewTimer(a.cfg.WaitTimeout)
	defer timer.Stop()
	for {
		a.mu.Lock()
		ch := a.advanced
		a.mu.Unlock()
		if a.cursor.Load() >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return fmt.Errorf("%w: at seq %d, waiting for %d", ErrNotCaughtUp, a.cursor.Load(), seq)
		case <-ctx.Done():
			return fmt.Errorf("wait for seq %d: %w", seq, ctx.Err())
		}
	}
}
