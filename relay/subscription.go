package relay

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
)

// Live is the cursor that asks Subscribe for new events only, with no replay.
const Live int64 = -1

const (
	// nextMaxEvents and nextMaxBytes bound one Next batch: large enough that a busy stream
	// is written in few big writes, small enough to keep a subscriber's copy of the window
	// (and one log read) to a few MiB.
	nextMaxEvents = 1024
	nextMaxBytes  = 4 << 20
	// keptWireBuffers bounds the buffer list a firehose stream keeps between batches: a
	// live batch is a few runs of adjacent events, but one that interleaves remote events
	// with local ones can take a buffer per event, which a thousand idle streams should
	// not each hold on to.
	keptWireBuffers = 64
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
	// wire is a raw subscription's batch of WebSocket messages: slices of the window's
	// shared chunks, or of replay, where events read from the log are framed.
	wire   net.Buffers
	replay []byte
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
	if err := sub.next(ctx); err != nil {
		return nil, err
	}
	return sub.buf, nil
}

// nextWire is Next for a raw subscription (the firehose): it returns the next events as
// whole WebSocket binary messages, ready to write. The buffers are read-only (most are
// shared with every other stream) and valid until the next call; the list itself is the
// caller's to consume, as net.Buffers.WriteTo does.
func (sub *Subscription) nextWire(ctx context.Context) (net.Buffers, error) {
	if cap(sub.wire) > keptWireBuffers {
		sub.wire = nil
	}
	sub.wire = sub.wire[:0]
	if err := sub.next(ctx); err != nil {
		return nil, err
	}
	return sub.wire, nil
}

// next waits for at least one event and puts the next ones in sub.buf, or for a raw
// subscription in sub.wire, both empty on entry.
func (sub *Subscription) next(ctx context.Context) error {
	for {
		select {
		case <-sub.s.stopped:
			return ErrClosed
		default:
		}
		if !sub.live {
			if pos, ok := sub.s.win.positionAfter(sub.last); ok {
				sub.live, sub.pos = true, pos
				sub.replay = nil // a stream that caught up has no more use for it
				continue
			}
			n, scanned, err := sub.readLog(ctx)
			if err != nil {
				return err
			}
			if scanned > sub.last {
				sub.last = scanned
			}
			if n > 0 {
				return nil
			}
			// Nothing to deliver: the rows read were all remote, or the window evicted
			// something after last that the log no longer has (a pruning race, which
			// readLog reports next time).
			continue
		}
		n, wake, st := sub.readWindow()
		switch st {
		case readClosed:
			return ErrClosed
		case readLagged:
			if sub.cutOff {
				return ErrConsumerTooSlow
			}
			sub.live = false
			continue
		}
		if n > 0 {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readWindow takes what the window holds from sub.pos on and returns how many events it
// delivers and, when none, the channel to wait on.
func (sub *Subscription) readWindow() (int, <-chan struct{}, windowRead) {
	if sub.raw {
		bufs, r, wake, st := sub.s.win.readWire(sub.wire, sub.pos, sub.last, sub.localOnly, nextMaxEvents, nextMaxBytes)
		sub.wire, sub.pos, sub.last = bufs, r.pos, r.last
		return r.n, wake, st
	}
	evs, pos, wake, st := sub.s.win.read(sub.buf, sub.pos, nextMaxEvents, nextMaxBytes)
	if st != readOK {
		return 0, nil, st
	}
	sub.pos = pos
	// LastSeq moves before the window is appended to, so a subscription that started
	// from a cursor in that instant sits at a position that is then filled with events
	// it has already had from the cursor: skip them.
	out := evs[:0]
	for _, ev := range evs {
		if ev.Seq <= sub.last {
			continue
		}
		sub.last = ev.Seq
		if sub.localOnly && ev.Remote {
			continue
		}
		out = append(out, ev)
	}
	sub.buf = out
	return len(out), wake, readOK
}

// readLog reads the next events after sub.last from the log, in one snapshot, into sub.buf
// (a raw subscription frames them into sub.replay, which becomes sub.wire's one buffer). It
// returns how many it delivers and the highest seq it read (remote rows a localOnly
// subscription skips count too).
func (sub *Subscription) readLog(ctx context.Context) (int, int64, error) {
	evs := sub.buf[:0]
	replay := sub.replay[:0]
	var n int
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
			var frame sql.RawBytes // copied below, before the next row overwrites it
			if err := rows.Scan(&seq, &remote, &frame); err != nil {
				return fmt.Errorf("read log: %w", err)
			}
			scanned = seq
			if remote && sub.localOnly {
				continue
			}
			n++
			if sub.raw {
				replay = append(appendFrameHeader(replay, len(frame)), frame...)
			} else {
				ev, err := DecodeFrame(bytes.Clone(frame))
				if err != nil {
					return fmt.Errorf("decode logged seq %d: %w", seq, err)
				}
				ev.Remote = remote
				evs = append(evs, ev)
			}
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
		return 0, 0, fmt.Errorf("replay after seq %d: %w", sub.last, err)
	}
	sub.buf, sub.replay = evs, replay
	if sub.raw && n > 0 {
		sub.wire = append(sub.wire, replay)
	}
	return n, scanned, nil
}
