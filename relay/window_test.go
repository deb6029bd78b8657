package relay

import (
	"bytes"
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

// wireOf returns the WebSocket messages of evs, as the firehose must send them.
func wireOf(evs ...*Event) []byte {
	var b []byte
	for _, ev := range evs {
		b = append(appendFrameHeader(b, len(ev.frame)), ev.frame...)
	}
	return b
}

// TestWindowReadWire: readWire returns each event's WebSocket message once, in order, in as
// few buffers as the chunks allow, within its bounds and filters; and buffers handed out
// keep their bytes while later appends fill new chunks and evict the events.
func TestWindowReadWire(t *testing.T) {
	t.Parallel()
	w := newWindow(64, 1<<30, 0)
	evs := []*Event{
		{Seq: 1, frame: bytes.Repeat([]byte{1}, 10)},
		{Seq: 2, frame: bytes.Repeat([]byte{2}, 200)},
		{Seq: 3, frame: bytes.Repeat([]byte{3}, 70_000)}, // a chunk of its own
		{Seq: 4, frame: bytes.Repeat([]byte{4}, 10), Remote: true},
		{Seq: 5, frame: bytes.Repeat([]byte{5}, 60_000)}, // shared again, after seq 2
	}
	w.append(evs[:2])
	w.append(evs[2:])
	tests := []struct {
		name      string
		pos       uint64
		last      int64
		localOnly bool
		maxEvents int
		maxBytes  int64
		want      []*Event
		bufs      int
		wantRead  wireRead
	}{
		{"all", 0, 0, false, 100, 1 << 20, evs, 3, wireRead{pos: 5, last: 5, n: 5}},
		{"local only", 0, 0, true, 100, 1 << 20, []*Event{evs[0], evs[1], evs[2], evs[4]}, 3, wireRead{pos: 5, last: 5, n: 4}},
		{"after last", 0, 3, false, 100, 1 << 20, evs[3:], 1, wireRead{pos: 5, last: 5, n: 2}},
		{"max events", 0, 0, false, 2, 1 << 20, evs[:2], 1, wireRead{pos: 2, last: 2, n: 2}},
		{"max bytes", 0, 0, false, 100, 1000, evs[:2], 1, wireRead{pos: 2, last: 2, n: 2}},
		{"first over max bytes", 2, 2, false, 100, 1000, evs[2:3], 1, wireRead{pos: 3, last: 3, n: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bufs, r, _, st := w.readWire(nil, tt.pos, tt.last, tt.localOnly, tt.maxEvents, tt.maxBytes)
			if st != readOK || r != tt.wantRead {
				t.Errorf("readWire = %+v, %v; want %+v, readOK", r, st, tt.wantRead)
			}
			if got := bytes.Join(bufs, nil); !bytes.Equal(got, wireOf(tt.want...)) {
				t.Error("readWire bytes differ from the events' messages")
			}
			if len(bufs) != tt.bufs {
				t.Errorf("readWire returned %d buffers, want %d", len(bufs), tt.bufs)
			}
		})
	}

	held, _, _, _ := w.readWire(nil, 0, 0, false, 100, 1<<20)
	want := bytes.Join(held, nil)
	for i := range 300 { // about three chunks, evicting everything above
		w.append([]*Event{{Seq: int64(6 + i), frame: bytes.Repeat([]byte{byte(i)}, 3000)}})
	}
	if _, _, _, st := w.readWire(nil, 0, 0, false, 100, 1<<20); st != readLagged {
		t.Errorf("readWire at an evicted position = %v, want readLagged", st)
	}
	if !bytes.Equal(bytes.Join(held, nil), want) {
		t.Error("buffers read before the evictions changed")
	}
	// Everything held, 64 events of 3 KB: one buffer per chunk they lie in.
	pos, _ := w.head()
	bufs, r, _, _ := w.readWire(nil, pos-64, 0, false, 100, 1<<20)
	var tail []*Event
	for i := 236; i < 300; i++ {
		tail = append(tail, &Event{frame: bytes.Repeat([]byte{byte(i)}, 3000)})
	}
	if !bytes.Equal(bytes.Join(bufs, nil), wireOf(tail...)) || r.n != 64 || r.last != 305 {
		t.Errorf("readWire of the held events = %d events to seq %d, want 64 to seq 305 with their messages", r.n, r.last)
	}
	if most := 1 + 64*3010/wireChunkSize + 1; len(bufs) > most {
		t.Errorf("readWire over 64 events of 3 KB = %d buffers, want at most %d", len(bufs), most)
	}
}
