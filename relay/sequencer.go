package relay

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/sqlite"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

const (
	// submitQueue is how many submissions may wait while a batch commits. Writers beyond it
	// block in Submit (bounded by their context), which is the back-pressure we want.
	submitQueue = 4096
	// maxBatch bounds one log transaction: big enough to amortise the commit's fsync over
	// thousands of events per second, small enough that a batch commits in milliseconds.
	maxBatch = 512
	// pruneInterval is how often retention pruning runs; retention is hours, so minutes of
	// slack do not matter.
	pruneInterval = 5 * time.Minute
	// checkpointInterval is how often Run checkpoints the log in the background while it
	// is written, so that sequencer batches do not pay for the copying themselves.
	checkpointInterval = time.Second
	// pruneChunk bounds one pruning transaction so that sequencer batches, which share the
	// single writer connection, wait at most one chunk.
	pruneChunk = 2000
)

// Sequencer assigns seqs, appends events to relay.sqlite in batched transactions and
// publishes them to subscriptions. Build it with Open, run it with Run, close it with Close.
type Sequencer struct {
	db        *sqlite.DB
	log       *slog.Logger
	retention time.Duration
	// now is the clock for event times and pruning; tests replace it before Run.
	now func() time.Time

	submits chan *pending
	started atomic.Bool
	stopped chan struct{} // closed when Run has returned

	// lastSeq is the highest persisted seq; written only by the Run loop.
	lastSeq atomic.Int64
	// prunedThrough is the highest seq deleted by retention.
	prunedThrough atomic.Int64
	win           *window
}

// pending is one Submit waiting for its batch to commit.
type pending struct {
	ev   *Event
	done chan error // buffered: the Run loop never blocks on a submitter
}

// Open opens (creating and migrating) the event log at path. It starts no goroutine; call Run.
func Open(ctx context.Context, path string, cfg Config, log *slog.Logger) (*Sequencer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open relay log: %w", err)
	}
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("open relay log: %w", err)
	}
	db, err := sqlite.Open(ctx, path, sqlite.Options{Synchronous: cfg.Synchronous, Migrations: migrations})
	if err != nil {
		return nil, fmt.Errorf("open relay log: %w", err)
	}
	var last, pruned int64
	err = db.Read(ctx, func(tx *sql.Tx) error {
		// The next seq must be above every seq ever handed out, even when retention emptied
		// the events table: consumers treat a repeated seq as already processed.
		err := tx.QueryRowContext(ctx, `SELECT max(
			coalesce((SELECT max(seq) FROM events), 0),
			coalesce((SELECT max(seq) FROM repos), 0),
			coalesce((SELECT value FROM meta WHERE key = 'pruned_through'), 0))`).Scan(&last)
		if err != nil {
			return fmt.Errorf("read last seq: %w", err)
		}
		err = tx.QueryRowContext(ctx, `SELECT coalesce((SELECT value FROM meta WHERE key = 'pruned_through'), 0)`).Scan(&pruned)
		if err != nil {
			return fmt.Errorf("read pruned seq: %w", err)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open relay log: %w", err)
	}
	s := &Sequencer{
		db:        db,
		log:       log.With("component", "relay"),
		retention: cfg.Retention,
		now:       time.Now,
		submits:   make(chan *pending, submitQueue),
		stopped:   make(chan struct{}),
		win:       newWindow(cfg.WindowEvents, cfg.WindowBytes, last),
	}
	s.lastSeq.Store(last)
	s.prunedThrough.Store(pruned)
	return s, nil
}

// Close closes the log file. Call it after Run has returned.
func (s *Sequencer) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close relay log: %w", err)
	}
	return nil
}

// LastSeq returns the highest persisted seq (0 for an empty log).
func (s *Sequencer) LastSeq() int64 { return s.lastSeq.Load() }

// LastRev returns the rev of the newest #commit or #sync sequenced for did, or "" when the
// log has none. Retention does not forget it, so the node's startup repair can compare it
// with the repo's head.
func (s *Sequencer) LastRev(ctx context.Context, did syntax.DID) (syntax.TID, error) {
	var rev string
	err := s.db.Read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT rev FROM repos WHERE did = ?`, did.String()).Scan(&rev)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read last rev of %s: %w", did, err)
	}
	return syntax.TID(rev), nil
}

// Submit sequences ev and returns its seq once it is persisted in the log (and published to
// subscribers). Submit takes ownership of ev: it fills Seq and Time, and ev must not be
// modified afterwards. It returns ErrInvalidEvent for a malformed event, ErrClosed when Run
// has ended, or ctx's error; when ctx ends after the event was handed to the sequencer, the
// event may still be persisted.
//
// Callers that need per-DID order (the repo write hook) call Submit while holding the
// repo's writer, so seq order is rev order.
func (s *Sequencer) Submit(ctx context.Context, ev *Event) (int64, error) {
	if err := ev.check(); err != nil {
		return 0, err
	}
	p := &pending{ev: ev, done: make(chan error, 1)}
	select {
	case s.submits <- p:
	case <-s.stopped:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, fmt.Errorf("submit %s: %w", ev.Kind(), ctx.Err())
	}
	select {
	case err := <-p.done:
		if err != nil {
			return 0, err
		}
		return ev.Seq, nil
	case <-s.stopped:
		// Run replies to every submission it took before it stops; one it did not take
		// was never persisted.
		select {
		case err := <-p.done:
			if err != nil {
				return 0, err
			}
			return ev.Seq, nil
		default:
			return 0, ErrClosed
		}
	case <-ctx.Done():
		return 0, fmt.Errorf("submit %s: %w", ev.Kind(), ctx.Err())
	}
}

// Enqueue hands ev to the sequencer and returns at once; the channel then yields what
// Submit would have returned (nil once ev is in the log, with ev.Seq set). Events enqueued
// by one goroutine are sequenced in that order, so a caller that does not need each
// acknowledgement before the next event (the crawler) lets the sequencer batch them. If
// the sequencer stops before taking ev, the channel never yields: select on ctx too.
func (s *Sequencer) Enqueue(ctx context.Context, ev *Event) (<-chan error, error) {
	if err := ev.check(); err != nil {
		return nil, err
	}
	p := &pending{ev: ev, done: make(chan error, 1)}
	select {
	case s.submits <- p:
		return p.done, nil
	case <-s.stopped:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("submit %s: %w", ev.Kind(), ctx.Err())
	}
}

// Run sequences submissions until ctx ends, and prunes the log by retention in the
// background. It returns nil when ctx ends; it may be called once.
func (s *Sequencer) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("relay: Run called twice")
	}
	var wg sync.WaitGroup
	pruneCtx, stopPrune := context.WithCancel(ctx)
	wg.Go(func() { s.pruneLoop(pruneCtx) })
	wg.Go(func() {
		if err := s.db.RunCheckpoints(pruneCtx, checkpointInterval); err != nil {
			s.log.Warn("background checkpoints of the relay log stopped; commits checkpoint instead", "err", err)
		}
	})
	defer func() {
		stopPrune()
		wg.Wait()
		s.win.close()
		close(s.stopped)
	}()

	s.log.Info("sequencer running", "seq", s.LastSeq())
	batch := make([]*pending, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case p := <-s.submits:
			batch = append(batch, p)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case p := <-s.submits:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		// A batch that was taken is finished even when ctx ends meanwhile: its submitters
		// are told the truth, and the repo commits behind it are durable already.
		s.commit(context.WithoutCancel(ctx), batch)
	}
}

// commit persists one batch, then publishes it, then acknowledges the submitters.
func (s *Sequencer) commit(ctx context.Context, batch []*pending) {
	now := s.now()
	seq := s.lastSeq.Load()
	evs := make([]*Event, 0, len(batch))
	ok := batch[:0:0]
	for _, p := range batch {
		p.ev.setSeq(seq+1, now)
		if err := p.ev.encode(); err != nil {
			p.done <- fmt.Errorf("sequence %s: %w", p.ev.Kind(), err)
			continue
		}
		seq++
		evs = append(evs, p.ev)
		ok = append(ok, p)
	}
	if len(evs) == 0 {
		return
	}
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		// Statements prepared once for the file: a batch is often a few events, and
		// parsing and planning the insert would cost more than running it.
		ins, err := s.db.Stmt(ctx, tx, `INSERT INTO events (seq, kind, did, time, frame, remote) VALUES (?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return fmt.Errorf("prepare insert: %w", err)
		}
		var upsert *sql.Stmt
		for _, ev := range evs {
			if _, err := ins.ExecContext(ctx, ev.Seq, ev.Kind(), ev.DID(), ev.Time.UnixMicro(), ev.frame, ev.Remote); err != nil {
				return fmt.Errorf("insert seq %d: %w", ev.Seq, err)
			}
			rev := ev.rev()
			if rev == "" || ev.Remote { // startup repair compares only local repos
				continue
			}
			if upsert == nil {
				upsert, err = s.db.Stmt(ctx, tx, `INSERT INTO repos (did, rev, seq) VALUES (?, ?, ?)
					ON CONFLICT (did) DO UPDATE SET rev = excluded.rev, seq = excluded.seq`)
				if err != nil {
					return fmt.Errorf("prepare repo upsert: %w", err)
				}
			}
			if _, err := upsert.ExecContext(ctx, ev.DID(), rev, ev.Seq); err != nil {
				return fmt.Errorf("record rev of seq %d: %w", ev.Seq, err)
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("append %d events to the log: %w", len(evs), err)
		s.log.Error("sequencing failed", "err", err, "events", len(evs))
		for _, p := range ok {
			p.done <- err
		}
		return
	}
	s.lastSeq.Store(seq)
	// Acknowledge before publishing: the events are durable already, and the append wakes
	// every stream, which the runtime runs ahead of the woken submitters (an HTTP handler
	// waiting here would otherwise queue behind a thousand firehose goroutines).
	for _, p := range ok {
		p.done <- nil
	}
	s.win.append(evs)
}

// pruneLoop prunes once at start and then every pruneInterval until ctx ends.
func (s *Sequencer) pruneLoop(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		if n, err := s.prune(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("pruning the relay log failed", "err", err)
		} else if n > 0 {
			s.log.Info("pruned the relay log", "events", n, "seq", s.prunedThrough.Load())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// prune deletes the oldest events sequenced more than retention ago, in chunks, and returns
// how many it deleted. Times follow seq order (one sequencer, one clock), so it walks from
// the oldest seq and stops at the first recent event: the work is proportional to what it
// deletes, with no index on time.
func (s *Sequencer) prune(ctx context.Context) (int, error) {
	cutoff := s.now().Add(-s.retention).UnixMicro()
	total := 0
	for {
		var n int
		var through int64
		err := s.db.Write(ctx, func(tx *sql.Tx) error {
			// 2^53 stands for "no recent event": every held event is prunable.
			err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0), count(*) FROM (
				SELECT seq FROM events WHERE seq < coalesce(
					(SELECT seq FROM events WHERE time >= ? ORDER BY seq LIMIT 1), 9007199254740992)
				ORDER BY seq LIMIT ?)`, cutoff, pruneChunk).Scan(&through, &n)
			if err != nil {
				return fmt.Errorf("find prunable events: %w", err)
			}
			if n == 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE seq <= ?`, through); err != nil {
				return fmt.Errorf("delete events: %w", err)
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('pruned_through', ?)
				ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)`, through)
			if err != nil {
				return fmt.Errorf("record pruned seq: %w", err)
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("prune relay log: %w", err)
		}
		if n > 0 {
			s.prunedThrough.Store(max(s.prunedThrough.Load(), through))
		}
		total += n
		if n < pruneChunk {
			return total, nil
		}
	}
}
