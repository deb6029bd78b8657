package relay

import (
	"net"
	"sort"
	"sync"
)

// wireChunkSize is the size of the shared buffers the window frames events into: at
// 2,000 ~500-byte events/s one lasts a quarter of a second, so a stream's batch write
// mostly spans one or two of them, while a chunk kept alive by the oldest events held
// wastes little memory.
const wireChunkSize = 256 << 10

// window is the in-memory tail of the log that every live subscriber reads from. The
// sequencer appends each committed batch once; subscribers keep their own absolute position
// and copy out what is new. Publishing costs O(batch) whatever the number of subscribers and
// never blocks, so a slow subscriber cannot slow the sequencer or the others: it only falls
// off the back of the window.
//
// Each event is also framed once, as the WebSocket binary message the firehose sends, into
// append-only chunks shared by every stream (see readWire): consecutive events sit end to
// end, so a stream writes its whole batch with one writev of a few large buffers, and no
// stream frames an event of its own. The copy roughly doubles the memory of the frames
// held (maxBytes counts them once): one more copy of the window, against per-stream
// framing and a writev entry per event and header for every stream.
type window struct {
	maxEvents int
	maxBytes  int64

	// appendMu serialises appends, and with them the framing into chunk, which is done
	// outside mu so that a big frame's copy does not hold up readers.
	appendMu sync.Mutex
	// chunk is where the next small event is framed; its bytes up to len are immutable.
	chunk *wireChunk

	mu    sync.Mutex
	ring  []slot // len == maxEvents; entry i%maxEvents holds absolute position i
	start uint64 // absolute position of the oldest event held
	end   uint64 // absolute position one past the newest
	bytes int64  // frame bytes held
	// floor is the highest seq no longer held: every event with seq > floor is in the
	// window. Initially the log's last seq, since nothing before Open is held.
	floor int64
	// wake is closed (and replaced) by every append, so waiting subscribers see new events
	// without one channel send per subscriber.
	wake   chan struct{}
	closed bool
}

// slot is one held event and where its WebSocket message lies: chunk.buf[off:end]. It
// repeats the event's seq and origin so that readWire, which every stream runs over every
// event, reads the ring alone.
type slot struct {
	ev       *Event
	chunk    *wireChunk
	off, end int
	seq      int64
	remote   bool
}

// wireChunk is a buffer of WebSocket messages that is only ever appended to, so the bytes
// below used never change and may be written to sockets by any number of streams while
// later events are framed after them. A chunk lives as long as a held event or an
// unfinished write refers to it.
type wireChunk struct {
	buf  []byte // never resliced: readers slice it without appendMu
	used int    // guarded by window.appendMu
}

func newWindow(maxEvents int, maxBytes int64, floor int64) *window {
	return &window{
		maxEvents: maxEvents,
		maxBytes:  maxBytes,
		ring:      make([]slot, maxEvents),
		floor:     floor,
		wake:      make(chan struct{}),
	}
}

// frame appends ev's WebSocket message to the current chunk, or to a new one when it does
// not fit, and returns where it lies. A frame above a quarter of a chunk gets a chunk of
// its own, so that big commits leave little of a chunk unused. Callers hold appendMu.
func (w *window) frame(ev *Event) slot {
	need := maxFrameHeader + len(ev.frame)
	c := w.chunk
	switch {
	case need > wireChunkSize/4:
		c = &wireChunk{buf: make([]byte, need)}
	case c == nil || len(c.buf)-c.used < need:
		c = &wireChunk{buf: make([]byte, wireChunkSize)}
		w.chunk = c
	}
	off := c.used
	hdr := appendFrameHeader(c.buf[off:off], len(ev.frame)) // in place: need leaves room
	c.used = off + len(hdr) + copy(c.buf[off+len(hdr):], ev.frame)
	return slot{ev: ev, chunk: c, off: off, end: c.used, seq: ev.Seq, remote: ev.Remote}
}

// append publishes evs, which are in seq order and above everything already held, evicting
// the oldest events beyond the bounds.
func (w *window) append(evs []*Event) {
	w.appendMu.Lock()
	defer w.appendMu.Unlock()
	slots := make([]slot, len(evs))
	for i, ev := range evs {
		slots[i] = w.frame(ev)
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	for _, s := range slots {
		size := int64(len(s.ev.frame))
		for w.end > w.start && (w.end-w.start >= uint64(w.maxEvents) || w.bytes+size > w.maxBytes) {
			old := &w.ring[w.start%uint64(w.maxEvents)]
			w.floor = old.ev.Seq
			w.bytes -= int64(len(old.ev.frame))
			*old = slot{}
			w.start++
		}
		w.ring[w.end%uint64(w.maxEvents)] = s
		w.end++
		w.bytes += size
	}
	close(w.wake)
	w.wake = make(chan struct{})
}

// close wakes every waiter for good; subscribers then report ErrClosed.
func (w *window) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.wake)
	}
}

// head returns the position a live-only subscriber starts at and the seq just before it,
// so that a subscriber that later lags knows where to resume in the log.
func (w *window) head() (uint64, int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.end == w.start {
		return w.end, w.floor
	}
	return w.end, w.ring[(w.end-1)%uint64(w.maxEvents)].ev.Seq
}

// positionAfter returns the position of the first held event with seq > after, and false
// when events after `after` have already been evicted (the caller must read the log).
func (w *window) positionAfter(after int64) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.floor > after {
		return 0, false
	}
	n := int(w.end - w.start)
	i := sort.Search(n, func(i int) bool {
		return w.ring[(w.start+uint64(i))%uint64(w.maxEvents)].ev.Seq > after
	})
	return w.start + uint64(i), true
}

// windowRead is the outcome of window.read.
type windowRead int

const (
	readOK     windowRead = iota // events copied (possibly none: wait on the channel)
	readLagged                   // pos fell off the back of the window
	readClosed                   // the sequencer stopped
)

// read appends to dst the events from pos on, at most maxEvents of them and stopping before
// maxBytes once one is taken. With nothing new it returns the channel that the next append
// closes.
func (w *window) read(dst []*Event, pos uint64, maxEvents int, maxBytes int64) ([]*Event, uint64, <-chan struct{}, windowRead) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return dst, pos, nil, readClosed
	}
	if pos < w.start {
		return dst, pos, nil, readLagged
	}
	var size int64
	for n := 0; pos < w.end && n < maxEvents; n++ {
		ev := w.ring[pos%uint64(w.maxEvents)].ev
		size += int64(len(ev.frame))
		if n > 0 && size > maxBytes {
			break
		}
		dst = append(dst, ev)
		pos++
	}
	return dst, pos, w.wake, readOK
}

// wireRead is what readWire took: the next position, the seq of the last event passed
// (sent or skipped) and how many events the buffers hold.
type wireRead struct {
	pos  uint64
	last int64
	n    int
}

// readWire is read for the firehose: it appends to bufs the WebSocket messages of the
// events from pos on, within the same bounds (counting the messages' bytes), as slices of
// the shared chunks, one per run of events that lie end to end. It skips events with
// seq <= last (see Subscription.readWindow) and, with localOnly, remote ones. The buffers
// are read-only and stay valid after the events are evicted.
func (w *window) readWire(bufs net.Buffers, pos uint64, last int64, localOnly bool, maxEvents int, maxBytes int64) (net.Buffers, wireRead, <-chan struct{}, windowRead) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := wireRead{pos: pos, last: last}
	if w.closed {
		return bufs, r, nil, readClosed
	}
	if pos < w.start {
		return bufs, r, nil, readLagged
	}
	var size int64
	var run *wireChunk // the chunk of the last buffer in bufs, while it may grow
	runOff, runEnd := 0, 0
	for n := 0; r.pos < w.end && n < maxEvents; n++ {
		s := &w.ring[r.pos%uint64(w.maxEvents)]
		size += int64(s.end - s.off)
		if n > 0 && size > maxBytes {
			break
		}
		r.pos++
		if s.seq <= r.last {
			continue
		}
		r.last = s.seq
		if localOnly && s.remote {
			continue
		}
		r.n++
		if s.chunk == run && s.off == runEnd {
			runEnd = s.end
			bufs[len(bufs)-1] = run.buf[runOff:runEnd]
			continue
		}
		run, runOff, runEnd = s.chunk, s.off, s.end
		bufs = append(bufs, run.buf[runOff:runEnd])
	}
	return bufs, r, w.wake, readOK
}
