package blobs

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// TestRunSweepsPeriodically runs Run on synctest's fake clock: an upload nobody
// references is gone after the grace period plus one GC interval, and Run returns nil
// when its context ends.
func TestRunSweepsPeriodically(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		accounts := &fakeAccounts{states: map[syntax.DID]AccountState{aliceDID: AccountActive}}
		s, err := Open(t.Context(), dir+"/blobs", dir+"/cache", cfg, Deps{Accounts: accounts}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ref, err := s.Upload(t.Context(), aliceDID, "", bytes.NewReader([]byte("orphan")))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()

		time.Sleep(cfg.GracePeriod + cfg.GCInterval + time.Second) // fake time inside the bubble
		synctest.Wait()
		if has, err := s.Has(t.Context(), aliceDID, ref.CID); err != nil || has {
			t.Errorf("after grace period and a GC tick: Has = %v, %v; want false", has, err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}
