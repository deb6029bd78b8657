package relay

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func windowEvents(from, to int64, size int) []*Event {
	var evs []*Event
	for s := from; s <= to; s++ {
		evs = append(evs, &Event{Seq: s, frame: make([]byte, size)})
	}
	return evs
}

// TestWindowWakesWaiters: a subscriber waiting on the window wakes on append, without
// polling, and a closed window wakes it for good.
func TestWindowWakesWaiters(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w := newWindow(8, 1<<20, 0)
		pos, last := w.head()
		if pos != 0 || last != 0 {
			t.Fatalf("head() of empty window = %d, %d; want 0, 0", pos, last)
		}
		got := make(chan []*Event)
		go func() {
			defer close(got)
			for {
				evs, next, wake, st := w.read(nil, pos, 100, 1<<20)
				if st != readOK {
					return
				}
				pos = next
				if len(evs) > 0 {
					got <- evs
					continue
				}
				<-wake
			}
		}()
		synctest.Wait() // the reader is blocked on wake
		w.append(windowEvents(1, 3, 1))
		if evs := <-got; len(evs) != 3 || evs[0].Seq != 1 {
			t.Errorf("woken reader got %d events, want seq 1..3", len(evs))
		}
		w.close()
		if _, ok := <-got; ok {
			t.Error("reader still running after close")
		}
	})
}

func TestWindowEvictionAndLag(t *testing.T) {
	t.Parallel()
	w := newWindow(4, 250, 10)
	w.append(windowEvents(11, 13, 100)) // 300 bytes > 250: seq 11 is evicted
	if w.floor != 11 {
		t.Errorf("floor = %d, want 11 after byte eviction", w.floor)
	}
	if _, ok := w.positionAfter(10); ok {
		t.Error("positionAfter(10) found seq 11, which was evicted")
	}
	pos, ok := w.positionAfter(11)
	if !ok || pos != 1 {
		t.Errorf("positionAfter(11) = %d, %v; want 1, true", pos, ok)
	}
	if _, _, _, st := w.read(nil, 0, 10, 1000); st != readLagged {
		t.Errorf("read at evicted position = %v, want readLagged", st)
	}
	// A batch stops before maxBytes once it has one event, but always takes the first.
	evs, next, _, _ := w.read(nil, 1, 10, 50)
	if len(evs) != 1 || next != 2 {
		t.Errorf("read(maxBytes 50) = %d events, next %d; want 1, 2", len(evs), next)
	}
	w.append(windowEvents(14, 20, 10)) // count eviction: 4 slots
	if _, last := w.head(); last != 20 || w.end-w.start != 4 || w.floor != 16 {
		t.Errorf("after count eviction: last %d, held %d, floor %d; want 20, 4, 16", last, w.end-w.start, w.floor)
	}
}

// TestSubscriptionContext: Next returns the context's error when it ends and ErrClosed
// once Run has ended.
func TestSubscriptionContext(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	sub, err := h.seq.Subscribe(Live)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	if _, err := sub.Next(ctx); err != context.DeadlineExceeded {
		t.Errorf("Next with expiring ctx = %v, want DeadlineExceeded", err)
	}
	h.stop()
	if _, err := sub.Next(t.Context()); err != ErrClosed {
		t.Errorf("Next after Run = %v, want ErrClosed", err)
	}
}
