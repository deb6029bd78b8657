package relay

import (
	"context"
	"database/sql"
	"fmt"
)

// Live is the cursor that asks Subscribe for new events only, with no replay.
const Live int64 = -1

const (
	// nextMaxEvents and nextMaxBytes bound one Next batch: large enough that a busy stream
	// is written in few big writes, small enough to keep a subscriber's copy of the window
	// (and one log read) to a few MiB.
	nextMaxEvents = 1024
	nextMaxBytes  = 4 << 20
)

// Subscription reads the stream from a cursor: first from the log, then from the live window
// without a gap or a duplicate. It belongs to one goroutine.
type Subscription struct {
	s *Sequencer
	// raw subscriptions (the firehose) skip decoding log rows: they only send frames.
	raw bool
	// cutOff subscriptions fail with ErrConsumerTooSlow when they fall behind the window;
	// others go back to reading the log.
	cutOff bool
	// localOnly subscriptions (the PDS firehose) skip events the crawler brought in.
	localOnly bool

	last     int64  // seq of the last event delivered (or the cursor)
	live     bool   // reading the window at pos
	pos      uint64 // absolute window position of the next event
	outdated bool
	buf      []*Event
}

// Subscribe returns a subscription to every event with seq > cursor, or with cursor Live
// (-1) to events sequenced from now on. It returns ErrFutureCursor when cursor is above
// LastSeq. When events after cursor were already pruned, the subscription starts at the
// oldest event held and Outdated reports true (the firehose sends #info OutdatedCursor).
//
// The indexer uses one with its durable cursor: when it falls behind the live window it
// reads the log again, so a slow indexer is never cut off.
func (s *Sequencer) Subscribe(cursor int64) (*Subscription, error) {
	return s.subscribe(cursor, false, false, false)
}

func (s *Sequencer) subscribe(cursor int64, raw, cutOff, localOnly bool) (*Subscription, error) {
	sub := &Subscription{s: s, raw: raw, cutOff: cutOff, localOnly: localOnly}
	if cursor < 0 {
		sub.live = true
		sub.pos, sub.last = s.win.head()
		return sub, nil
	}
	if last := s.LastSeq(); cursor > last {
		return nil, fmt.Errorf("%w: cursor %d, last seq %d", ErrFutureCursor, cursor, last)
	}
	sub.last = cursor
	if pruned := s.prunedThrough.Load(); cursor < pruned {
		sub.last, sub.outdated = pruned, true
	}
	return sub, nil
}

// Outdated reports whether events after the cursor had been pruned when the subscription
// started.
func (sub *Subscription) Outdated() bool { return sub.outdated }

// Next blocks until at least one event is available and returns the next events in seq
// order. The slice is reused by the following call; the events are shared and read-only.
// It returns ErrClosed once the sequencer stops, ctx's error when ctx ends,
// ErrOutdatedCursor when events it had yet to deliver were pruned meanwhile, and (for a
// firehose stream) ErrConsumerTooSlow.
func (sub *Subscription) Next(ctx context.Context) ([]*Event, error) {
	sub.buf = sub.buf[:0]
	for {
		select {
		case <-sub.s.stopped:
			return nil, ErrClosed
		default:
		}
		if !sub.live {
			if pos, ok := sub.s.win.positionAfter(sub.last); ok {
				sub.live, sub.pos = true, pos
				continue
			}
			evs, scanned, err := sub.readLog(ctx)
			if err != nil {
				return nil, err
			}
			if scanned > sub.last {
				sub.last = scanned
			}
			if len(evs) > 0 {
				return evs, nil
			}
			// Nothing to deliver: the rows read were all remote, or the window evicted
			// something after last that the log no longer has (a pruning race, which
			// readLog reports next time).
			continue
		}
		evs, pos, wake, st := sub.s.win.read(sub.buf, sub.pos, nextMaxEvents, nextMaxBytes)
		switch st {
		case readClosed:
			return nil, ErrClosed
		case readLagged:
			if sub.cutOff {
				return nil, ErrConsumerTooSlow
			}
			sub.live = false
			continue
		}
		sub.buf, sub.pos = evs, pos
		// LastSeq moves before the window is appended to, so a subscription that started
		// from a cursor in that instant sits at a position that is then filled with events
		// it has already had from the cursor: skip them.
		for len(evs) > 0 && evs[0].Seq <= sub.last {
			evs = evs[1:]
		}
		if len(evs) > 0 {
			sub.last = evs[len(evs)-1].Seq
		}
		if sub.localOnly {
			evs = dropRemote(evs)
		}
		if len(evs) > 0 {
			return evs, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// dropRemote filters evs in place down to local events.
func dropRemote(evs []*Event) []*Event {
	out := evs[:0]
	for _, ev := range evs {
		if !ev.Remote {
			out = append(out, ev)
		}
	}
	return out
}

// readLog reads the next events after sub.last from the log, in one snapshot, and returns
// them with the highest seq it read (remote rows a localOnly subscription skips count too).
func (sub *Subscription) readLog(ctx context.Context) ([]*Event, int64, error) {
	evs := sub.buf[:0]
	var scanned int64
	err := sub.s.db.Read(ctx, func(tx *sql.Tx) error {
		var pruned int64
		err := tx.QueryRowContext(ctx, `SELECT coalesce((SELECT value FROM meta WHERE key = 'pruned_through'), 0)`).Scan(&pruned)
		if err != nil {
			return fmt.Errorf("read pruned seq: %w", err)
		}
		if pruned > sub.last {
			if sub.cutOff {
				return ErrConsumerTooSlow
			}
			return fmt.Errorf("%w: next seq after %d, pruned through %d", ErrOutdatedCursor, sub.last, pruned)
		}
		// A skipped remote row's frame is not read at all.
		rows, err := tx.QueryContext(ctx, `SELECT seq, remote, CASE WHEN ? AND remote THEN NULL ELSE frame END
			FROM events WHERE seq > ? ORDER BY seq LIMIT ?`, sub.localOnly, sub.last, nextMaxEvents)
		if err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		defer rows.Close()
		size := 0
		for rows.Next() {
			var seq int64
			var remote bool
			var frame []byte
			if err := rows.Scan(&seq, &remote, &frame); err != nil {
				return fmt.Errorf("read log: %w", err)
			}
			scanned = seq
			if remote && sub.localOnly {
				continue
			}
			ev := &Event{Seq: seq, frame: frame}
			if !sub.raw {
				if ev, err = DecodeFrame(frame); err != nil {
					return fmt.Errorf("decode logged seq %d: %w", seq, err)
				}
			}
			ev.Remote = remote
			evs = append(evs, ev)
			if size += len(frame); size >= nextMaxBytes {
				break
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("replay after seq %d: %w", sub.last, err)
	}
	sub.buf = evs
	return evs, scanned, nil
}
