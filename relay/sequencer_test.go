package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

func TestSubmitAssignsConsecutiveSeqs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	for i := 1; i <= 3; i++ {
		if seq := submit(t, h.seq, commitEvent("did:plc:alice", i, 10)); seq != int64(i) {
			t.Errorf("Submit #%d = seq %d, want %d", i, seq, i)
		}
	}
	if got := h.seq.LastSeq(); got != 3 {
		t.Errorf("LastSeq() = %d, want 3", got)
	}
}

func TestSubmitRejectsInvalidEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	tests := []struct {
		name string
		ev   *Event
	}{
		{"no body", &Event{}},
		{"two bodies", &Event{
			Identity: &comatproto.SyncSubscribeRepos_Identity{Did: "did:plc:a"},
			Account:  &comatproto.SyncSubscribeRepos_Account{Did: "did:plc:a"},
		}},
		{"bad did", NewAccount("not-a-did", true, "")},
		{"info", &Event{Info: &comatproto.SyncSubscribeRepos_Info{Name: "x"}}},
		{"too big", commitEvent("did:plc:a", 1, MaxFrameSize)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := h.seq.Submit(t.Context(), tt.ev); !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("Submit(%s) = %v, want ErrInvalidEvent", tt.name, err)
			}
		})
	}
	// A rejected event uses no seq.
	if seq := submit(t, h.seq, NewIdentity("did:plc:a", "")); seq != 1 {
		t.Errorf("Submit after rejections = seq %d, want 1", seq)
	}
}

func TestSubmitAfterRunEnds(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	submit(t, h.seq, NewIdentity("did:plc:a", "a.test"))
	s := h.seq
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	h.stop()
	if _, err := s.Submit(context.Background(), NewIdentity("did:plc:a", "")); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Run = %v, want ErrClosed", err)
	}
	if _, err := s.Submit(ctx, &Event{}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Submit(invalid) after Run = %v, want ErrInvalidEvent", err)
	}
}

// TestPersistThenBroadcast checks that every event a subscriber sees is already in the log,
// while many writers submit at once.
func TestPersistThenBroadcast(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	sub, err := h.seq.Subscribe(Live)
	if err != nil {
		t.Fatalf("Subscribe(Live) = %v", err)
	}
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := h.seq.Submit(t.Context(), commitEvent(fmt.Sprintf("did:plc:w%d", w), i, 50)); err != nil {
					t.Errorf("Submit = %v", err)
					return
				}
			}
		})
	}
	seen := 0
	for seen < writers*each {
		evs, err := sub.Next(t.Context())
		if err != nil {
			t.Fatalf("Next = %v", err)
		}
		for _, ev := range evs {
			var n int
			err := h.seq.db.Read(t.Context(), func(tx *sql.Tx) error {
				return tx.QueryRowContext(t.Context(), "SELECT count(*) FROM events WHERE seq = ?", ev.Seq).Scan(&n)
			})
			if err != nil || n != 1 {
				t.Fatalf("seq %d delivered but log has %d rows (%v)", ev.Seq, n, err)
			}
			seen++
			if ev.Seq != int64(seen) {
				t.Fatalf("delivered seq %d, want %d", ev.Seq, seen)
			}
		}
	}
	wg.Wait()
}

// TestSubscriptionHandoff starts in-process subscriptions at many cursors while writers keep
// submitting; each must get every later event exactly once, across the log/window switch.
func TestSubscriptionHandoff(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	const total = 600
	for i := range 100 {
		submit(t, h.seq, commitEvent("did:plc:pre", i, 20))
	}
	var writers sync.WaitGroup
	writers.Go(func() {
		for i := 100; i < total; i++ {
			if _, err := h.seq.Submit(t.Context(), commitEvent("did:plc:live", i, 20)); err != nil {
				t.Errorf("Submit = %v", err)
				return
			}
		}
	})
	var readers sync.WaitGroup
	for _, cursor := range []int64{0, 1, 50, 99, 100, 150, 300} {
		readers.Go(func() {
			if cursor > h.seq.LastSeq() {
				for h.seq.LastSeq() < cursor { // wait for the cursor to exist
					if _, err := h.seq.Subscribe(Live); err != nil {
						t.Errorf("Subscribe = %v", err)
					}
				}
			}
			sub, err := h.seq.Subscribe(cursor)
			if err != nil {
				t.Errorf("Subscribe(%d) = %v", cursor, err)
				return
			}
			var got []int64
			for int64(len(got)) < total-cursor {
				evs, err := sub.Next(t.Context())
				if err != nil {
					t.Errorf("cursor %d: Next = %v", cursor, err)
					return
				}
				for _, ev := range evs {
					if ev.Commit == nil || ev.Commit.Seq != ev.Seq {
						t.Errorf("cursor %d: seq %d not a decoded #commit", cursor, ev.Seq)
						return
					}
					got = append(got, ev.Seq)
				}
			}
			wantRange(t, fmt.Sprintf("cursor %d", cursor), got, cursor+1, total)
		})
	}
	writers.Wait()
	readers.Wait()
}

// TestSlowSubscriptionFallsBackToLog: an in-process subscriber that lags behind the window
// keeps going from the log instead of being cut off.
func TestSlowSubscriptionFallsBackToLog(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	sub, err := h.seq.Subscribe(Live)
	if err != nil {
		t.Fatalf("Subscribe = %v", err)
	}
	const n = 500 // far more than the 64-event window
	for i := range n {
		submit(t, h.seq, commitEvent("did:plc:a", i, 20))
	}
	var got []int64
	for len(got) < n {
		evs, err := sub.Next(t.Context())
		if err != nil {
			t.Fatalf("Next = %v", err)
		}
		for _, ev := range evs {
			got = append(got, ev.Seq)
		}
	}
	wantRange(t, "lagging subscription", got, 1, n)
}

func TestSubscribeFutureCursor(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	submit(t, h.seq, NewIdentity("did:plc:a", ""))
	if _, err := h.seq.Subscribe(2); !errors.Is(err, ErrFutureCursor) {
		t.Errorf("Subscribe(2) with last seq 1 = %v, want ErrFutureCursor", err)
	}
	if _, err := h.seq.Subscribe(1); err != nil {
		t.Errorf("Subscribe(1) = %v", err)
	}
}

func TestRestartContinuesSeq(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.sqlite")
	h := start(t, openSeq(t, path, testConfig()))
	for i := range 10 {
		submit(t, h.seq, commitEvent("did:plc:alice", i, 10))
	}
	submit(t, h.seq, NewAccount("did:plc:bob", false, "deactivated"))
	h.stop()

	h = start(t, openSeq(t, path, testConfig()))
	if got := h.seq.LastSeq(); got != 11 {
		t.Errorf("LastSeq() after reopen = %d, want 11", got)
	}
	rev, err := h.seq.LastRev(t.Context(), "did:plc:alice")
	if want := commitEvent("did:plc:alice", 9, 0).Commit.Rev; err != nil || rev.String() != want {
		t.Errorf("LastRev(alice) = %q, %v; want %q", rev, err, want)
	}
	if rev, err := h.seq.LastRev(t.Context(), "did:plc:bob"); err != nil || rev != "" {
		t.Errorf("LastRev(bob) = %q, %v; want empty", rev, err)
	}
	if seq := submit(t, h.seq, NewIdentity("did:plc:alice", "alice.test")); seq != 12 {
		t.Errorf("Submit after reopen = seq %d, want 12", seq)
	}
	// Replay crosses the restart: the old events come from the log, decoded.
	sub, err := h.seq.Subscribe(9)
	if err != nil {
		t.Fatalf("Subscribe(9) = %v", err)
	}
	var kinds []string
	for len(kinds) < 3 {
		evs, err := sub.Next(t.Context())
		if err != nil {
			t.Fatalf("Next = %v", err)
		}
		for _, ev := range evs {
			kinds = append(kinds, ev.Kind())
		}
	}
	if want := []string{KindCommit, KindAccount, KindIdentity}; fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("replay after restart = %v, want %v", kinds, want)
	}
}

// fakeClock is an injectable clock for retention tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestPruneByRetention(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.sqlite")
	clock := &fakeClock{now: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
	s := openSeq(t, path, testConfig())
	s.now = clock.Now
	h := start(t, s)
	for i := range 2500 { // more than one prune chunk
		submit(t, s, commitEvent("did:plc:old", i, 10))
	}
	clock.Advance(48 * time.Hour)
	for i := range 5 {
		submit(t, s, commitEvent("did:plc:new", i, 10))
	}
	clock.Advance(25 * time.Hour) // the first batch is now 73h old, the second 25h

	n, err := s.prune(t.Context())
	if err != nil || n != 2500 {
		t.Fatalf("prune() = %d, %v; want 2500 deleted", n, err)
	}
	if n, err := s.prune(t.Context()); err != nil || n != 0 {
		t.Errorf("second prune() = %d, %v; want 0", n, err)
	}
	if got := s.prunedThrough.Load(); got != 2500 {
		t.Errorf("prunedThrough = %d, want 2500", got)
	}

	for _, tt := range []struct {
		name         string
		cursor       int64
		wantOutdated bool
		wantFirst    int64
	}{
		{"zero", 0, true, 2501},
		{"pruned", 1000, true, 2501},
		{"boundary", 2500, false, 2501},
		{"held", 2502, false, 2503},
	} {
		sub, err := s.Subscribe(tt.cursor)
		if err != nil {
			t.Fatalf("%s: Subscribe(%d) = %v", tt.name, tt.cursor, err)
		}
		if sub.Outdated() != tt.wantOutdated {
			t.Errorf("%s: Subscribe(%d).Outdated() = %v, want %v", tt.name, tt.cursor, sub.Outdated(), tt.wantOutdated)
		}
		evs, err := sub.Next(t.Context())
		if err != nil || len(evs) == 0 || evs[0].Seq != tt.wantFirst {
			t.Errorf("%s: first Next = %d events, %v; want first seq %d", tt.name, len(evs), err, tt.wantFirst)
		}
	}

	// Pruning everything must not reset seq after a restart, nor forget revs.
	clock.Advance(72 * time.Hour)
	if _, err := s.prune(t.Context()); err != nil {
		t.Fatalf("prune() = %v", err)
	}
	h.stop()
	s = openSeq(t, path, testConfig())
	defer s.Close()
	if got := s.LastSeq(); got != 2505 {
		t.Errorf("LastSeq() after pruning all and reopening = %d, want 2505", got)
	}
	if rev, err := s.LastRev(t.Context(), syntax.DID("did:plc:old")); err != nil || rev == "" {
		t.Errorf("LastRev(old) after pruning = %q, %v; want its last rev", rev, err)
	}
}

// TestPruneDuringReplay: a subscription whose undelivered events are pruned under it
// reports ErrOutdatedCursor instead of silently skipping them.
func TestPruneDuringReplay(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
	s := openSeq(t, filepath.Join(t.TempDir(), "relay.sqlite"), testConfig())
	s.now = clock.Now
	start(t, s)
	for i := range 3000 {
		submit(t, s, commitEvent("did:plc:a", i, 10))
	}
	sub, err := s.Subscribe(0)
	if err != nil {
		t.Fatalf("Subscribe(0) = %v", err)
	}
	if _, err := sub.Next(t.Context()); err != nil { // first page of 1024
		t.Fatalf("Next = %v", err)
	}
	clock.Advance(100 * time.Hour)
	if _, err := s.prune(t.Context()); err != nil {
		t.Fatalf("prune() = %v", err)
	}
	if _, err := sub.Next(t.Context()); !errors.Is(err, ErrOutdatedCursor) {
		t.Errorf("Next after pruning = %v, want ErrOutdatedCursor", err)
	}
}
