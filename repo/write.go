package repo

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/sqlite"
)

// Limits on one commit, as the reference PDS enforces them (atproto-reference §5.4).
const (
	// MaxWrites is the most writes one ApplyWrites call may carry.
	MaxWrites = 200
	// MaxCommitBlocks is the largest CAR slice a commit may produce: the firehose frame
	// limit, above which consumers would see tooBig.
	MaxCommitBlocks = 2_000_000
)

// Action is what a write or a firehose op does to one record path.
type Action string

// The three actions of com.atproto.repo.applyWrites and of #commit ops.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
)

// Write is one record operation of ApplyWrites.
type Write struct {
	Action     Action
	Collection syntax.NSID
	// RKey may be empty on create: a fresh TID is used.
	RKey syntax.RecordKey
	// Record is the new value for create and update; nil for delete.
	Record *Record
	// SwapRecord, when set, is the CID the record must have now; a pointer to cid.Undef
	// means the record must not exist. A mismatch fails the batch with ErrInvalidSwap.
	SwapRecord *cid.Cid
}

// WriteOpts are the per-call options of ApplyWrites.
type WriteOpts struct {
	// SwapCommit, when set, is the commit CID the repo head must have now.
	SwapCommit *cid.Cid
	// Validate says how records are checked against their lexicons.
	Validate ValidationMode
	// OnCommit, when set, is called with the event after the transaction commits and
	// before the repo's write lock is released, so the caller can sequence events in rev
	// order. It must not call back into the Store for the same DID. The commit is
	// durable whatever OnCommit returns. Calls whose writes share a commit each get their
	// own event, with the same Forwarding: forward the commit through it, once.
	OnCommit func(*CommitEvent) error
}

// Op is one record change of a commit, as a #commit firehose op.
type Op struct {
	Action Action
	// Path is <collection>/<rkey>.
	Path string
	// CID is the new value (cid.Undef for delete).
	CID cid.Cid
	// Prev is the value before the commit (cid.Undef for create).
	Prev cid.Cid
}

// WriteResult is the outcome of one write, in input order.
type WriteResult struct {
	// URI and CID are set for create and update.
	URI syntax.ATURI
	CID cid.Cid
	// ValidationStatus is "valid" or "unknown" for create and update, empty for delete.
	ValidationStatus string
}

// CommitEvent describes one commit: what the relay needs for a #commit message and what
// the XRPC handlers answer.
type CommitEvent struct {
	DID syntax.DID
	Rev syntax.TID
	// Since is the previous commit's rev; empty for the genesis commit.
	Since syntax.TID
	// Commit is the new commit's CID.
	Commit cid.Cid
	// PrevData is the previous commit's tree root; cid.Undef for the genesis commit.
	PrevData cid.Cid
	// Data is the new tree root.
	Data cid.Cid
	Ops  []Op
	// Blocks is a CAR slice whose first root is the commit: the commit, every new MST
	// node, the unchanged nodes inversion needs, and every new record value.
	Blocks []byte
	// BlobsAdded are blobs no record referenced before this commit; BlobsRemoved are
	// blobs no record references after it.
	BlobsAdded   []cid.Cid
	BlobsRemoved []cid.Cid
	Results      []WriteResult
	// NoChange is true when every write left its record as it was (an update to the same
	// value): no commit was made, Rev, Commit and Data are the current head, Blocks is
	// empty, and OnCommit was not called.
	NoChange bool
	// Forwarding is shared by the events of the calls whose writes share this commit (see
	// ApplyWrites), so that their OnCommit hooks forward the commit once. Nil for events
	// that are not ApplyWrites'.
	Forwarding *Forwarding
}

// Forwarding runs the forwarding of one commit once, however many calls' events share it.
type Forwarding struct {
	once   sync.Once
	result any
	err    error
}

// Do runs forward the first time it is called for the commit, and returns its results
// every time. On a nil Forwarding it runs forward.
func (f *Forwarding) Do(forward func() (any, error)) (any, error) {
	if f == nil {
		return forward()
	}
	f.once.Do(func() { f.result, f.err = forward() })
	return f.result, f.err
}

// preparedWrite is a Write after the checks that need no lock.
type preparedWrite struct {
	Write
	path   string
	status string
}

// ApplyWrites applies writes to did's repo as one signed commit: all of them or none. It
// returns ErrRepoNotFound, ErrInvalidWrite (more than MaxWrites, a path twice, a missing
// record value), ErrInvalidRecord (lexicon), ErrRecordExists (create of a present path),
// ErrRecordNotFound (update or delete of a missing one), ErrInvalidSwap, or ErrTooLarge when
// the commit's blocks exceed MaxCommitBlocks.
//
// Concurrent calls for one repo share a SQLite transaction (group commit), and their
// writes share a commit when they can: no swapCommit, no path written twice, MaxWrites
// in all. Each call still fails or succeeds alone: when the shared commit fails, each is
// committed on its own. A call's event then carries the shared commit, all its ops and
// blocks, and the results of the call's own writes.
//
// When OnCommit fails, ApplyWrites returns the event together with the wrapped error.
func (s *Store) ApplyWrites(ctx context.Context, did syntax.DID, writes []Write, opts WriteOpts) (*CommitEvent, error) {
	prepared, err := s.prepareWrites(writes, opts.Validate)
	if err != nil {
		return nil, fmt.Errorf("apply writes to %s: %w", did, err)
	}
	req := &writeRequest{ctx: ctx, writes: prepared, opts: opts}
	err = s.withActor(ctx, did, func(a *actor) error {
		if a.write(req) {
			// Run is not keeping up (or not running): bound the WAL here, after the
			// repo's lock is released so the next writer is not held up.
			if cerr := a.checkpoint(ctx); cerr != nil {
				s.log.Warn("checkpoint", "did", did, "err", cerr)
			}
		}
		return req.err
	})
	if err != nil {
		return req.ev, fmt.Errorf("apply writes to %s: %w", did, err)
	}
	return req.ev, nil
}

// Group commit. A commit's transaction costs more than its statements: the writer's BEGIN
// and COMMIT, and one WAL frame for every page it dirties, most of which (the root row,
// the last leaf of each table, the tree's upper nodes) the next commit dirties again. So
// the writers of one repo queue their requests, and whoever holds the repo's lock commits
// all queued ones in one transaction, a savepoint each. The relay and the indexer then get
// the commits together too, and batch them in turn.
const (
	// maxGroupRequests and maxGroupWrites bound one group, so that a burst does not
	// make a transaction (and the wait of its first writer) arbitrarily long.
	maxGroupRequests = 64
	maxGroupWrites   = 4 * MaxWrites
)

// errGroupAborted is the outcome of a request whose group commit was cut short by a panic.
var errGroupAborted = errors.New("repo: the group commit this write was in did not finish")

// writeRequest is one ApplyWrites call in an actor's queue.
type writeRequest struct {
	ctx    context.Context
	writes []preparedWrite
	opts   WriteOpts
	// ev, err and done are set by the goroutine that commits the request, under a.mu.
	ev   *CommitEvent
	err  error
	done bool
}

// write queues req and waits for the repo's lock; a holder before it may have committed
// req already, else it commits req with every request queued by then. It reports whether
// the caller should checkpoint the WAL itself.
func (a *actor) write(req *writeRequest) (inline bool) {
	a.queueMu.Lock()
	a.queue = append(a.queue, req)
	a.queueMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	for !req.done {
		if a.commitGroup(a.takeGroup()) {
			inline = true
		}
	}
	return inline
}

// takeGroup removes the oldest queued requests, as many as one group may hold.
func (a *actor) takeGroup() []*writeRequest {
	a.queueMu.Lock()
	defer a.queueMu.Unlock()
	n, writes := 0, 0
	for n < len(a.queue) && n < maxGroupRequests {
		writes += len(a.queue[n].writes)
		if n > 0 && writes > maxGroupWrites {
			break
		}
		n++
	}
	group := slices.Clone(a.queue[:n])
	a.queue = slices.Delete(a.queue, 0, n)
	return group
}

// commitGroup commits each request of group in order, in one transaction, then runs their
// OnCommit hooks in the same order before the lock is released, so events leave in rev
// order. A request that fails is rolled back to its savepoint without disturbing the
// others; when the transaction itself fails, every request gets the error. It reports
// whether the caller should checkpoint the WAL itself. a.mu must be held.
func (a *actor) commitGroup(group []*writeRequest) (inline bool) {
	defer func() {
		for _, req := range group {
			if req.ev == nil && req.err == nil {
				// Only a panic (an OnCommit hook's, say) on the way leaves a request without
				// an outcome; its writer must not take that for success.
				req.err = errGroupAborted
			}
			req.done = true
		}
	}()
	live := make([]*writeRequest, 0, len(group))
	for _, req := range group {
		if err := req.ctx.Err(); err != nil {
			req.err = err
			continue
		}
		live = append(live, req)
	}
	if len(live) == 0 {
		return false
	}
	key, err := a.signingKey()
	if err != nil {
		for _, req := range live {
			req.err = err
		}
		return false
	}
	evs := make([]*CommitEvent, len(live))
	errs := make([]error, len(live))
	var last head
	// One writer's cancellation must not roll back the others' commits, and a commit is
	// short and never waits on the network. The statements also avoid a cancellable
	// context because the driver starts a goroutine per statement to watch one, a tenth
	// of a commit's CPU.
	ctx := context.WithoutCancel(live[0].ctx)
	err = a.db.Write(ctx, func(tx *sql.Tx) error {
		if err := a.tuneWriter(ctx, tx); err != nil {
			return err
		}
		h, err := a.currentHead(ctx, tx)
		if err != nil {
			return err
		}
		if err := a.loadListed(ctx, tx); err != nil {
			return err
		}
		// The commits share the transaction's statements; sp runs the savepoints through them.
		sp := &commitTx{ctx: ctx, db: a.db, tx: tx, stmts: make(map[string]*sql.Stmt)}
		// A request alone needs no savepoint: its failure rolls back the transaction.
		grouped := len(live) > 1
		shared := sharedPrefix(live)
		for i := 0; i < len(live); {
			unit := live[i : i+max(shared, 1)]
			if grouped {
				if err := sp.exec("SAVEPOINT group_commit"); err != nil {
					return err
				}
			}
			ev, err := a.commitWrites(ctx, tx, sp.stmts, key, h, unitWrites(unit), unit[0].opts.SwapCommit)
			if err != nil && !grouped {
				return err
			}
			if err != nil {
				if err := sp.exec("ROLLBACK TO group_commit"); err != nil {
					return err
				}
			} else if !ev.NoChange {
				h = headOf(ev)
			}
			if grouped {
				if err := sp.exec("RELEASE group_commit"); err != nil {
					return err
				}
			}
			if err != nil && len(unit) > 1 {
				shared = 0 // one of them fails: commit each alone, to fail alone
				continue
			}
			splitEvent(ev, unit, evs[i:], errs[i:], sqlite.MapError(err))
			i += len(unit)
			shared = 0
		}
		last = h
		return nil
	})
	if err != nil {
		// The transaction rolled back, or its commit failed in a way that leaves the
		// file's head unknown: read it (and the garbage list) again next time.
		a.cur.Store(nil)
		a.listed = nil
		for _, req := range live {
			req.err = err
		}
		return false
	}
	a.cur.Store(&last)
	for i, req := range live {
		ev, err := evs[i], errs[i]
		if err == nil && !ev.NoChange {
			if i == 0 || evs[i-1] == nil || evs[i-1].Forwarding != ev.Forwarding {
				if a.noteCommit(len(ev.Ops)) {
					inline = true
				}
			}
			if req.opts.OnCommit != nil {
				if herr := req.opts.OnCommit(ev); herr != nil {
					err = fmt.Errorf("commit %s is durable, forwarding it failed: %w", ev.Rev, herr)
				}
			}
		}
		// Set only now, so that a hook's panic leaves its request without an outcome.
		req.ev, req.err = ev, err
	}
	// The writer deletes replaced nodes itself, after forwarding the events, under the lock
	// it holds anyway: Store.Run never waits for a writer, whose OnCommit may be waiting
	// on the relay. The commits stand whatever the collection does.
	if a.garbage >= collectEvery || a.fresh >= collectEvery {
		if err := a.collectGarbage(ctx); err != nil {
			a.store.log.Warn("collect replaced nodes", "did", a.did, "err", err)
		}
	}
	return inline
}

// sharedPrefix is how many of the first requests of a group can share one commit: those
// with no swapCommit, whose paths all differ (so that the commit has one op per path,
// which firehose consumers rely on to invert it), with at most MaxWrites writes in all.
// It is 0 or at least 2.
func sharedPrefix(group []*writeRequest) int {
	if len(group) < 2 {
		return 0
	}
	paths := map[string]struct{}{}
	writes, n := 0, 0
requests:
	for _, req := range group {
		if req.opts.SwapCommit != nil || writes+len(req.writes) > MaxWrites {
			break
		}
		for _, w := range req.writes {
			if _, ok := paths[w.path]; ok {
				break requests
			}
		}
		for _, w := range req.writes {
			paths[w.path] = struct{}{}
		}
		writes += len(req.writes)
		n++
	}
	if n < 2 {
		return 0
	}
	return n
}

// unitWrites are the writes of requests that share a commit, in order.
func unitWrites(unit []*writeRequest) []preparedWrite {
	if len(unit) == 1 {
		return unit[0].writes
	}
	var out []preparedWrite
	for _, req := range unit {
		out = append(out, req.writes...)
	}
	return out
}

// splitEvent gives each request of unit its outcome: err, or its own copy of ev with the
// results of its writes.
func splitEvent(ev *CommitEvent, unit []*writeRequest, evs []*CommitEvent, errs []error, err error) {
	if err != nil {
		errs[0] = err
		return
	}
	if ev.Forwarding == nil && !ev.NoChange {
		ev.Forwarding = &Forwarding{}
	}
	if len(unit) == 1 {
		evs[0] = ev
		return
	}
	results := ev.Results
	for i, req := range unit {
		own := *ev
		own.Results = results[:len(req.writes):len(req.writes)]
		results = results[len(req.writes):]
		evs[i] = &own
	}
}

// headOf is the head a commit leaves.
func headOf(ev *CommitEvent) head {
	return head{commit: ev.Commit, rev: ev.Rev, data: ev.Data}
}

// prepareWrites checks everything that needs no lock or transaction, so lexicon
// validation of a batch runs in parallel with other writers of the same repo.
func (s *Store) prepareWrites(writes []Write, mode ValidationMode) ([]preparedWrite, error) {
	if len(writes) > MaxWrites {
		return nil, fmt.Errorf("%w: %d writes, at most %d per commit", ErrInvalidWrite, len(writes), MaxWrites)
	}
	out := make([]preparedWrite, len(writes))
	seen := make(map[string]struct{}, len(writes))
	for i, w := range writes {
		if !ValidNSID(string(w.Collection)) {
			return nil, fmt.Errorf("%w: write %d: collection %q is not an NSID", ErrInvalidWrite, i, w.Collection)
		}
		if w.RKey == "" {
			if w.Action != ActionCreate {
				return nil, fmt.Errorf("%w: write %d: %s needs a record key", ErrInvalidWrite, i, w.Action)
			}
			w.RKey = syntax.RecordKey(s.clock.Next("").String())
		}
		if !ValidRecordKey(string(w.RKey)) {
			return nil, fmt.Errorf("%w: write %d: %q is not a record key", ErrInvalidWrite, i, w.RKey)
		}
		p := preparedWrite{Write: w, path: string(w.Collection) + "/" + string(w.RKey)}
		if _, dup := seen[p.path]; dup {
			return nil, fmt.Errorf("%w: %s written twice in one commit", ErrInvalidWrite, p.path)
		}
		seen[p.path] = struct{}{}
		switch w.Action {
		case ActionCreate, ActionUpdate:
			if w.Record == nil {
				return nil, fmt.Errorf("%w: %s %s without a record", ErrInvalidWrite, w.Action, p.path)
			}
			if w.Record.Type != string(w.Collection) {
				return nil, fmt.Errorf("%w: %s: $type %q is not the collection", ErrInvalidRecord, p.path, w.Record.Type)
			}
			status, err := s.validator.ValidateRecord(w.Collection, w.Record.Data, mode)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.path, err)
			}
			p.status = status
		case ActionDelete:
			if w.Record != nil {
				return nil, fmt.Errorf("%w: delete %s with a record", ErrInvalidWrite, p.path)
			}
		default:
			return nil, fmt.Errorf("%w: write %d: unknown action %q", ErrInvalidWrite, i, w.Action)
		}
		out[i] = p
	}
	return out, nil
}

// blobState tracks whether a blob was referenced before the commit, to report it as added
// or removed once all writes are applied.
type blobState struct {
	had bool
}

// commitTx is the work shared by every kind of commit inside one write transaction.
type commitTx struct {
	ctx      context.Context
	db       *sqlite.DB
	tx       *sql.Tx // from db
	did      syntax.DID
	rev      syntax.TID
	revInt   int64
	blobs    map[cid.Cid]*blobState
	blobList []cid.Cid // first-touch order, so events are deterministic
	records  []Block   // new record values for the CAR slice
	stmts    map[string]*sql.Stmt
	// discarded counts the nodes put on the garbage list, fresh those put in the fresh
	// table.
	discarded int
	fresh     int
	// listed is the garbage list as of the transaction's start (nil: empty); unlisted
	// collects the CIDs the commit takes off it, removed those it puts on it.
	listed   map[cid.Cid]struct{}
	unlisted []cid.Cid
	removed  []cid.Cid
}

// stmt returns q bound to the transaction once per transaction: a batch runs the same few
// statements for every write and every tree node. The DB prepares each query once for all
// transactions, since SQLite's parser was a visible part of every commit.
func (ct *commitTx) stmt(q string) (*sql.Stmt, error) {
	if st, ok := ct.stmts[q]; ok {
		return st, nil
	}
	st, err := ct.db.Stmt(ct.ctx, ct.tx, q)
	if err != nil {
		return nil, err
	}
	if ct.stmts == nil {
		ct.stmts = make(map[string]*sql.Stmt)
	}
	ct.stmts[q] = st
	return st, nil
}

// exec runs q with args through the transaction's statement cache.
func (ct *commitTx) exec(q string, args ...any) error {
	st, err := ct.stmt(q)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ct.ctx, args...)
	return err
}

// queryRow runs q with args through the transaction's statement cache and scans one row.
func (ct *commitTx) queryRow(q string, args []any, dest ...any) error {
	st, err := ct.stmt(q)
	if err != nil {
		return err
	}
	return st.QueryRowContext(ct.ctx, args...).Scan(dest...)
}

// commitWrites applies prepared writes on top of head h, signs the new commit and stores
// everything in tx. stmts caches statements bound to tx. a.listed must be loaded.
func (a *actor) commitWrites(ctx context.Context, tx *sql.Tx, stmts map[string]*sql.Stmt, key atcrypto.PrivateKey, h head, writes []preparedWrite, swapCommit *cid.Cid) (*CommitEvent, error) {
	if swapCommit != nil && *swapCommit != h.commit {
		return nil, fmt.Errorf("%w: head is %s, not %s", ErrInvalidSwap, h.commit, *swapCommit)
	}
	ct := &commitTx{ctx: ctx, db: a.db, tx: tx, stmts: stmts, did: a.did, rev: a.store.clock.Next(h.rev), listed: a.listed}
	ct.revInt = revInt(ct.rev)
	tree := NewTree(&txBlocks{db: a.db, tx: tx}, a.store.nodes, h.data)
	ev := &CommitEvent{
		DID:      a.did,
		Rev:      ct.rev,
		Since:    h.rev,
		PrevData: h.data,
		Ops:      make([]Op, 0, len(writes)),
		Results:  make([]WriteResult, len(writes)),
	}
	keys := make([]string, 0, len(writes))
	for i, w := range writes {
		prev, err := tree.Get(ctx, w.path)
		if err != nil && !errors.Is(err, ErrRecordNotFound) {
			return nil, fmt.Errorf("look up %s: %w", w.path, err)
		}
		if err := checkSwap(w, prev); err != nil {
			return nil, err
		}
		if w.Action == ActionUpdate && prev == w.Record.CID {
			// Same value: nothing changes, and a #commit op whose cid equals its prev is
			// invalid for consumers, so the write only reports its result.
			ev.Results[i] = a.result(w)
			continue
		}
		op := Op{Action: w.Action, Path: w.path, Prev: prev}
		// The old value goes first: an update to a value sharing blobs or subjects with
		// the old one must end with those links present.
		if prev.Defined() {
			if err := ct.dropRecordValue(w.Collection, w.RKey, prev); err != nil {
				return nil, err
			}
		}
		if w.Action != ActionDelete {
			op.CID = w.Record.CID
			if err := tree.Put(ctx, w.path, w.Record.CID); err != nil {
				return nil, fmt.Errorf("put %s: %w", w.path, err)
			}
			if err := ct.addRecord(w.Collection, w.RKey, w.Record, prev.Defined()); err != nil {
				return nil, err
			}
			ev.Results[i] = a.result(w)
		} else {
			if err := tree.Delete(ctx, w.path); err != nil {
				return nil, fmt.Errorf("delete %s: %w", w.path, err)
			}
			if err := ct.exec("DELETE FROM records WHERE collection = ? AND rkey = ?", string(w.Collection), string(w.RKey)); err != nil {
				return nil, fmt.Errorf("delete record %s: %w", w.path, err)
			}
		}
		ev.Ops = append(ev.Ops, op)
		keys = append(keys, w.path)
	}
	if len(ev.Ops) == 0 && len(writes) > 0 {
		ev.NoChange = true
		ev.Rev, ev.Commit, ev.Data = h.rev, h.commit, h.data
		return ev, nil
	}
	if err := ct.finish(tree, keys, key, h, ev); err != nil {
		return nil, err
	}
	// Should the transaction not commit, commitGroup forgets the list.
	a.garbage += ct.discarded
	a.fresh += ct.fresh
	for _, c := range ct.unlisted {
		delete(a.listed, c)
	}
	for _, c := range ct.removed {
		a.listed[c] = struct{}{}
	}
	return ev, nil
}

// batchRows is the most rows one batched statement carries. A commit's statements were
// a visible share of its CPU (database/sql, binding, starting the VM) and most commits
// touch fewer nodes than this; each size in use is a statement of its own to prepare.
const batchRows = 16

// batchSQL returns head followed by n comma-separated copies of row, then tail.
func batchSQL(head, row, tail string, n int) string {
	var b strings.Builder
	b.Grow(len(head) + n*(len(row)+1) + len(tail))
	b.WriteString(head)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	b.WriteString(tail)
	return b.String()
}

// putNodes stores the new MST nodes of a commit in the fresh table (migration 0004),
// batchRows at a time. A node the tree kept (Kept) is stored already; so is a node on the
// garbage list (a commit replaced it, and a delete restored the earlier tree), which only
// comes off the list. Any other new node cannot be stored: a stored node is in the tree or
// on the list, and one in the tree with the same content, so the same keys, sits where
// the new one does, so the tree replaced or kept it.
func (ct *commitTx) putNodes(blocks []Block, kept []cid.Cid) error {
	rows := make([]Block, 0, len(blocks))
	var unlisted []any
	for _, b := range blocks {
		if slices.Contains(kept, b.CID) {
			continue
		}
		if _, ok := ct.listed[b.CID]; ok {
			ct.unlisted = append(ct.unlisted, b.CID)
			unlisted = append(unlisted, b.CID.Bytes())
			continue
		}
		rows = append(rows, b)
	}
	args := make([]any, 0, 4*min(len(rows), batchRows))
	for chunk := range slices.Chunk(rows, batchRows) {
		args = args[:0]
		for _, b := range chunk {
			args = append(args, freshTag(b.CID), b.CID.Bytes(), ct.revInt, b.Data)
		}
		if err := ct.exec(batchSQL("INSERT INTO fresh (tag, cid, rev, data) VALUES ", "(?, ?, ?, ?)", "", len(chunk)), args...); err != nil {
			return fmt.Errorf("store %d blocks: %w", len(chunk), err)
		}
	}
	ct.fresh += len(rows)
	for chunk := range slices.Chunk(unlisted, batchRows) {
		if err := ct.exec(batchSQL("DELETE FROM garbage WHERE cid IN (", "?", ")", len(chunk)), chunk...); err != nil {
			return fmt.Errorf("keep %d listed blocks: %w", len(chunk), err)
		}
	}
	return nil
}

// freshTag is the key of c in the fresh table's index: the last 31 bits of its digest,
// uniformly random for the SHA-256 CIDs of MST nodes, kept positive so SQLite stores it in
// four bytes. Any CID has a tag, so a lookup of one from a request needs no check.
func freshTag(c cid.Cid) int64 {
	var tag uint32
	k := c.KeyString()
	for i := max(0, len(k)-4); i < len(k); i++ {
		tag = tag<<8 | uint32(k[i])
	}
	return int64(tag & 0x7fffffff)
}

// discardNodes puts the CIDs of MST nodes the commit replaced on the garbage list, for
// the actor to delete later in bulk (migration 0003).
func (ct *commitTx) discardNodes(cids []cid.Cid) error {
	args := make([]any, 0, min(len(cids), batchRows))
	for chunk := range slices.Chunk(cids, batchRows) {
		args = args[:0]
		for _, c := range chunk {
			args = append(args, c.Bytes())
		}
		if err := ct.exec(batchSQL("INSERT INTO garbage (cid) VALUES ", "(?)", "", len(chunk)), args...); err != nil {
			return fmt.Errorf("list %d replaced nodes: %w", len(chunk), err)
		}
	}
	ct.discarded += len(cids)
	ct.removed = append(ct.removed, cids...)
	return nil
}

// result is the answer to a create or update.
func (a *actor) result(w preparedWrite) WriteResult {
	return WriteResult{
		URI:              syntax.ATURI("at://" + string(a.did) + "/" + w.path),
		CID:              w.Record.CID,
		ValidationStatus: w.status,
	}
}

// checkSwap applies a write's swap and existence rules against the path's current value.
func checkSwap(w preparedWrite, prev cid.Cid) error {
	if w.SwapRecord != nil && *w.SwapRecord != prev {
		if prev.Defined() {
			return fmt.Errorf("%w: %s is %s", ErrInvalidSwap, w.path, prev)
		}
		return fmt.Errorf("%w: %s does not exist", ErrInvalidSwap, w.path)
	}
	switch {
	case w.Action == ActionCreate && prev.Defined():
		return fmt.Errorf("%s: %w", w.path, ErrRecordExists)
	case w.Action != ActionCreate && !prev.Defined():
		return fmt.Errorf("%s: %w", w.path, ErrRecordNotFound)
	}
	return nil
}

// addRecord stores a record value and indexes it under collection/rkey. replace says the
// path already has a row (an update).
func (ct *commitTx) addRecord(collection syntax.NSID, rkey syntax.RecordKey, rec *Record, replace bool) error {
	// A value shared by several records is stored once and counted.
	err := ct.exec(
		"INSERT INTO blocks (cid, rev, refs, data) VALUES (?, ?, 1, ?) ON CONFLICT (cid) DO UPDATE SET refs = refs + 1",
		rec.CID.Bytes(), ct.revInt, rec.CBOR)
	if err != nil {
		return fmt.Errorf("store record %s/%s: %w", collection, rkey, err)
	}
	ct.records = append(ct.records, Block{CID: rec.CID, Data: rec.CBOR})
	if replace {
		err = ct.exec("UPDATE records SET cid = ?, rev = ? WHERE collection = ? AND rkey = ?",
			rec.CID.Bytes(), ct.revInt, string(collection), string(rkey))
	} else {
		err = ct.exec("INSERT INTO records (collection, rkey, cid, rev) VALUES (?, ?, ?, ?)",
			string(collection), string(rkey), rec.CID.Bytes(), ct.revInt)
	}
	if err != nil {
		return fmt.Errorf("index record %s/%s: %w", collection, rkey, err)
	}
	return ct.indexLinks(collection, rkey, rec.Data, true)
}

// dropRecordValue releases the value a path had before this commit: its blob references
// and backlinks go, and its block goes when no other record uses it.
func (ct *commitTx) dropRecordValue(collection syntax.NSID, rkey syntax.RecordKey, prev cid.Cid) error {
	var refs int64
	var data []byte
	err := ct.queryRow("UPDATE blocks SET refs = refs - 1 WHERE cid = ? RETURNING refs, data", []any{prev.Bytes()}, &refs, &data)
	if err != nil {
		return fmt.Errorf("release record %s/%s value %s: %w", collection, rkey, prev, err)
	}
	if refs <= 0 {
		if err := ct.exec("DELETE FROM blocks WHERE cid = ?", prev.Bytes()); err != nil {
			return fmt.Errorf("delete record block %s: %w", prev, err)
		}
	}
	old, err := RecordFromCBOR(data)
	if err != nil {
		return fmt.Errorf("decode old value of %s/%s: %w", collection, rkey, err)
	}
	return ct.indexLinks(collection, rkey, old.Data, false)
}

// indexLinks adds (add) or removes the blob references and backlinks of one record value.
func (ct *commitTx) indexLinks(collection syntax.NSID, rkey syntax.RecordKey, data map[string]any, add bool) error {
	for _, b := range BlobRefs(data) {
		if err := ct.touchBlob(b); err != nil {
			return err
		}
		var err error
		if add {
			err = ct.exec("INSERT INTO blob_refs (blob, collection, rkey) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
				b.Bytes(), string(collection), string(rkey))
		} else {
			err = ct.exec("DELETE FROM blob_refs WHERE blob = ? AND collection = ? AND rkey = ?",
				b.Bytes(), string(collection), string(rkey))
		}
		if err != nil {
			return fmt.Errorf("index blob %s of %s/%s: %w", b, collection, rkey, err)
		}
	}
	for _, subject := range backlinkSubjects(data) {
		var err error
		if add {
			err = ct.exec("INSERT INTO backlinks (subject, collection, rkey) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
				subject, string(collection), string(rkey))
		} else {
			err = ct.exec("DELETE FROM backlinks WHERE subject = ? AND collection = ? AND rkey = ?",
				subject, string(collection), string(rkey))
		}
		if err != nil {
			return fmt.Errorf("index backlink of %s/%s: %w", collection, rkey, err)
		}
	}
	return nil
}

// touchBlob records, the first time a commit touches blob b, whether any record
// referenced it before the commit.
func (ct *commitTx) touchBlob(b cid.Cid) error {
	if _, ok := ct.blobs[b]; ok {
		return nil
	}
	had, err := ct.blobReferenced(b)
	if err != nil {
		return err
	}
	if ct.blobs == nil {
		ct.blobs = make(map[cid.Cid]*blobState)
	}
	ct.blobs[b] = &blobState{had: had}
	ct.blobList = append(ct.blobList, b)
	return nil
}

// blobReferenced reports whether any record references blob b.
func (ct *commitTx) blobReferenced(b cid.Cid) (bool, error) {
	return blobReferenced(ct.queryRow, b)
}

// blobReferenced reports whether any record references blob b, querying through q.
func blobReferenced(q func(query string, args []any, dest ...any) error, b cid.Cid) (bool, error) {
	var one int
	err := q("SELECT 1 FROM blob_refs WHERE blob = ? LIMIT 1", []any{b.Bytes()}, &one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up blob %s: %w", b, err)
	}
	return true, nil
}

// finish flushes the tree, removes unreachable nodes, signs the new commit and stores it
// in the root row in place of the previous one, moves the head and fills ev's commit, blocks and blob lists.
func (ct *commitTx) finish(tree *Tree, keys []string, key atcrypto.PrivateKey, prev head, ev *CommitEvent) error {
	delta, err := tree.Flush(ct.ctx)
	if err != nil {
		return fmt.Errorf("flush tree: %w", err)
	}
	// Inversion proof nodes come from the new tree, before its blocks are stored: the
	// tree may still need to read unchanged ones.
	inversion, err := tree.InversionBlocks(ct.ctx, keys)
	if err != nil {
		return fmt.Errorf("collect inversion blocks: %w", err)
	}
	if err := ct.discardNodes(delta.Removed); err != nil {
		return err
	}
	if err := ct.putNodes(delta.NewBlocks, delta.Kept); err != nil {
		return err
	}

	commitCID, commitBytes, err := signCommit(ct.did, ct.rev, delta.Root, key)
	if err != nil {
		return err
	}
	// The commit goes into the root row with the head it names, replacing the previous
	// one (migration 0002).
	err = ct.exec(
		"INSERT INTO root (id, commit_cid, rev, data_cid, commit_block) VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET commit_cid = excluded.commit_cid, rev = excluded.rev, data_cid = excluded.data_cid, commit_block = excluded.commit_block",
		commitCID.Bytes(), string(ct.rev), delta.Root.Bytes(), commitBytes)
	if err != nil {
		return fmt.Errorf("move head: %w", err)
	}

	for _, b := range ct.blobList {
		has, err := ct.blobReferenced(b)
		if err != nil {
			return err
		}
		switch had := ct.blobs[b].had; {
		case has && !had:
			ev.BlobsAdded = append(ev.BlobsAdded, b)
		case had && !has:
			ev.BlobsRemoved = append(ev.BlobsRemoved, b)
		}
	}

	ev.Commit = commitCID
	ev.Data = delta.Root
	ev.Blocks, err = commitSlice(commitCID, commitBytes, delta.NewBlocks, inversion, ct.records)
	if err != nil {
		return err
	}
	if len(ev.Blocks) > MaxCommitBlocks {
		return fmt.Errorf("%w: commit blocks are %d bytes, at most %d", ErrTooLarge, len(ev.Blocks), MaxCommitBlocks)
	}
	return nil
}

// signCommit builds, signs and encodes the repo v3 commit naming data.
func signCommit(did syntax.DID, rev syntax.TID, data cid.Cid, key atcrypto.PrivateKey) (cid.Cid, []byte, error) {
	c := Commit{DID: did, Version: CommitVersion, Data: data, Rev: rev}
	if err := c.Sign(key); err != nil {
		return cid.Undef, nil, fmt.Errorf("sign commit: %w", err)
	}
	raw, c2, err := c.Encode()
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("encode commit: %w", err)
	}
	return c2, raw, nil
}

// commitSlice writes the CAR slice of a commit: the commit first (it is the root), then
// each other block once.
func commitSlice(commitCID cid.Cid, commit []byte, groups ...[]Block) ([]byte, error) {
	var buf bytes.Buffer
	size := len(commit) + 64
	for _, g := range groups {
		for _, b := range g {
			size += len(b.Data) + 48
		}
	}
	buf.Grow(size)
	if err := WriteCARHeader(&buf, commitCID); err != nil {
		return nil, err
	}
	if err := WriteCARBlock(&buf, commitCID, commit); err != nil {
		return nil, err
	}
	seen := make(map[cid.Cid]struct{}, size/256)
	seen[commitCID] = struct{}{}
	for _, g := range groups {
		for _, b := range g {
			if _, ok := seen[b.CID]; ok {
				continue
			}
			seen[b.CID] = struct{}{}
			if err := WriteCARBlock(&buf, b.CID, b.Data); err != nil {
				return nil, err
			}
		}
	}
	return buf.Bytes(), nil
}

// genesis writes the first commit of a new repo: an empty tree under a signed commit.
func (a *actor) genesis(ctx context.Context, key atcrypto.PrivateKey) (*CommitEvent, error) {
	var ev *CommitEvent
	err := a.db.Write(ctx, func(tx *sql.Tx) error {
		ct := &commitTx{ctx: ctx, db: a.db, tx: tx, did: a.did, rev: a.store.clock.Next("")}
		ct.revInt = revInt(ct.rev)
		ev = &CommitEvent{DID: a.did, Rev: ct.rev}
		tree := NewTree(&txBlocks{db: a.db, tx: tx}, a.store.nodes, cid.Undef)
		return ct.finish(tree, nil, key, head{}, ev)
	})
	if err != nil {
		return nil, err
	}
	return ev, nil
}

// backlinkSubjects returns what a record value points at, for the backlinks table: the
// subject of likes, reposts, follows, blocks and list items (a DID string or a strong ref's
// uri) and the parent of a reply.
func backlinkSubjects(data map[string]any) []string {
	var out []string
	switch v := data["subject"].(type) {
	case string:
		out = append(out, v)
	case map[string]any:
		if uri, ok := v["uri"].(string); ok {
			out = append(out, uri)
		}
	}
	if reply, ok := data["reply"].(map[string]any); ok {
		if parent, ok := reply["parent"].(map[string]any); ok {
			if uri, ok := parent["uri"].(string); ok {
				out = append(out, uri)
			}
		}
	}
	return out
}
