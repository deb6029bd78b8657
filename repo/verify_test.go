package repo

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/ipfs/go-cid"
)

// messageOf turns a local commit into the message a remote consumer would verify.
func messageOf(ev *CommitEvent) CommitMessage {
	return CommitMessage{DID: ev.DID, Rev: ev.Rev, Commit: ev.Commit, PrevData: ev.PrevData, Ops: ev.Ops, Blocks: ev.Blocks}
}

func TestVerifyCommitMessage(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(20)
	key := createTestRepo(t, s, did)
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	var last *CommitEvent
	for i := range 60 {
		writes := []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(t, fmt.Sprint("post ", i))}}
		if i%7 == 6 && last != nil {
			// An update and a delete of earlier records: both need prev for the inversion.
			rkey := last.Results[0].URI.RecordKey()
			writes = []Write{{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: rkey}}
		}
		ev, err := s.ApplyWrites(ctx, did, writes, WriteOpts{})
		if err != nil {
			t.Fatalf("ApplyWrites = %v", err)
		}
		if _, err := VerifyCommitMessage(ctx, messageOf(ev), pub); err != nil {
			t.Fatalf("VerifyCommitMessage(rev %s) = %v", ev.Rev, err)
		}
		last = ev
	}

	other, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _ := other.PublicKey()
	if _, err := VerifyCommitMessage(ctx, messageOf(last), otherPub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong key: err = %v, want ErrBadSignature", err)
	}

	ev, err := s.ApplyWrites(ctx, did, []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(t, "last")}}, WriteOpts{})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(m *CommitMessage){
		"forged prevData": func(m *CommitMessage) { m.PrevData = last.Commit },
		"wrong rev":       func(m *CommitMessage) { m.Rev = last.Rev },
		"wrong did":       func(m *CommitMessage) { m.DID = actorDID(21) },
		"op cid differs":  func(m *CommitMessage) { m.Ops = []Op{{Action: ActionCreate, Path: m.Ops[0].Path, CID: last.Commit}} },
		"op not in tree":  func(m *CommitMessage) { m.Ops = []Op{{Action: ActionDelete, Path: m.Ops[0].Path}} },
		"op dropped":      func(m *CommitMessage) { m.Ops = nil },
		"bad action":      func(m *CommitMessage) { m.Ops = []Op{{Action: "move", Path: m.Ops[0].Path, CID: m.Ops[0].CID}} },
		"commit missing":  func(m *CommitMessage) { m.Commit = last.Commit },
		"truncated car":   func(m *CommitMessage) { m.Blocks = m.Blocks[:len(m.Blocks)-5] },
		"record block missing": func(m *CommitMessage) {
			m.Blocks = dropBlock(t, m.Blocks, m.Ops[0].CID)
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := messageOf(ev)
			m.Ops = append([]Op(nil), m.Ops...)
			mutate(&m)
			if _, err := VerifyCommitMessage(ctx, m, pub); err == nil {
				t.Fatal("VerifyCommitMessage accepted a tampered message")
			}
		})
	}
}

// dropBlock rewrites a CAR without block c.
func dropBlock(t *testing.T, car []byte, c cid.Cid) []byte {
	t.Helper()
	f, err := ReadCAR(bytes.NewReader(car), DefaultCARLimits())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteCARHeader(&buf, f.Roots...); err != nil {
		t.Fatal(err)
	}
	for _, b := range f.Blocks {
		if b.CID != c {
			if err := WriteCARBlock(&buf, b.CID, b.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	return buf.Bytes()
}

func TestVerifyRepoCARFromExport(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(22)
	key := createTestRepo(t, s, did)
	pub, _ := key.PublicKey()
	for i := range 25 {
		if _, err := s.ApplyWrites(ctx, did, []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(t, fmt.Sprint(i))}}, WriteOpts{}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := s.ExportCAR(ctx, did, "", &buf); err != nil {
		t.Fatal(err)
	}
	car, err := ReadCAR(&buf, DefaultCARLimits())
	if err != nil {
		t.Fatal(err)
	}
	v, err := VerifyRepoCAR(ctx, did, car, pub)
	if err != nil {
		t.Fatalf("VerifyRepoCAR = %v", err)
	}
	if len(v.Records) != 25 {
		t.Errorf("records = %d, want 25", len(v.Records))
	}
	if _, err := VerifyRepoCAR(ctx, actorDID(23), car, pub); !errors.Is(err, ErrInvalidCommit) {
		t.Errorf("other did: err = %v, want ErrInvalidCommit", err)
	}
}

// BenchmarkVerifyCommitMessage is the crawler's per-commit check of W5 (relay ingest): a
// one-post commit on a repo of a few hundred records, signature included (the floor).
func BenchmarkVerifyCommitMessage(b *testing.B) {
	s, _ := openTestStore(b, StoreConfig{})
	ctx := b.Context()
	did := actorDID(24)
	key := createTestRepo(b, s, did)
	pub, _ := key.PublicKey()
	var msgs []CommitMessage
	for i := range 300 {
		ev, err := s.ApplyWrites(ctx, did, []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(b, fmt.Sprint("post ", i))}}, WriteOpts{})
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, messageOf(ev))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := VerifyCommitMessage(ctx, msgs[100+i%200], pub); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
