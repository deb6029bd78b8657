package relay

import (
	"bytes"
	"strings"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/repo"
)

// matchesCborGen fails unless appendCommitBody(c) is what cbor-gen writes for c, or both
// refuse c.
func matchesCborGen(t *testing.T, c *comatproto.SyncSubscribeRepos_Commit) {
	t.Helper()
	var want bytes.Buffer
	wantErr := c.MarshalCBOR(&want)
	got, err := appendCommitBody([]byte{0xff}, c)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("appendCommitBody error = %v, cbor-gen error = %v", err, wantErr)
	}
	if err != nil {
		return
	}
	if got[0] != 0xff || !bytes.Equal(got[1:], want.Bytes()) {
		t.Fatalf("appendCommitBody =\n%x\ncbor-gen =\n%x", got, want.Bytes())
	}
}

func TestAppendCommitBodyMatchesCborGen(t *testing.T) {
	t.Parallel()
	l := func(s string) *lexutil.LexLink {
		ll := lexutil.LexLink(repo.CBORCID([]byte(s)))
		return &ll
	}
	since := "3kabcdefghi22"
	full := func() *comatproto.SyncSubscribeRepos_Commit {
		return &comatproto.SyncSubscribeRepos_Commit{
			Repo:     "did:plc:abc",
			Rev:      "3kabcdefghj22",
			Seq:      1 << 40,
			Time:     "2026-01-02T03:04:05.678Z",
			Since:    &since,
			Commit:   *l("commit"),
			PrevData: l("prev"),
			Blocks:   lexutil.LexBytes(bytes.Repeat([]byte{7}, 300)),
			Blobs:    []lexutil.LexLink{*l("blob")},
			Ops: []*comatproto.SyncSubscribeRepos_RepoOp{
				{Action: "create", Path: "app.bsky.feed.post/3kabc", Cid: l("rec")},
				{Action: "update", Path: "app.bsky.feed.post/3kabd", Cid: l("rec2"), Prev: l("old")},
				{Action: "delete", Path: "app.bsky.feed.post/3kabe", Prev: l("old2")},
			},
		}
	}
	tests := []struct {
		name   string
		mutate func(c *comatproto.SyncSubscribeRepos_Commit)
	}{
		{"full", func(*comatproto.SyncSubscribeRepos_Commit) {}},
		{"genesis", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Since, c.PrevData = nil, nil }},
		{"no blocks", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Blocks = nil }},
		{"empty blocks", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Blocks = lexutil.LexBytes{} }},
		{"nil blobs", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Blobs = nil }},
		{"nil ops", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Ops = nil }},
		{"nil op", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Ops[1] = nil }},
		{"flags", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Rebase, c.TooBig = true, true }},
		{"seq zero", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Seq = 0 }},
		{"seq negative", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Seq = -300 }},
		{"long strings", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Repo = strings.Repeat("x", 70_000) }},
		{"big blocks", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Blocks = make(lexutil.LexBytes, 70_000) }},
		{"text over limit", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Time = strings.Repeat("x", cborMaxText+1) }},
		{"blocks over limit", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Blocks = make(lexutil.LexBytes, cborMaxBytes+1) }},
		{"undefined commit", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Commit = lexutil.LexLink(cid.Undef) }},
		{"undefined blob", func(c *comatproto.SyncSubscribeRepos_Commit) { c.Blobs[0] = lexutil.LexLink(cid.Undef) }},
		{"undefined op prev", func(c *comatproto.SyncSubscribeRepos_Commit) {
			u := lexutil.LexLink(cid.Undef)
			c.Ops[0].Prev = &u
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := full()
			tt.mutate(c)
			matchesCborGen(t, c)
		})
	}
}

func FuzzAppendCommitBody(f *testing.F) {
	f.Add("did:plc:abc", "3kabcdefghj22", int64(7), "2026-01-02T03:04:05Z", "", []byte{1, 2}, "create", "app.bsky.feed.post/x", uint8(0))
	f.Add("", "", int64(-1), "", "3kabcdefghi22", []byte(nil), "", "", uint8(0xff))
	f.Fuzz(func(t *testing.T, did, rev string, seq int64, ts, since string, blocks []byte, action, path string, flags uint8) {
		link := lexutil.LexLink(repo.CBORCID([]byte(path)))
		c := &comatproto.SyncSubscribeRepos_Commit{
			Repo: did, Rev: rev, Seq: seq, Time: ts, Commit: link, Blocks: blocks,
			Rebase: flags&1 != 0, TooBig: flags&2 != 0,
			Ops: []*comatproto.SyncSubscribeRepos_RepoOp{{Action: action, Path: path}},
		}
		if flags&4 != 0 {
			c.Since = &since
		}
		if flags&8 != 0 {
			c.PrevData = &link
		}
		if flags&16 != 0 {
			c.Ops[0].Cid = &link
		}
		if flags&32 != 0 {
			c.Ops[0].Prev = &link
		}
		if flags&64 != 0 {
			c.Blobs = []lexutil.LexLink{link}
		}
		matchesCborGen(t, c)
	})
}
