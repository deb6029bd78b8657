package relay

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// BenchmarkSubmit measures one submitter waiting for each event: one transaction per event.
func BenchmarkSubmit(b *testing.B) {
	h := start(b, openSeq(b, filepath.Join(b.TempDir(), "relay.sqlite"), DefaultConfig()))
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		submit(b, h.seq, commitEvent("did:plc:bench", i, 400))
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkSubmitConcurrent measures many writers at once, which the sequencer batches into
// shared transactions. b.Loop has no parallel form, so each iteration is a burst of
// `writers` concurrent submits.
func BenchmarkSubmitConcurrent(b *testing.B) {
	for _, writers := range []int{16, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			h := start(b, openSeq(b, filepath.Join(b.TempDir(), "relay.sqlite"), DefaultConfig()))
			b.ReportAllocs()
			for b.Loop() {
				var wg sync.WaitGroup
				for w := range writers {
					wg.Go(func() {
						if _, err := h.seq.Submit(context.Background(), commitEvent("did:plc:bench", w, 400)); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.N*writers)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
