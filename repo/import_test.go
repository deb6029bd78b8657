package repo

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// exportRepo returns did's full CAR export.
func exportRepo(t testing.TB, s *Store, did syntax.DID) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.ExportCAR(t.Context(), did, "", &buf); err != nil {
		t.Fatalf("ExportCAR = %v", err)
	}
	return buf.Bytes()
}

func TestExportImportRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	src, _ := openTestStore(t, StoreConfig{})
	did := actorDID(40)
	want := seedRepo(t, src, did, 420)
	car := exportRepo(t, src, did)
	oldKey, err := src.SigningKey(ctx, did)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := oldKey.PublicKey()
	if err != nil {
		t.Fatal(err)
	}

	dst, _ := openTestStore(t, StoreConfig{})
	newKey, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := dst.Import(ctx, did, bytes.NewReader(car), pub, newKey)
	if err != nil {
		t.Fatalf("Import = %v", err)
	}
	srcCommit, srcRev, srcData, _ := src.Head(ctx, did)
	commit, rev, data, err := dst.Head(ctx, did)
	if err != nil || commit != srcCommit || rev != srcRev || data != srcData {
		t.Fatalf("imported head = %s %s %s %v, want %s %s %s", commit, rev, data, err, srcCommit, srcRev, srcData)
	}
	if ev.Commit != commit {
		t.Errorf("import event commit = %s, want %s", ev.Commit, commit)
	}
	for path, c := range want {
		coll, rkey, _ := splitPath(path)
		got, _, err := dst.GetRecord(ctx, did, coll, rkey)
		if err != nil || got != c {
			t.Errorf("GetRecord(%s) after import = %s, %v; want %s", path, got, err, c)
		}
	}
	checkReachable(t, dst, did)
	// Backlinks were rebuilt too (seedRepo writes likes).
	if got, err := dst.Backlinks(ctx, did, "app.bsky.feed.like", "at://did:plc:x/app.bsky.feed.post/1"); err != nil || len(got) != 1 {
		t.Errorf("Backlinks after import = %v, %v; want one", got, err)
	}
	// The imported repo continues with the new key.
	verifyEvent(t, createPost(t, dst, did, "z0000", "after import"), newKey)
	// A second import of the same DID is refused.
	if _, err := dst.Import(ctx, did, bytes.NewReader(car), pub, newKey); !errors.Is(err, ErrRepoExists) {
		t.Errorf("second Import = %v, want ErrRepoExists", err)
	}
}

func TestImportRejects(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	src, _ := openTestStore(t, StoreConfig{})
	did := actorDID(41)
	seedRepo(t, src, did, 30)
	car := exportRepo(t, src, did)
	key, _ := src.SigningKey(ctx, did)
	pub, _ := key.PublicKey()
	stranger, _ := atcrypto.GeneratePrivateKeyK256()
	strangerPub, _ := stranger.PublicKey()

	parsed, err := ReadCAR(bytes.NewReader(car), DefaultCARLimits())
	if err != nil {
		t.Fatal(err)
	}
	// Drop one record block: the tree names a value the CAR lacks.
	recordCIDs := map[cid.Cid]bool{}
	for _, c := range seedValues(t, src, did) {
		recordCIDs[c] = true
	}
	var missing bytes.Buffer
	WriteCARHeader(&missing, parsed.Roots...)
	dropped := false
	for _, b := range parsed.Blocks {
		if !dropped && recordCIDs[b.CID] {
			dropped = true
			continue
		}
		WriteCARBlock(&missing, b.CID, b.Data)
	}

	tests := []struct {
		name string
		did  syntax.DID
		car  []byte
		pub  atcrypto.PublicKey
		want error
	}{
		{"wrong key", did, car, strangerPub, ErrBadSignature},
		{"wrong did", actorDID(42), car, pub, ErrInvalidCommit},
		{"garbage", did, []byte("not a car"), pub, ErrInvalidCAR},
		{"missing record", did, missing.Bytes(), pub, ErrInvalidCAR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dst, _ := openTestStore(t, StoreConfig{})
			d := tt.did
			if _, err := dst.Import(ctx, d, bytes.NewReader(tt.car), tt.pub, stranger); !errors.Is(err, tt.want) {
				t.Errorf("Import = %v, want %v", err, tt.want)
			}
			if ok, _ := dst.Exists(ctx, d); ok {
				t.Errorf("a failed import left a repo behind")
			}
		})
	}
}

// seedValues returns the record CIDs of did.
func seedValues(t testing.TB, s *Store, did syntax.DID) []cid.Cid {
	t.Helper()
	var out []cid.Cid
	for _, coll := range []syntax.NSID{"app.bsky.feed.post", "app.bsky.feed.like"} {
		recs, _, err := s.ListRecords(t.Context(), did, coll, "", 100, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			out = append(out, r.CID)
		}
	}
	return out
}
