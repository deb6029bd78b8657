package repo

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	indigorepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// seedRepo creates did with n posts (rkeys p0000…) and 3 likes, returning the expected
// path → CID map.
func seedRepo(t testing.TB, s *Store, did syntax.DID, n int) map[string]cid.Cid {
	t.Helper()
	createTestRepo(t, s, did)
	want := map[string]cid.Cid{}
	var ws []Write
	flush := func() {
		if len(ws) == 0 {
			return
		}
		if _, err := s.ApplyWrites(t.Context(), did, ws, WriteOpts{}); err != nil {
			t.Fatalf("ApplyWrites = %v", err)
		}
		ws = nil
	}
	for i := range n {
		rec := postRecord(t, fmt.Sprint("post ", i))
		rkey := fmt.Sprintf("p%04d", i)
		ws = append(ws, Write{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: syntax.RecordKey(rkey), Record: rec})
		want["app.bsky.feed.post/"+rkey] = rec.CID
		if len(ws) == MaxWrites {
			flush()
		}
	}
	flush()
	for i := range 3 {
		rec := jsonRecord(t, fmt.Sprintf(`{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:x/app.bsky.feed.post/%d","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},"createdAt":"2024-01-02T03:04:05.000Z"}`, i))
		rkey := fmt.Sprintf("l%d", i)
		ws = append(ws, Write{Action: ActionCreate, Collection: "app.bsky.feed.like", RKey: syntax.RecordKey(rkey), Record: rec})
		want["app.bsky.feed.like/"+rkey] = rec.CID
	}
	flush()
	return want
}

func TestListRecordsPages(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	did := actorDID(30)
	seedRepo(t, s, did, 25)
	tests := []struct {
		name    string
		reverse bool
		first   string
	}{
		{"descending", false, "p0024"},
		{"ascending", true, "p0000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var all []string
			cursor := ""
			for range 10 {
				page, next, err := s.ListRecords(t.Context(), did, "app.bsky.feed.post", cursor, 10, tt.reverse)
				if err != nil {
					t.Fatalf("ListRecords(cursor %q) = %v", cursor, err)
				}
				for _, r := range page {
					all = append(all, string(r.RKey))
				}
				if next == "" {
					break
				}
				cursor = next
			}
			if len(all) != 25 || all[0] != tt.first {
				t.Fatalf("listed %d records starting %v, want 25 starting %s", len(all), all[:min(3, len(all))], tt.first)
			}
			sorted := slices.Clone(all)
			slices.Sort(sorted)
			if !tt.reverse {
				slices.Reverse(sorted)
			}
			if !slices.Equal(all, sorted) {
				t.Errorf("records out of order: %v", all)
			}
		})
	}
}

func TestDescribeListsCollections(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	did := actorDID(31)
	seedRepo(t, s, did, 3)
	got, err := s.Describe(t.Context(), did)
	if want := []syntax.NSID{"app.bsky.feed.like", "app.bsky.feed.post"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Describe = %v, %v; want %v", got, err, want)
	}
}

// TestExportLoadsInIndigo checks our full export with indigo's loader: same commit, every
// record present with its CID, and blocks in the preferred order (commit first, then the
// MST root).
func TestExportLoadsInIndigo(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(32)
	want := seedRepo(t, s, did, 450)
	var buf bytes.Buffer
	if err := s.ExportCAR(ctx, did, "", &buf); err != nil {
		t.Fatalf("ExportCAR = %v", err)
	}
	commit, repo, err := indigorepo.LoadRepoFromCAR(ctx, bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("indigo LoadRepoFromCAR = %v", err)
	}
	head, _, data, err := s.Head(ctx, did)
	if err != nil {
		t.Fatal(err)
	}
	if commit.Data != data {
		t.Errorf("exported commit data %s, head %s", commit.Data, data)
	}
	got := map[string]cid.Cid{}
	if err := repo.MST.WriteToMap(got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("indigo sees %d records, want %d", len(got), len(want))
	}
	for k, c := range want {
		coll, rkey, _ := syntax.ParseRepoPath(k)
		_, rc, err := repo.GetRecordBytes(ctx, coll, rkey)
		if err != nil || *rc != c {
			t.Errorf("indigo GetRecordBytes(%s) = %v, %v; want %s", k, rc, err, c)
		}
	}
	car, err := ReadCAR(bytes.NewReader(buf.Bytes()), DefaultCARLimits())
	if err != nil {
		t.Fatal(err)
	}
	if len(car.Blocks) < 2 || car.Blocks[0].CID != head || car.Blocks[1].CID != data {
		t.Errorf("export does not start with commit then MST root")
	}
}

func TestExportSince(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(33)
	seedRepo(t, s, did, 5)
	_, since, _, err := s.Head(ctx, did)
	if err != nil {
		t.Fatal(err)
	}
	ev := createPost(t, s, did, "z0001", "later")
	var buf bytes.Buffer
	if err := s.ExportCAR(ctx, did, since, &buf); err != nil {
		t.Fatalf("ExportCAR(since) = %v", err)
	}
	car, err := ReadCAR(&buf, DefaultCARLimits())
	if err != nil {
		t.Fatal(err)
	}
	got := map[cid.Cid]bool{}
	for _, b := range car.Blocks {
		got[b.CID] = true
	}
	if car.Roots[0] != ev.Commit || !got[ev.Commit] || !got[ev.Ops[0].CID] || !got[ev.Data] {
		t.Errorf("since-export lacks the new commit, record or root")
	}
	full := 0
	var all bytes.Buffer
	s.ExportCAR(ctx, did, "", &all)
	fc, _ := ReadCAR(&all, DefaultCARLimits())
	full = len(fc.Blocks)
	if len(car.Blocks) >= full {
		t.Errorf("since-export has %d blocks, the full export %d", len(car.Blocks), full)
	}
}

func TestRecordProofAndGetBlocks(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(34)
	want := seedRepo(t, s, did, 300)
	var buf bytes.Buffer
	if err := s.RecordProof(ctx, did, "app.bsky.feed.post", "p0123", &buf); err != nil {
		t.Fatalf("RecordProof = %v", err)
	}
	// A proof is a partial repo: indigo must find the record through it.
	_, repo, err := indigorepo.LoadRepoFromCAR(ctx, bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("indigo LoadRepoFromCAR(proof) = %v", err)
	}
	_, c, err := repo.GetRecordBytes(ctx, "app.bsky.feed.post", "p0123")
	if err != nil || *c != want["app.bsky.feed.post/p0123"] {
		t.Errorf("record through proof = %v, %v", c, err)
	}
	buf.Reset()
	if err := s.RecordProof(ctx, did, "app.bsky.feed.post", "nope", &buf); err != nil {
		t.Errorf("RecordProof(absent) = %v, want an absence proof", err)
	}

	cids := []cid.Cid{want["app.bsky.feed.post/p0001"], want["app.bsky.feed.post/p0002"]}
	buf.Reset()
	if err := s.GetBlocks(ctx, did, cids, &buf); err != nil {
		t.Fatalf("GetBlocks = %v", err)
	}
	car, err := ReadCAR(&buf, DefaultCARLimits())
	if err != nil || len(car.Roots) != 0 || len(car.Blocks) != 2 {
		t.Errorf("GetBlocks CAR = %+v, %v; want 2 blocks, no roots", car, err)
	}
	missing := postRecord(t, "never written").CID
	if err := s.GetBlocks(ctx, did, []cid.Cid{missing}, &buf); !errors.Is(err, ErrBlockNotFound) {
		t.Errorf("GetBlocks(missing) = %v, want ErrBlockNotFound", err)
	}
}

func TestPreferences(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(35)
	createTestRepo(t, s, did)
	if got, err := s.Preferences(ctx, did); err != nil || got != nil {
		t.Errorf("Preferences(new) = %s, %v; want nil", got, err)
	}
	for _, p := range []string{`[1]`, `[2]`} {
		if err := s.PutPreferences(ctx, did, []byte(p)); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Preferences(ctx, did); err != nil || string(got) != p {
			t.Errorf("Preferences = %s, %v; want %s", got, err, p)
		}
	}
}
