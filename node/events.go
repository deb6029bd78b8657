package node

import (
	"context"
	"database/sql"
	"fmt"
	"sync"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/relay"
	"github.com/aerie-social/aerie/repo"
)

// sequenceCommit hands a repo commit to the relay. It runs inside the repo's write lock, so
// per-DID seq order is rev order, and returns only once the event is in the log: a write is
// acknowledged after its event is durable.
func (n *Node) sequenceCommit(ctx context.Context, ce *repo.CommitEvent) (int64, error) {
	// The commit is durable already; finish sequencing it even if the client went away.
	seq, err := n.seq.Submit(context.WithoutCancel(ctx), relay.NewCommit(ce))
	if err != nil {
		return 0, fmt.Errorf("sequence commit %s of %s: %w", ce.Rev, ce.DID, err)
	}
	return seq, nil
}

// queuedCommit is a repo commit handed to the sequencer but not yet known to be in the log.
// The calls whose writes share the commit wait for it together.
type queuedCommit struct {
	ev   *relay.Event
	done <-chan error
	once sync.Once
	seq  int64
	err  error
}

// enqueueCommit hands a repo commit to the relay without waiting for the log. Called inside
// the repo's write lock, it keeps per-DID seq order equal to rev order while the next
// commit to the same repo proceeds beside this one's sequencing; the writer waits with
// awaitCommit before it acknowledges.
func (n *Node) enqueueCommit(ctx context.Context, ce *repo.CommitEvent) (*queuedCommit, error) {
	ev := relay.NewCommit(ce)
	done, err := n.seq.Enqueue(context.WithoutCancel(ctx), ev)
	if err != nil {
		return nil, fmt.Errorf("sequence commit %s of %s: %w", ce.Rev, ce.DID, err)
	}
	return &queuedCommit{ev: ev, done: done}, nil
}

// awaitCommit returns the seq of an enqueued commit once it is in the log.
func (n *Node) awaitCommit(ctx context.Context, q *queuedCommit) (int64, error) {
	q.once.Do(func() {
		// The commit is durable already; finish sequencing it even if the client went away.
		q.seq, q.err = n.seq.Wait(context.WithoutCancel(ctx), q.ev, q.done)
		if q.err != nil {
			q.err = fmt.Errorf("sequence commit %s: %w", q.ev.Kind(), q.err)
		}
	})
	return q.seq, q.err
}

// repairAfterCrash runs after an unclean shutdown: the repo transaction commits before the
// event log, so a crash between the two leaves a repo ahead of the log. Each such repo gets
// a #sync with its current commit, which tells consumers to re-fetch it. After a clean
// shutdown nothing is scanned.
func (n *Node) repairAfterCrash(ctx context.Context) error {
	var clean string
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'clean_shutdown'").Scan(&clean)
		if err != nil && err != sql.ErrNoRows {
			return err
		}
		// From now on a crash is unclean until close marks it otherwise.
		_, err = tx.ExecContext(ctx, "INSERT INTO meta (key, value) VALUES ('clean_shutdown', '0') ON CONFLICT (key) DO UPDATE SET value = '0'")
		return err
	})
	if err != nil {
		return fmt.Errorf("read shutdown state: %w", err)
	}
	switch clean {
	case "1":
		return nil
	case "":
		// A data dir this version has never run on: nothing was written before.
		return nil
	}
	var dids []string
	err = n.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT did FROM account WHERE deactivated_at IS NULL AND takedown_ref IS NULL")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				return err
			}
			dids = append(dids, d)
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("list accounts for repair: %w", err)
	}
	repaired := 0
	for _, d := range dids {
		did := syntax.DID(d)
		_, rev, _, err := n.repos.Head(ctx, did)
		if err != nil {
			n.log.WarnContext(ctx, "repair: cannot read repo head", "did", d, "err", err)
			continue
		}
		logged, err := n.seq.LastRev(ctx, did)
		if err != nil {
			return err
		}
		if logged == "" || logged.String() < rev.String() {
			if err := n.emitSync(ctx, did); err != nil {
				return fmt.Errorf("repair %s: %w", d, err)
			}
			repaired++
		}
	}
	n.log.InfoContext(ctx, "checked repos after an unclean shutdown", "accounts", len(dids), "repaired", repaired)
	return nil
}

// markCleanShutdown records that every acknowledged commit reached the log.
func (n *Node) markCleanShutdown(ctx context.Context) error {
	return n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE meta SET value = '1' WHERE key = 'clean_shutdown'")
		return err
	})
}
