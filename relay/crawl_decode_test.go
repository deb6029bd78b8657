package relay

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"

	"github.com/aerie-social/aerie/repo"
)

// testCommitFrame returns the frame of a #commit with every field set, changed by mutate.
func testCommitFrame(t testing.TB, mutate func(c *comatproto.SyncSubscribeRepos_Commit)) []byte {
	t.Helper()
	l := func(s string) *lexutil.LexLink {
		ll := lexutil.LexLink(repo.CBORCID([]byte(s)))
		return &ll
	}
	since := "3kabcdefghi22"
	c := &comatproto.SyncSubscribeRepos_Commit{
		Repo:     "did:plc:abc",
		Rev:      "3kabcdefghj22",
		Commit:   *l("commit"),
		PrevData: l("prev"),
		Since:    &since,
		Blocks:   lexutil.LexBytes(bytes.Repeat([]byte{7}, 300)),
		Blobs:    []lexutil.LexLink{*l("blob")},
		Ops: []*comatproto.SyncSubscribeRepos_RepoOp{
			{Action: "create", Path: "app.bsky.feed.post/3kabc", Cid: l("rec")},
			{Action: "update", Path: "app.bsky.feed.post/3kabd", Cid: l("rec2"), Prev: l("old")},
			{Action: "delete", Path: "app.bsky.feed.post/3kabe", Prev: l("old2")},
		},
	}
	mutate(c)
	ev := &Event{Commit: c}
	ev.setSeq(c.Seq, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if c.Seq == 0 {
		ev.setSeq(1<<40, ev.Time)
	}
	if err := ev.encode(); err != nil {
		t.Fatal(err)
	}
	return ev.frame
}

// sameAsDecodeFrame fails unless decodeCommitFast(b) is nil or the event DecodeFrame reads
// from b; it reports whether the fast path took b.
func sameAsDecodeFrame(t *testing.T, b []byte) bool {
	t.Helper()
	fast := decodeCommitFast(b)
	if fast == nil {
		return false
	}
	want, err := DecodeFrame(b)
	if err != nil {
		t.Fatalf("decodeCommitFast took a frame DecodeFrame refuses (%v): %x", err, b)
	}
	if !reflect.DeepEqual(fast.Commit, want.Commit) || fast.Seq != want.Seq || !fast.Time.Equal(want.Time) {
		t.Fatalf("decodeCommitFast = %+v (seq %d, %s), DecodeFrame = %+v (seq %d, %s)",
			fast.Commit, fast.Seq, fast.Time, want.Commit, want.Seq, want.Time)
	}
	return true
}

func TestDecodeCommitFast(t *testing.T) {
	t.Parallel()
	type commit = comatproto.SyncSubscribeRepos_Commit
	// Canonical frames, as our sequencer and every atproto PDS write them: the fast path
	// must take them (or it is no faster) and read what DecodeFrame reads.
	canonical := []struct {
		name   string
		mutate func(c *commit)
	}{
		{"full", func(*commit) {}},
		{"genesis", func(c *commit) { c.Since, c.PrevData = nil, nil }},
		{"empty", func(c *commit) { c.Ops, c.Blobs, c.Blocks = nil, nil, lexutil.LexBytes{} }},
		{"no blocks", func(c *commit) { c.Blocks = nil }},
		{"nil op", func(c *commit) { c.Ops[0] = nil }},
		{"flags", func(c *commit) { c.Rebase, c.TooBig = true, true }},
		{"negative seq", func(c *commit) { c.Seq = -5 }},
		{"long blocks", func(c *commit) { c.Blocks = make(lexutil.LexBytes, 70_000) }},
	}
	for _, tt := range canonical {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !sameAsDecodeFrame(t, testCommitFrame(t, tt.mutate)) {
				t.Fatal("decodeCommitFast refused a canonical #commit")
			}
		})
	}

	// Anything else goes to DecodeFrame, which decides.
	good := testCommitFrame(t, func(*commit) {})
	hdr := appendMessageHeader(nil, KindCommit)
	body := good[len(hdr):]
	repl := func(old, new string) []byte { return bytes.Replace(good, []byte(old), []byte(new), 1) }
	others := []struct {
		name string
		in   []byte
	}{
		// "ops" → "opz": same length, sorts after "ops" but before "rev"; unknown to us.
		{"unknown field", repl("\x63ops", "\x63opz")},
		{"keys out of order", repl("\x63rev", "\x63aev")},
		{"duplicate key", repl("\x63rev", "\x63ops")},
		{"non-minimal map head", append(append(append([]byte(nil), hdr...), 0xb8, body[0]&0x1f), body[1:]...)},
		{"trailing bytes", append(append([]byte(nil), good...), 0)},
		{"truncated", good[:len(good)-1]},
		{"other kind", InfoFrame("OutdatedCursor", "")},
		{"error frame", ErrorFrame("FutureCursor", "")},
		{"garbage", []byte{0xa2, 0x01}},
	}
	for _, tt := range others {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if sameAsDecodeFrame(t, tt.in) {
				t.Fatal("decodeCommitFast took a frame that is not a canonical #commit")
			}
			// decodeCrawledFrame still gives DecodeFrame's answer.
			got, err := decodeCrawledFrame(tt.in)
			want, wantErr := DecodeFrame(tt.in)
			if (err == nil) != (wantErr == nil) || (got == nil) != (want == nil) {
				t.Fatalf("decodeCrawledFrame = %v, %v; DecodeFrame = %v, %v", got, err, want, wantErr)
			}
		})
	}
}

func FuzzDecodeCommitFast(f *testing.F) {
	f.Add(testCommitFrame(f, func(*comatproto.SyncSubscribeRepos_Commit) {}))
	f.Add(testCommitFrame(f, func(c *comatproto.SyncSubscribeRepos_Commit) { c.Since, c.PrevData, c.Ops = nil, nil, nil }))
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsDecodeFrame(t, b)
	})
}
