package relay

import (
	"fmt"
	"slices"
	"testing"
)

// TestFirehoseServesOnlyLocalEvents checks that crawled events reach in-process subscribers
// (the indexer) but never the PDS firehose, in replay from the log and live alike.
func TestFirehoseServesOnlyLocalEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	var local []int64
	submitMix := func(from, n int) {
		for i := from; i < from+n; i++ {
			ev := commitEvent(fmt.Sprintf("did:plc:mix%d", i%3), i, 100)
			ev.Remote = i%3 != 0
			seq := submit(t, h.seq, ev)
			if !ev.Remote {
				local = append(local, seq)
			}
		}
	}
	// More remote events than the window holds, so the replay reads the log.
	submitMix(0, 300)
	replayed := len(local)

	c := dial(t, h, "0")
	got := readSeqs(t, c, replayed)
	if !slices.Equal(got, local) {
		t.Fatalf("replay = %v…, want the %d local seqs %v…", got[:5], replayed, local[:5])
	}
	submitMix(300, 30)
	live := readSeqs(t, c, len(local)-replayed)
	if !slices.Equal(live, local[replayed:]) {
		t.Fatalf("live = %v, want %v", live, local[replayed:])
	}

	sub, err := h.seq.Subscribe(0)
	if err != nil {
		t.Fatal(err)
	}
	remote, total := 0, 0
	for total < 330 {
		evs, err := sub.Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			total++
			if ev.Remote {
				remote++
			}
		}
	}
	if remote != 220 {
		t.Errorf("in-process subscription saw %d remote events of 330, want 220", remote)
	}
}
