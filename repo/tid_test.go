package repo

import (
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

func TestTIDClockMonotonic(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := base
	c := NewTIDClockWithTime(5, func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	})
	set := func(ts time.Time) {
		mu.Lock()
		now = ts
		mu.Unlock()
	}

	first := c.Next("")
	if first.Time() != base || first.ClockID() != 5 {
		t.Errorf("Next() = %s (%s, clock %d), want time %s clock 5", first, first.Time(), first.ClockID(), base)
	}
	// Same instant, then the clock going backwards: still increasing.
	second := c.Next("")
	set(base.Add(-time.Hour))
	third := c.Next("")
	if !(first < second && second < third) {
		t.Errorf("Next() sequence %s %s %s is not increasing", first, second, third)
	}
	// A floor from the repo (a rev written elsewhere, far ahead) is passed.
	ahead := syntax.NewTIDFromTime(base.Add(24*time.Hour), 900)
	fourth := c.Next(ahead)
	if fourth <= ahead || fourth.ClockID() != 5 {
		t.Errorf("Next(%s) = %s, want greater with clock 5", ahead, fourth)
	}
	// Once the wall clock is past everything it is followed again.
	later := base.Add(48 * time.Hour)
	set(later)
	if got := c.Next(ahead); got.Time() != later {
		t.Errorf("Next after clock passes floor = %s, want time %s", got.Time(), later)
	}
	// A junk floor is ignored rather than trusted.
	if got := c.Next("not-a-tid"); got.Time() != later.Add(time.Microsecond) {
		t.Errorf("Next(junk) = %s", got.Time())
	}
}

func TestTIDClockConcurrent(t *testing.T) {
	t.Parallel()
	fixed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewTIDClockWithTime(0, func() time.Time { return fixed })
	const workers, each = 4, 500
	out := make(chan syntax.TID, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				out <- c.Next("")
			}
		})
	}
	wg.Wait()
	close(out)
	seen := make(map[syntax.TID]bool)
	for tid := range out {
		if seen[tid] {
			t.Fatalf("Next() returned %s twice", tid)
		}
		if _, err := syntax.ParseTID(string(tid)); err != nil {
			t.Fatalf("Next() = %s: %v", tid, err)
		}
		seen[tid] = true
	}
}
