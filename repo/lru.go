package repo

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// errCacheClosed is returned by handleCache.acquire after close has begun.
var errCacheClosed = errors.New("repo: store closed")

// handleCache keeps at most max open handles (per-actor SQLite files) in a
// reference-counted LRU. A lease pins a handle open; eviction only ever closes an idle
// handle, so a miss when every slot is leased waits for a lease to end instead of closing a
// file under a running query. That makes the bound strict: never more than max handles are
// open or opening at once. It is not ristretto on purpose: a cache that may refuse a Set or
// evict at will cannot own something that must be closed exactly once, after its last user.
//
// While runCloser runs, an evicted handle is closed in the background instead of by the
// acquirer that needs its slot: closing an actor file collects its replaced nodes and
// checkpoints its WAL, with fsyncs, and the open that evicted it should not wait for that.
// Then up to closeQueue handles may be closing beyond the bound. An acquirer of a key whose
// handle is still queued takes it back; one whose handle is being closed waits for the
// close, so a file is never open twice.
//
// A goroutine must not hold a lease while acquiring another: with every slot leased by
// such goroutines, each would wait for the others.
type handleCache[K comparable, V io.Closer] struct {
	max  int
	open func(ctx context.Context, key K) (V, error)

	mu      sync.Mutex
	entries map[K]*cacheEntry[K, V]
	order   list.List // of *cacheEntry, most recently used at the front
	live    int       // handles open or opening, including those closed by an acquirer
	closing int       // handles queued for runCloser or being closed by it
	closers int       // running runCloser calls
	queue   chan *cacheEntry[K, V]
	changed chan struct{}
	closed  bool
}

// closeQueue is how many evicted handles may wait for runCloser; beyond it, acquirers
// close them as they would without runCloser, so a slow disk slows opens instead of
// holding ever more files open.
const closeQueue = 8

// closeState is where an entry is in a background close.
type closeState uint8

const (
	stateOpen    closeState = iota // open or opening, in the LRU order
	stateQueued                    // evicted, waiting in queue; acquire may take it back
	stateClosing                   // being closed; acquirers wait on closeDone
	stateClosed                    // closed and out of the map
)

// cacheEntry is one key's slot. While exclusive is set, the slot belongs to one caller (a
// create, delete or import) and acquirers wait on gone.
type cacheEntry[K comparable, V io.Closer] struct {
	key       K
	val       V
	err       error
	ready     chan struct{} // closed when the open finished (val or err set)
	refs      int
	elem      *list.Element
	exclusive bool
	gone      chan struct{} // closed when an exclusive slot is given back
	state     closeState
	closeDone chan struct{} // closed when an eviction's close ends; set at eviction
}

// newHandleCache returns an empty cache that opens handles with open, keeping at most max.
func newHandleCache[K comparable, V io.Closer](max int, open func(context.Context, K) (V, error)) *handleCache[K, V] {
	if max < 1 {
		max = 1
	}
	return &handleCache[K, V]{
		max:     max,
		open:    open,
		entries: make(map[K]*cacheEntry[K, V]),
		queue:   make(chan *cacheEntry[K, V], closeQueue),
		changed: make(chan struct{}),
	}
}

// notifyLocked wakes everyone waiting for a slot or a lease to end. c.mu must be held.
func (c *handleCache[K, V]) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitLocked releases c.mu until ch is closed or ctx ends, then takes it again.
func (c *handleCache[K, V]) waitLocked(ctx context.Context, ch <-chan struct{}) error {
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// acquire returns the open handle for key and a release function that must be called
// exactly once when the caller is done with it. An open error is returned to every caller
// that waited for that open, and is not cached.
func (c *handleCache[K, V]) acquire(ctx context.Context, key K) (V, func(), error) {
	var zero V
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return zero, nil, errCacheClosed
		}
		e, ok := c.entries[key]
		if ok && e.exclusive {
			if err := c.waitLocked(ctx, e.gone); err != nil {
				c.mu.Unlock()
				return zero, nil, err
			}
			continue
		}
		if ok && e.state == stateClosing {
			if err := c.waitLocked(ctx, e.closeDone); err != nil {
				c.mu.Unlock()
				return zero, nil, err
			}
			continue
		}
		if ok && e.state == stateOpen {
			e.refs++
			c.order.MoveToFront(e.elem)
			c.mu.Unlock()
			select {
			case <-e.ready:
			case <-ctx.Done():
				c.release(e)
				return zero, nil, ctx.Err()
			}
			if e.err != nil {
				c.release(e)
				return zero, nil, e.err
			}
			return e.val, func() { c.release(e) }, nil
		}
		// A miss, or a handle queued for closing that can be taken back: either needs a
		// slot.
		if c.live >= c.max {
			victim := c.idleVictimLocked()
			if victim == nil {
				if err := c.waitLocked(ctx, c.changed); err != nil {
					c.mu.Unlock()
					return zero, nil, err
				}
				continue
			}
			c.evictLocked(victim)
			continue
		}
		if ok { // stateQueued
			c.reopenLocked(e)
			e.refs++
			c.mu.Unlock()
			return e.val, func() { c.release(e) }, nil
		}
		e = &cacheEntry[K, V]{key: key, refs: 1, ready: make(chan struct{})}
		e.elem = c.order.PushFront(e)
		c.entries[key] = e
		c.live++
		c.mu.Unlock()

		// The open serves every caller that queues behind it, so one caller's cancellation
		// must not fail the others; opening a file is bounded by the busy timeout anyway.
		val, err := c.open(context.WithoutCancel(ctx), key)

		c.mu.Lock()
		e.val, e.err = val, err
		close(e.ready)
		if err != nil {
			c.removeLocked(e)
			c.live--
			c.notifyLocked()
			e.refs--
			c.mu.Unlock()
			return zero, nil, err
		}
		c.mu.Unlock()
		return val, func() { c.release(e) }, nil
	}
}

// evictLocked closes the idle entry victim to free its slot: in the background when
// runCloser runs and has room, else here, outside the lock. c.mu must be held; it may be
// released and taken again.
func (c *handleCache[K, V]) evictLocked(victim *cacheEntry[K, V]) {
	c.order.Remove(victim.elem)
	victim.elem = nil
	if c.closers > 0 && c.closing < closeQueue {
		select {
		case c.queue <- victim:
			victim.state = stateQueued
			victim.closeDone = make(chan struct{})
			c.live--
			c.closing++
			return
		default: // full of entries taken back since they were queued
		}
	}
	// The victim still counts in live until it is closed, so the bound holds even while
	// its Close runs outside the lock; it stays in the map, so that an acquirer of its
	// key waits for the close instead of opening the file beside it.
	victim.state = stateClosing
	victim.closeDone = make(chan struct{})
	c.mu.Unlock()
	victim.val.Close() // an idle handle has nothing pending; a close error loses nothing
	c.mu.Lock()
	victim.state = stateClosed
	c.removeLocked(victim)
	c.live--
	close(victim.closeDone)
	c.notifyLocked()
}

// reopenLocked takes back e, queued for closing, as an open idle entry. A copy of e stays
// in the queue; runCloser skips it. c.mu must be held.
func (c *handleCache[K, V]) reopenLocked(e *cacheEntry[K, V]) {
	e.state = stateOpen
	e.elem = c.order.PushFront(e)
	c.closing--
	c.live++
}

// runCloser closes evicted handles until ctx ends; while it runs, eviction queues them to
// it. Handles still queued when it returns are taken back by acquirers or closed by close.
func (c *handleCache[K, V]) runCloser(ctx context.Context) {
	c.mu.Lock()
	c.closers++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.closers--
		c.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-c.queue:
			c.closeQueued(e)
		}
	}
}

// closeQueued closes e if it is still queued for closing.
func (c *handleCache[K, V]) closeQueued(e *cacheEntry[K, V]) {
	c.mu.Lock()
	if e.state != stateQueued { // taken back, or closed by close
		c.mu.Unlock()
		return
	}
	e.state = stateClosing
	c.mu.Unlock()
	e.val.Close() // an idle handle has nothing pending; a close error loses nothing
	c.mu.Lock()
	e.state = stateClosed
	c.removeLocked(e)
	c.closing--
	close(e.closeDone)
	c.notifyLocked()
	c.mu.Unlock()
}

// acquireIfOpen returns a lease on key's handle only when it is open now; it never opens
// a file or waits.
func (c *handleCache[K, V]) acquireIfOpen(key K) (V, func(), bool) {
	var zero V
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || c.closed || e.exclusive || e.state != stateOpen || e.err != nil || !isClosed(e.ready) {
		return zero, nil, false
	}
	e.refs++
	return e.val, func() { c.release(e) }, true
}

// idleVictimLocked returns the least recently used entry that is open and unleased, or nil.
func (c *handleCache[K, V]) idleVictimLocked() *cacheEntry[K, V] {
	for el := c.order.Back(); el != nil; el = el.Prev() {
		e := el.Value.(*cacheEntry[K, V])
		if e.refs == 0 && !e.exclusive && e.err == nil && isClosed(e.ready) {
			return e
		}
	}
	return nil
}

// removeLocked takes e out of the map and the LRU order.
func (c *handleCache[K, V]) removeLocked(e *cacheEntry[K, V]) {
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
	}
	if e.elem != nil {
		c.order.Remove(e.elem)
		e.elem = nil
	}
}

// release ends one lease on e.
func (c *handleCache[K, V]) release(e *cacheEntry[K, V]) {
	c.mu.Lock()
	e.refs--
	if e.refs == 0 {
		c.notifyLocked()
	}
	c.mu.Unlock()
}

// exclusive takes key's slot for fn alone: it waits for every lease on key to end, closes
// the open handle if any, and runs fn while acquirers of key wait. Create, Delete and Import
// use it, so no query ever sees a half-made or half-removed actor.
func (c *handleCache[K, V]) exclusive(ctx context.Context, key K, fn func() error) error {
	c.mu.Lock()
	var e *cacheEntry[K, V]
	for {
		if c.closed {
			c.mu.Unlock()
			return errCacheClosed
		}
		cur, ok := c.entries[key]
		if !ok {
			e = &cacheEntry[K, V]{key: key, exclusive: true, gone: make(chan struct{}), ready: make(chan struct{})}
			close(e.ready)
			c.entries[key] = e
			break
		}
		if cur.exclusive {
			if err := c.waitLocked(ctx, cur.gone); err != nil {
				c.mu.Unlock()
				return err
			}
			continue
		}
		if cur.state == stateClosing {
			if err := c.waitLocked(ctx, cur.closeDone); err != nil {
				c.mu.Unlock()
				return err
			}
			continue
		}
		if cur.state == stateQueued {
			// Closed below like any idle handle; runCloser skips its copy in the queue.
			c.reopenLocked(cur)
		}
		// Mark it first so no new lease starts, then wait for the current ones to end.
		cur.exclusive = true
		cur.gone = make(chan struct{})
		for cur.refs > 0 || !isClosed(cur.ready) {
			if err := c.waitLocked(ctx, c.changed); err != nil {
				cur.exclusive = false
				close(cur.gone)
				c.notifyLocked()
				c.mu.Unlock()
				return err
			}
		}
		if cur.elem != nil {
			c.order.Remove(cur.elem)
			cur.elem = nil
		}
		if cur.err == nil {
			c.mu.Unlock()
			cur.val.Close()
			c.mu.Lock()
			c.live--
		}
		var zero V
		cur.val, cur.err = zero, nil
		e = cur
		break
	}
	c.mu.Unlock()

	err := fn()

	c.mu.Lock()
	if c.entries[key] == e {
		delete(c.entries, key)
	}
	close(e.gone)
	c.notifyLocked()
	c.mu.Unlock()
	return err
}

// close stops new acquisitions, waits for every lease to end and closes every handle.
func (c *handleCache[K, V]) close() error {
	c.mu.Lock()
	c.closed = true
	var errs []error
	for {
		busy := false
		for _, e := range c.entries {
			if e.exclusive || e.refs > 0 || !isClosed(e.ready) || e.state == stateClosing {
				busy = true
				continue
			}
			c.removeLocked(e)
			if e.state == stateQueued {
				// runCloser has stopped or is busy; it skips the entry once it is closed.
				e.state = stateClosed
				c.closing--
				close(e.closeDone)
				if err := e.val.Close(); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			if e.err == nil {
				if err := e.val.Close(); err != nil {
					errs = append(errs, err)
				}
				c.live--
			}
		}
		if !busy {
			break
		}
		ch := c.changed
		c.mu.Unlock()
		<-ch
		c.mu.Lock()
	}
	c.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close handles: %w", err)
	}
	return nil
}

// openCount reports how many handles are open, opening or closing, for tests and metrics.
func (c *handleCache[K, V]) openCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live + c.closing
}

// isClosed reports whether ch has been closed, without blocking.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
