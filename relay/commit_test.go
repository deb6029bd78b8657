package relay

import (
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/repo"
)

func TestNewCommit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	c1, c2, data, prevData := cidOf([]byte("r1")), cidOf([]byte("r2")), cidOf([]byte("d")), cidOf([]byte("pd"))
	tests := []struct {
		name string
		ce   repo.CommitEvent
	}{
		{"genesis", repo.CommitEvent{DID: "did:plc:alice", Rev: "3jzfcijpj2z2a", Commit: cidOf([]byte("c0")), Data: data}},
		{"ops", repo.CommitEvent{
			DID: "did:plc:alice", Rev: "3jzfcijpj2z2b", Since: "3jzfcijpj2z2a",
			Commit: cidOf([]byte("c1")), PrevData: prevData, Data: data, Blocks: []byte("car"),
			Ops: []repo.Op{
				{Action: repo.ActionCreate, Path: "app.bsky.feed.post/a", CID: c1},
				{Action: repo.ActionUpdate, Path: "app.bsky.feed.post/b", CID: c2, Prev: c1},
				{Action: repo.ActionDelete, Path: "app.bsky.feed.post/c", Prev: c2},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := NewCommit(&tt.ce)
			submit(t, h.seq, ev)
			got, err := DecodeFrame(ev.Frame())
			if err != nil {
				t.Fatalf("DecodeFrame(NewCommit(%s)) = %v", tt.name, err)
			}
			b := got.Commit
			if b.Repo != "did:plc:alice" || b.Rev != tt.ce.Rev.String() || !cid.Cid(b.Commit).Equals(tt.ce.Commit) {
				t.Errorf("%s: repo, rev, commit = %s %s %s", tt.name, b.Repo, b.Rev, cid.Cid(b.Commit))
			}
			if (b.Since == nil) != (tt.ce.Since == "") || (b.PrevData == nil) != !tt.ce.PrevData.Defined() {
				t.Errorf("%s: since %v prevData %v, want them exactly when not genesis", tt.name, b.Since, b.PrevData)
			}
			if len(b.Ops) != len(tt.ce.Ops) {
				t.Fatalf("%s: %d ops, want %d", tt.name, len(b.Ops), len(tt.ce.Ops))
			}
			for i, op := range tt.ce.Ops {
				g := b.Ops[i]
				if g.Action != string(op.Action) || g.Path != op.Path ||
					(g.Cid == nil) != !op.CID.Defined() || (g.Prev == nil) != !op.Prev.Defined() ||
					(g.Cid != nil && !cid.Cid(*g.Cid).Equals(op.CID)) || (g.Prev != nil && !cid.Cid(*g.Prev).Equals(op.Prev)) {
					t.Errorf("%s: op %d = %+v, want %+v", tt.name, i, g, op)
				}
			}
		})
	}
}
