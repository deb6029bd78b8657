package relay

import (
	"context"
	"fmt"
)

// Wait returns what Submit would have for an event handed over by Enqueue, once done yields:
// its seq when it is in the log, its error otherwise. It returns ErrClosed when the
// sequencer stopped without taking the event, and ctx's error when ctx ends first (the event
// may still be persisted then).
func (s *Sequencer) Wait(ctx context.Context, ev *Event, done <-chan error) (int64, error) {
	result := func(err error) (int64, error) {
		if err != nil {
			return 0, err
		}
		return ev.Seq, nil
	}
	select {
	case err := <-done:
		return result(err)
	case <-s.stopped:
		// Run answers every submission it took before it stops.
		select {
		case err := <-done:
			return result(err)
		default:
			return 0, ErrClosed
		}
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for %s: %w", ev.Kind(), ctx.Err())
	}
}
