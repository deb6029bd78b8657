package repo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/sqlite"
)

// actor is one account's open repository file. The Store hands it out under a lease from
// its LRU; mu serializes the account's writes, so per-DID commits (and the OnCommit hook
// that forwards them) happen in rev order.
type actor struct {
	did   syntax.DID
	db    *sqlite.DB
	store *Store

	mu  sync.Mutex
	key atcrypto.PrivateKeyExportable // loaded on first write, guarded by mu
	// tuned is set once the writer connection's autocheckpoint is off; walUnits
	// estimates the WAL written since the last checkpoint request. Both guarded by mu.
	tuned    bool
	walUnits int
	// cur caches the root row, nil when unknown: only this actor's commits (under mu)
	// move the head of an open file, so a commit need not read it back and Head need not
	// query it. Commits load and store it under mu; Head only loads it.
	cur atomic.Pointer[head]
	// garbage counts the nodes this session's commits put on the garbage list (migration
	// 0003) since it was last emptied, fresh those they put in the fresh table (migration
	// 0004); a rolled-back commit may leave them too high, which only costs an early
	// collection. Guarded by mu.
	garbage int
	fresh   int
	// listed holds the CIDs on the garbage list, nil when unknown (read again by the next
	// commit): a commit that writes a node again must take it off the list, and only a
	// listed node can be both new to the tree and stored already. Guarded by mu.
	listed map[cid.Cid]struct{}

	// queue holds the write requests waiting for mu (see write); guarded by queueMu,
	// which is never held while waiting for mu.
	queueMu sync.Mutex
	queue   []*writeRequest
}

// currentHead returns the head as of tx's start: the cached one when valid, else the root
// row (which it then caches). a.mu must be held.
func (a *actor) currentHead(ctx context.Context, tx *sql.Tx) (head, error) {
	if h := a.cur.Load(); h != nil {
		return *h, nil
	}
	h, err := readHead(ctx, a.db, tx)
	if err != nil {
		return head{}, err
	}
	a.cur.Store(&h)
	return h, nil
}

// latestHead returns the head of the last commit: the cached one when a commit has run
// since the file opened, else the root row, read as one statement with no BEGIN and
// ROLLBACK around it. It never fills the cache: a row read without mu may already have
// been overtaken by a commit.
func (a *actor) latestHead(ctx context.Context) (head, error) {
	if h := a.cur.Load(); h != nil {
		return *h, nil
	}
	var commitRaw, dataRaw []byte
	var rev string
	err := a.db.QueryRow(ctx, headQuery, nil, &commitRaw, &rev, &dataRaw)
	if errors.Is(err, sql.ErrNoRows) {
		return head{}, fmt.Errorf("repo %s: %w", a.did, ErrRepoNotFound)
	}
	if err != nil {
		return head{}, fmt.Errorf("repo %s: read head: %w", a.did, err)
	}
	h, err := parseHead(commitRaw, rev, dataRaw)
	if err != nil {
		return head{}, fmt.Errorf("repo %s: %w", a.did, err)
	}
	return h, nil
}

// WAL checkpointing. A commit on a repo of 10k records appends about 11 pages to the WAL;
// SQLite's automatic checkpoint would copy them back (random writes and two fsyncs, tens of
// milliseconds on a small VM) inside whichever commit crosses the threshold. Instead the
// writer's autocheckpoint is off and Store.Run checkpoints in the background, PASSIVE, on
// a reader connection, so commits never wait for it.
const (
	// checkpointEvery is how many units of WAL (a commit, plus one per 4 ops) make a
	// checkpoint request: about 20 MiB of WAL for single-record commits. Each checkpoint
	// that empties the WAL makes the next commit start it again, which syncs its header:
	// an fsync inside that commit, which with the repo's other writers queued behind it
	// reaches the 99th percentile of their latency once it comes every few hundred
	// commits (128 did). Fewer, bigger checkpoints also copy hot pages back once for more
	// commits.
	checkpointEvery = 512
	// checkpointInline is the backlog at which the writer checkpoints itself because
	// requests are not being served (Run not running or far behind).
	checkpointInline = 4 * checkpointEvery
)

// tuneWriter turns off the writer connection's automatic checkpoint, once per open file.
// a.mu must be held.
func (a *actor) tuneWriter(ctx context.Context, tx *sql.Tx) error {
	if a.tuned {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
		return fmt.Errorf("tune writer: %w", err)
	}
	a.tuned = true
	return nil
}

// noteCommit accounts for a commit of ops operations and asks Store.Run for a checkpoint
// when enough WAL has built up. It returns true when the caller must checkpoint inline.
// a.mu must be held.
func (a *actor) noteCommit(ops int) bool {
	a.walUnits += 1 + ops/4
	if a.walUnits < checkpointEvery {
		return false
	}
	select {
	case a.store.checkpoints <- a.did:
		a.walUnits = 0
		return false
	default:
	}
	if a.walUnits >= checkpointInline {
		a.walUnits = 0
		return true
	}
	return false
}

// checkpoint copies the WAL back into the database file without blocking writers: a
// PASSIVE checkpoint on a connection of its own.
func (a *actor) checkpoint(ctx context.Context) error {
	if err := a.db.CheckpointPassive(ctx); err != nil {
		return fmt.Errorf("checkpoint %s: %w", a.did, err)
	}
	return nil
}

// collectEvery is how many listed (or fresh) nodes make a writer collect them: about 30
// commits of one record on a repo of 10k, for 1-2 ms of work. The repo's other writers
// wait for the collection, so what matters for their 99th percentile is how long it
// takes rather than how rarely it comes: at 1024 nodes it took 5-7 ms every 130 commits,
// and with four writers queued behind it set their p99 (W1: 14 ms, against 12 ms now,
// at the same throughput and commit CPU). Less often would also grow the fresh table's
// index.
const collectEvery = 256

// collectGarbage deletes the MST nodes on the garbage list, moves the nodes of the fresh
// table that are still in use into blocks, and empties both lists, in one transaction:
// nodes that share a page cost it once, and a node both written and replaced since the
// last collection never reaches blocks. Rows left by a session that crashed go with the
// next session's collection. a.mu must be held.
func (a *actor) collectGarbage(ctx context.Context) error {
	if a.garbage == 0 && a.fresh == 0 {
		return nil
	}
	err := a.db.Write(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			// refs = 0 guards record values, as for every delete by CID.
			"DELETE FROM blocks WHERE refs = 0 AND cid IN (SELECT cid FROM garbage)",
			// In CID order, so the entries of blocks_cid go in page by page.
			"INSERT INTO blocks (cid, rev, refs, data) SELECT cid, rev, 0, data FROM fresh WHERE cid NOT IN (SELECT cid FROM garbage) ORDER BY cid ON CONFLICT (cid) DO NOTHING",
			"DELETE FROM fresh",
			"DELETE FROM garbage",
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		a.listed = nil
		return fmt.Errorf("collect replaced nodes of %s: %w", a.did, err)
	}
	a.garbage, a.fresh = 0, 0
	a.listed = map[cid.Cid]struct{}{}
	return nil
}

// loadListed reads the garbage list into a.listed unless it is known. a.mu must be held.
func (a *actor) loadListed(ctx context.Context, tx *sql.Tx) error {
	if a.listed != nil {
		return nil
	}
	rows, err := tx.QueryContext(ctx, "SELECT cid FROM garbage")
	if err != nil {
		return fmt.Errorf("read garbage list: %w", err)
	}
	defer rows.Close()
	listed := map[cid.Cid]struct{}{}
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return fmt.Errorf("read garbage list: %w", err)
		}
		c, err := cid.Cast(raw)
		if err != nil {
			return fmt.Errorf("read garbage list: %w", err)
		}
		listed[c] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read garbage list: %w", err)
	}
	a.listed = listed
	return nil
}

// Close collects the nodes on the garbage list and in the fresh table and closes the
// actor's SQLite file; the LRU calls it once the last lease has ended. Collecting here
// bounds both for files that are closed before their writers list collectEvery nodes: the
// counts start again at zero with the next open.
func (a *actor) Close() error {
	a.mu.Lock()
	err := a.collectGarbage(context.Background())
	a.mu.Unlock()
	return errors.Join(err, a.db.Close())
}

// signingKey returns the actor's key, reading the key file on first use: reads never need
// it, so an LRU miss on the read path does not pay for it. a.mu must be held.
func (a *actor) signingKey() (atcrypto.PrivateKeyExportable, error) {
	if a.key != nil {
		return a.key, nil
	}
	key, err := a.store.readKeyFile(a.did)
	if err != nil {
		return nil, err
	}
	a.key = key
	return key, nil
}

// head is the repository's current state: the signed commit and the tree it names.
type head struct {
	commit cid.Cid
	rev    syntax.TID
	data   cid.Cid
}

// readHead returns the root row. A file without one is a repo whose creation never
// finished, which Create's rename makes impossible, so it reads as missing.
func readHead(ctx context.Context, db *sqlite.DB, tx *sql.Tx) (head, error) {
	st, err := db.Stmt(ctx, tx, headQuery)
	if err != nil {
		return head{}, fmt.Errorf("read head: %w", err)
	}
	var commitRaw, dataRaw []byte
	var rev string
	err = st.QueryRowContext(ctx).Scan(&commitRaw, &rev, &dataRaw)
	if errors.Is(err, sql.ErrNoRows) {
		return head{}, ErrRepoNotFound
	}
	if err != nil {
		return head{}, fmt.Errorf("read head: %w", err)
	}
	return parseHead(commitRaw, rev, dataRaw)
}

// headQuery reads the root row.
const headQuery = "SELECT commit_cid, rev, data_cid FROM root WHERE id = 1"

// parseHead decodes the columns of headQuery.
func parseHead(commitRaw []byte, rev string, dataRaw []byte) (head, error) {
	h := head{rev: syntax.TID(rev)}
	var err error
	if h.commit, err = cid.Cast(commitRaw); err != nil {
		return head{}, fmt.Errorf("read head commit: %w", err)
	}
	if h.data, err = cid.Cast(dataRaw); err != nil {
		return head{}, fmt.Errorf("read head data: %w", err)
	}
	return h, nil
}

// txBlocks reads blocks inside one transaction, so the MST sees exactly the snapshot (or
// the pending writes) of the transaction that uses it.
type txBlocks struct {
	db    *sqlite.DB
	tx    *sql.Tx // from db
	fresh *sql.Stmt
	stmt  *sql.Stmt
}

// ReadBlock returns the block stored under c, or an error wrapping ErrBlockNotFound. A
// node written since the last collection is in the fresh table (migration 0004), tried
// second: most of a tree is in blocks, and a file closed cleanly has an empty fresh table.
// The head commit is not in the blocks table but in the root row (migration 0002).
func (r *txBlocks) ReadBlock(ctx context.Context, c cid.Cid) ([]byte, error) {
	if r.stmt == nil {
		stmt, err := r.db.Stmt(ctx, r.tx, "SELECT data FROM blocks WHERE cid = ?")
		if err != nil {
			return nil, fmt.Errorf("read block %s: %w", c, err)
		}
		r.stmt = stmt
	}
	var data []byte
	raw := c.Bytes()
	err := r.stmt.QueryRowContext(ctx, raw).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		if r.fresh == nil {
			if r.fresh, err = r.db.Stmt(ctx, r.tx, "SELECT data FROM fresh WHERE tag = ? AND cid = ?"); err != nil {
				return nil, fmt.Errorf("read block %s: %w", c, err)
			}
		}
		err = r.fresh.QueryRowContext(ctx, freshTag(c), raw).Scan(&data)
	}
	if errors.Is(err, sql.ErrNoRows) {
		err = r.tx.QueryRowContext(ctx, "SELECT commit_block FROM root WHERE commit_cid = ?", raw).Scan(&data)
	}
	if errors.Is(err, sql.ErrNoRows) || (err == nil && data == nil) {
		return nil, fmt.Errorf("read block %s: %w", c, ErrBlockNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read block %s: %w", c, err)
	}
	return data, nil
}

// read runs fn in a read transaction on the actor's file.
func (a *actor) read(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := a.db.Read(ctx, fn); err != nil {
		return fmt.Errorf("repo %s: %w", a.did, err)
	}
	return nil
}

// revInt is the integer form of a TID as stored in rev columns; TIDs keep the top bit
// zero, so it fits SQLite's signed 64-bit integers and sorts like the string form.
func revInt(rev syntax.TID) int64 { return int64(rev.Integer()) }
