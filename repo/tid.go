package repo

import (
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// TIDClock hands out strictly increasing TIDs for revs and record keys. It is
// safe for concurrent use.
//
// indigo's syntax.TIDClock follows the wall clock and can repeat or go
// backwards when the clock steps back; a repo rev must be greater than the
// previous one even across restarts and migrations
// (atproto-reference.md §5.2), so this clock keeps the last value it issued
// and Next takes the repo's current rev as a floor.
type TIDClock struct {
	clockID uint
	now     func() time.Time

	mu   sync.Mutex
	last uint64 // integer value of the last TID issued; 0 before the first
}

// maxClockID is the largest clock identifier a TID can carry (10 bits).
const maxClockID = 1<<10 - 1

// NewTIDClock returns a clock that reads time.Now and stamps clockID (masked
// to 10 bits) into every TID.
func NewTIDClock(clockID uint) *TIDClock {
	return NewTIDClockWithTime(clockID, time.Now)
}

// NewTIDClockWithTime is NewTIDClock with an injected time source, for tests.
func NewTIDClockWithTime(clockID uint, now func() time.Time) *TIDClock {
	return &TIDClock{clockID: clockID & maxClockID, now: now}
}

// Next returns a TID greater than every TID this clock issued before and
// greater than after (pass "" when there is no floor, e.g. for a record key).
// It follows the wall clock when the clock is ahead of both; otherwise it
// steps one microsecond past the larger of them. An after that does not parse
// as a TID is ignored, since the floor is an optimisation for ordering, not
// input to validate.
func (c *TIDClock) Next(after syntax.TID) syntax.TID {
	floor := uint64(0)
	if after != "" {
		if t, err := syntax.ParseTID(string(after)); err == nil {
			floor = t.Integer()
		}
	}
	micros := c.now().UnixMicro()

	c.mu.Lock()
	defer c.mu.Unlock()
	floor = max(floor, c.last)
	v := uint64(syntax.NewTID(micros, c.clockID).Integer())
	if v <= floor {
		// Step the timestamp part (the bits above the 10-bit clock ID) one
		// microsecond past the floor and keep our own clock ID.
		v = (floor>>10+1)<<10 | uint64(c.clockID)
	}
	c.last = v
	return syntax.NewTIDFromInteger(v)
}
