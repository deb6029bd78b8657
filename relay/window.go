package relay

import (
	"sort"
	"sync"
)

// window is the in-memory tail of the log that every live subscriber reads from. The
// sequencer appends each committed batch once; subscribers keep their own absolute position
// and copy out what is new. Publishing costs O(batch) whatever the number of subscribers and
// never blocks, so a slow subscriber cannot slow the sequencer or the others: it only falls
// off the back of the window.
type window struct {
	maxEvents int
	maxBytes  int64

	mu    sync.Mutex
	ring  []*Event // len == maxEvents; entry i%maxEvents holds absolute position i
	start uint64   // absolute position of the oldest event held
	end   uint64   // absolute position one past the newest
	bytes int64    // frame bytes held
	// floor is the highest seq no longer held: every event with seq > floor is in the
	// window. Initially the log's last seq, since nothing before Open is held.
	floor int64
	// wake is closed (and replaced) by every append, so waiting subscribers see new events
	// without one channel send per subscriber.
	wake   chan struct{}
	closed bool
}

func newWindow(maxEvents int, maxBytes int64, floor int64) *window {
	return &window{
		maxEvents: maxEvents,
		maxBytes:  maxBytes,
		ring:      make([]*Event, maxEvents),
		floor:     floor,
		wake:      make(chan struct{}),
	}
}

// append publishes evs, which are in seq order and above everything already held, evicting
// the oldest events beyond the bounds.
func (w *window) append(evs []*Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	for _, ev := range evs {
		size := int64(len(ev.frame))
		for w.end > w.start && (w.end-w.start >= uint64(w.maxEvents) || w.bytes+size > w.maxBytes) {
			old := w.ring[w.start%uint64(w.maxEvents)]
			w.ring[w.start%uint64(w.maxEvents)] = nil
			w.floor = old.Seq
			w.bytes -= int64(len(old.frame))
			w.start++
		}
		w.ring[w.end%uint64(w.maxEvents)] = ev
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
	return w.end, w.ring[(w.end-1)%uint64(w.maxEvents)].Seq
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
		return w.ring[(w.start+uint64(i))%uint64(w.maxEvents)].Seq > after
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
		ev := w.ring[pos%uint64(w.maxEvents)]
		size += int64(len(ev.frame))
		if n > 0 && size > maxBytes {
			break
		}
		dst = append(dst, ev)
		pos++
	}
	return dst, pos, w.wake, readOK
}
