package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// fakeHandle records its own lifecycle so tests can check that every handle is closed
// exactly once and never used after.
type fakeHandle struct {
	key    string
	open   *atomic.Int64
	closed atomic.Bool
	uses   atomic.Int64
	gate   chan struct{} // when set, Close waits for it to be closed
	owner  *fakeOpener
}

func (h *fakeHandle) Close() error {
	if h.gate != nil {
		<-h.gate
	}
	if h.closed.Swap(true) {
		panic("handle " + h.key + " closed twice")
	}
	if h.uses.Load() != 0 {
		panic("handle " + h.key + " closed while leased")
	}
	h.open.Add(-1)
	h.owner.mu.Lock()
	h.owner.live[h.key]--
	h.owner.mu.Unlock()
	return nil
}

type fakeOpener struct {
	mu      sync.Mutex
	open    atomic.Int64
	maxSeen atomic.Int64
	opens   map[string]int
	all     []*fakeHandle
	fail    map[string]error
	gate    chan struct{}  // given to every handle opened
	live    map[string]int // open handles per key
	twice   int            // opens of a key whose previous handle was not closed yet
}

func (f *fakeOpener) openFn(ctx context.Context, key string) (*fakeHandle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[key]; err != nil {
		return nil, err
	}
	if f.opens == nil {
		f.opens = map[string]int{}
	}
	f.opens[key]++
	if f.live == nil {
		f.live = map[string]int{}
	}
	if f.live[key] > 0 {
		f.twice++
	}
	f.live[key]++
	n := f.open.Add(1)
	if n > f.maxSeen.Load() {
		f.maxSeen.Store(n)
	}
	h := &fakeHandle{key: key, open: &f.open, gate: f.gate, owner: f}
	f.all = append(f.all, h)
	return h, nil
}

func TestHandleCacheHitReusesHandle(t *testing.T) {
	t.Parallel()
	var f fakeOpener
	c := newHandleCache(2, f.openFn)
	ctx := t.Context()
	for range 3 {
		_, release, err := c.acquire(ctx, "a")
		if err != nil {
			t.Fatalf("acquire(a) = %v", err)
		}
		release()
	}
	if f.opens["a"] != 1 {
		t.Errorf("opens of a = %d, want 1", f.opens["a"])
	}
	if err := c.close(); err != nil {
		t.Fatalf("close() = %v", err)
	}
	if n := f.open.Load(); n != 0 {
		t.Errorf("open handles after close = %d, want 0", n)
	}
}

func TestHandleCacheEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	var f fakeOpener
	c := newHandleCache(2, f.openFn)
	ctx := t.Context()
	use := func(k string) {
		_, release, err := c.acquire(ctx, k)
		if err != nil {
			t.Fatalf("acquire(%s) = %v", k, err)
		}
		release()
	}
	use("a")
	use("b")
	use("a") // b is now the least recently used
	use("c") // evicts b
	use("a") // still open
	if got := f.opens; got["a"] != 1 || got["b"] != 1 || got["c"] != 1 {
		t.Errorf("opens = %v, want one each", got)
	}
	use("b") // reopened, evicts c
	if f.opens["b"] != 2 {
		t.Errorf("opens of b = %d, want 2", f.opens["b"])
	}
	if n := c.openCount(); n != 2 {
		t.Errorf("openCount() = %d, want 2", n)
	}
	c.close()
}

func TestHandleCacheOpenErrorIsNotCached(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	f := fakeOpener{fail: map[string]error{"a": errBoom}}
	c := newHandleCache(2, f.openFn)
	if _, _, err := c.acquire(t.Context(), "a"); !errors.Is(err, errBoom) {
		t.Fatalf("acquire(a) = %v, want %v", err, errBoom)
	}
	if n := c.openCount(); n != 0 {
		t.Errorf("openCount() after a failed open = %d, want 0", n)
	}
	f.mu.Lock()
	delete(f.fail, "a")
	f.mu.Unlock()
	_, release, err := c.acquire(t.Context(), "a")
	if err != nil {
		t.Fatalf("acquire(a) after the failure cleared = %v", err)
	}
	release()
	c.close()
}

func TestHandleCacheMissWaitsForALease(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var f fakeOpener
		c := newHandleCache(1, f.openFn)
		ha, releaseA, err := c.acquire(t.Context(), "a")
		if err != nil {
			t.Fatalf("acquire(a) = %v", err)
		}
		ha.uses.Add(1)
		got := acquireBlocked(t, c, "b", "while the only slot was leased")
		if ha.closed.Load() {
			t.Fatal("leased handle a was closed")
		}
		ha.uses.Add(-1)
		releaseA()
		if err := <-got; err != nil {
			t.Fatalf("acquire(b) after release = %v", err)
		}
		if !ha.closed.Load() {
			t.Error("a was not closed to make room for b")
		}
		c.close()
	})
}

func TestHandleCacheWaitHonoursContext(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var f fakeOpener
		c := newHandleCache(1, f.openFn)
		_, releaseA, err := c.acquire(t.Context(), "a")
		if err != nil {
			t.Fatalf("acquire(a) = %v", err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		got := make(chan error, 1)
		go func() {
			_, _, err := c.acquire(ctx, "b")
			got <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-got; !errors.Is(err, context.Canceled) {
			t.Errorf("acquire(b) with a cancelled context = %v, want context.Canceled", err)
		}
		releaseA()
		c.close()
	})
}

func TestHandleCacheExclusiveWaitsForLeasesAndBlocksAcquirers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var f fakeOpener
		c := newHandleCache(4, f.openFn)
		ha, releaseA, err := c.acquire(t.Context(), "a")
		if err != nil {
			t.Fatalf("acquire(a) = %v", err)
		}
		ha.uses.Add(1)
		var order []string
		var mu sync.Mutex
		note := func(s string) {
			mu.Lock()
			order = append(order, s)
			mu.Unlock()
		}
		exDone := make(chan error, 1)
		go func() {
			exDone <- c.exclusive(t.Context(), "a", func() error {
				note("exclusive")
				if !ha.closed.Load() {
					t.Error("exclusive ran while the handle was open")
				}
				return nil
			})
		}()
		synctest.Wait()
		acqDone := make(chan error, 1)
		go func() {
			_, release, err := c.acquire(t.Context(), "a")
			if err == nil {
				note("acquire")
				release()
			}
			acqDone <- err
		}()
		synctest.Wait()
		if len(order) != 0 {
			t.Fatalf("ran %v before the lease ended", order)
		}
		ha.uses.Add(-1)
		releaseA()
		if err := <-exDone; err != nil {
			t.Fatalf("exclusive(a) = %v", err)
		}
		if err := <-acqDone; err != nil {
			t.Fatalf("acquire(a) after exclusive = %v", err)
		}
		if fmt.Sprint(order) != "[exclusive acquire]" {
			t.Errorf("order = %v, want [exclusive acquire]", order)
		}
		c.close()
	})
}

// TestHandleCacheConcurrentChurn leases random keys from many goroutines through a small
// cache and checks the bound, that no leased handle is ever closed (fakeHandle panics),
// and that everything is closed at the end. Run with -race.
func TestHandleCacheConcurrentChurn(t *testing.T) {
	t.Parallel()
	const max, keys, workers, rounds = 4, 16, 16, 300
	var f fakeOpener
	c := newHandleCache(max, f.openFn)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range rounds {
				k := fmt.Sprintf("k%d", r.IntN(keys))
				h, release, err := c.acquire(t.Context(), k)
				if err != nil {
					t.Errorf("acquire(%s) = %v", k, err)
					return
				}
				h.uses.Add(1)
				if h.closed.Load() {
					t.Errorf("acquire(%s) returned a closed handle", k)
				}
				if n := f.open.Load(); n > max {
					t.Errorf("%d handles open, bound is %d", n, max)
				}
				h.uses.Add(-1)
				release()
			}
		})
	}
	wg.Wait()
	if err := c.close(); err != nil {
		t.Fatalf("close() = %v", err)
	}
	if n := f.maxSeen.Load(); n > max {
		t.Errorf("max open = %d, bound is %d", n, max)
	}
	if f.twice != 0 {
		t.Errorf("%d opens of a key whose handle was still open", f.twice)
	}
	for _, h := range f.all {
		if !h.closed.Load() {
			t.Errorf("handle %s never closed", h.key)
		}
	}
	if _, _, err := c.acquire(t.Context(), "k0"); !errors.Is(err, errCacheClosed) {
		t.Errorf("acquire after close = %v, want errCacheClosed", err)
	}
}

// TestHandleCacheClosesEvictedInBackground checks that with runCloser running an eviction
// does not wait for the victim's Close, that an acquirer of the victim's key waits for
// that close instead of opening the file a second time, and that a handle still queued
// for closing is taken back rather than closed and reopened.
func TestHandleCacheClosesEvictedInBackground(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := fakeOpener{gate: make(chan struct{})}
		c := newHandleCache(1, f.openFn)
		ctx, cancel := context.WithCancel(t.Context())
		closerDone := make(chan struct{})
		go func() {
			c.runCloser(ctx)
			close(closerDone)
		}()
		synctest.Wait()
		use := func(k string) {
			_, release, err := c.acquire(t.Context(), k)
			if err != nil {
				t.Fatalf("acquire(%s) = %v", k, err)
			}
			release()
		}
		use("a")
		use("b") // evicts a: runCloser's Close of it waits for the gate
		use("c") // evicts b: queued behind a
		synctest.Wait()
		if n := c.openCount(); n != 3 {
			t.Errorf("openCount() = %d, want 3 (c open, a closing, b queued)", n)
		}

		got := acquireBlocked(t, c, "a", "while a was still closing")

		use("b") // taken back from the queue; evicts c into the queue
		if f.opens["b"] != 1 {
			t.Errorf("opens of b = %d, want 1: a queued handle must be taken back", f.opens["b"])
		}

		close(f.gate)
		if err := <-got; err != nil {
			t.Fatalf("acquire(a) after its close = %v", err)
		}
		if f.opens["a"] != 2 || !f.all[0].closed.Load() {
			t.Errorf("a opened %d times, first handle closed %v; want a reopen after the close", f.opens["a"], f.all[0].closed.Load())
		}
		cancel()
		<-closerDone
		if err := c.close(); err != nil {
			t.Fatalf("close() = %v", err)
		}
		for _, h := range f.all {
			if !h.closed.Load() {
				t.Errorf("handle %s never closed", h.key)
			}
		}
	})
}

// TestHandleCacheBackgroundChurn is TestHandleCacheConcurrentChurn with runCloser running
// and stopping half way: no handle is closed twice or while leased (fakeHandle panics),
// no key is ever open twice, and close closes whatever is still queued.
func TestHandleCacheBackgroundChurn(t *testing.T) {
	t.Parallel()
	const max, keys, workers, rounds = 4, 16, 16, 300
	var f fakeOpener
	c := newHandleCache(max, f.openFn)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var closer sync.WaitGroup
	closer.Go(func() { c.runCloser(ctx) })
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for i := range rounds {
				if w == 0 && i == rounds/2 {
					cancel()
				}
				k := fmt.Sprintf("k%d", r.IntN(keys))
				h, release, err := c.acquire(t.Context(), k)
				if err != nil {
					t.Errorf("acquire(%s) = %v", k, err)
					return
				}
				h.uses.Add(1)
				if h.closed.Load() {
					t.Errorf("acquire(%s) returned a closed handle", k)
				}
				if n := f.open.Load(); n > max+closeQueue {
					t.Errorf("%d handles open, bound is %d open and %d closing", n, max, closeQueue)
				}
				h.uses.Add(-1)
				release()
			}
		})
	}
	wg.Wait()
	cancel() // in case worker 0 failed before it did
	closer.Wait()
	if err := c.close(); err != nil {
		t.Fatalf("close() = %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.all {
		if !h.closed.Load() {
			t.Errorf("handle %s never closed", h.key)
		}
	}
	if f.twice != 0 {
		t.Errorf("%d opens of a key whose handle was still open", f.twice)
	}
	if n := f.open.Load(); n != 0 {
		t.Errorf("open handles after close = %d, want 0", n)
	}
}

// acquireBlocked starts acquire(key) in the background (releasing what it gets), checks
// inside a synctest bubble that it is still waiting, and returns the channel its error
// arrives on; why says what should be holding it.
func acquireBlocked(t *testing.T, c *handleCache[string, *fakeHandle], key, why string) <-chan error {
	t.Helper()
	got := make(chan error, 1)
	go func() {
		_, release, err := c.acquire(t.Context(), key)
		if err == nil {
			release()
		}
		got <- err
	}()
	synctest.Wait()
	select {
	case err := <-got:
		t.Fatalf("acquire(%s) returned %v %s", key, err, why)
	default:
	}
	return got
}
