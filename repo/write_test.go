package repo

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	indigorepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
)

// firehoseCommit turns an event into the #commit message the relay would send.
func firehoseCommit(ev *CommitEvent) *comatproto.SyncSubscribeRepos_Commit {
	msg := &comatproto.SyncSubscribeRepos_Commit{
		Repo:   string(ev.DID),
		Rev:    string(ev.Rev),
		Commit: lexutil.LexLink(ev.Commit),
		Blocks: ev.Blocks,
		Time:   syntax.DatetimeNow().String(),
		Ops:    []*comatproto.SyncSubscribeRepos_RepoOp{},
		Blobs:  []lexutil.LexLink{},
	}
	if ev.Since != "" {
		since := string(ev.Since)
		msg.Since = &since
	}
	if ev.PrevData.Defined() {
		pd := lexutil.LexLink(ev.PrevData)
		msg.PrevData = &pd
	}
	for _, op := range ev.Ops {
		o := &comatproto.SyncSubscribeRepos_RepoOp{Action: string(op.Action), Path: op.Path}
		if op.CID.Defined() {
			c := lexutil.LexLink(op.CID)
			o.Cid = &c
		}
		if op.Prev.Defined() {
			p := lexutil.LexLink(op.Prev)
			o.Prev = &p
		}
		msg.Ops = append(msg.Ops, o)
	}
	for _, b := range ev.BlobsAdded {
		msg.Blobs = append(msg.Blobs, lexutil.LexLink(b))
	}
	return msg
}

// verifyEvent checks an event the way a strict Sync 1.1 consumer would: indigo's
// VerifyCommitMessage (ops match the tree, inversion gives prevData) and the signature.
func verifyEvent(t testing.TB, ev *CommitEvent, key atcrypto.PrivateKey) {
	t.Helper()
	msg := firehoseCommit(ev)
	if ev.PrevData.Defined() {
		if _, err := indigorepo.VerifyCommitMessage(t.Context(), msg); err != nil {
			t.Fatalf("VerifyCommitMessage(rev %s) = %v", ev.Rev, err)
		}
	}
	commit, root, err := indigorepo.LoadCommitFromCAR(t.Context(), bytes.NewReader(ev.Blocks))
	if err != nil {
		t.Fatalf("LoadCommitFromCAR(rev %s) = %v", ev.Rev, err)
	}
	if *root != ev.Commit || commit.Data != ev.Data || commit.Rev != string(ev.Rev) || commit.DID != string(ev.DID) {
		t.Fatalf("commit block = %s %s %s %s, event says %s %s %s %s", root, commit.Data, commit.Rev, commit.DID, ev.Commit, ev.Data, ev.Rev, ev.DID)
	}
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := commit.VerifySignature(pub); err != nil {
		t.Fatalf("commit signature (rev %s): %v", ev.Rev, err)
	}
}

func TestApplyWritesCreateUpdateDelete(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(10)
	key := createTestRepo(t, s, did)

	hello := postRecord(t, "hello")
	ev, err := s.ApplyWrites(ctx, did, []Write{
		{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2", Record: hello},
		{Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(t, "auto rkey")},
	}, WriteOpts{})
	if err != nil {
		t.Fatalf("ApplyWrites(create) = %v", err)
	}
	verifyEvent(t, ev, key)
	if len(ev.Results) != 2 || ev.Results[0].URI != syntax.ATURI("at://"+string(did)+"/app.bsky.feed.post/3k2aaaaaaaaa2") || ev.Results[0].CID != hello.CID {
		t.Errorf("Results = %+v", ev.Results)
	}
	autoURI := ev.Results[1].URI
	if _, err := syntax.ParseTID(string(autoURI.RecordKey())); err != nil {
		t.Errorf("generated rkey %q is not a TID: %v", autoURI.RecordKey(), err)
	}

	c, data, err := s.GetRecord(ctx, did, "app.bsky.feed.post", "3k2aaaaaaaaa2")
	if err != nil || c != hello.CID || !bytes.Equal(data, hello.CBOR) {
		t.Fatalf("GetRecord = %s, %d bytes, %v; want %s", c, len(data), err, hello.CID)
	}

	bye := postRecord(t, "bye")
	ev2, err := s.ApplyWrites(ctx, did, []Write{
		{Action: ActionUpdate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2", Record: bye},
	}, WriteOpts{})
	if err != nil {
		t.Fatalf("ApplyWrites(update) = %v", err)
	}
	verifyEvent(t, ev2, key)
	if ev2.Since != ev.Rev || ev2.PrevData != ev.Data {
		t.Errorf("update since %s prevData %s, want %s %s", ev2.Since, ev2.PrevData, ev.Rev, ev.Data)
	}
	if want := (Op{Action: ActionUpdate, Path: "app.bsky.feed.post/3k2aaaaaaaaa2", CID: bye.CID, Prev: hello.CID}); ev2.Ops[0] != want {
		t.Errorf("update op = %+v, want %+v", ev2.Ops[0], want)
	}

	ev3, err := s.ApplyWrites(ctx, did, []Write{
		{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2"},
	}, WriteOpts{})
	if err != nil {
		t.Fatalf("ApplyWrites(delete) = %v", err)
	}
	verifyEvent(t, ev3, key)
	if _, _, err := s.GetRecord(ctx, did, "app.bsky.feed.post", "3k2aaaaaaaaa2"); !errors.Is(err, ErrRecordNotFound) {
		t.Errorf("GetRecord after delete = %v, want ErrRecordNotFound", err)
	}
	checkReachable(t, s, did)
}

func TestApplyWritesRules(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(11)
	createTestRepo(t, s, did)
	existing := createPost(t, s, did, "3k2aaaaaaaaa2", "there")
	cur := existing.Ops[0].CID
	other := postRecord(t, "other").CID
	undef := cid.Undef
	head := existing.Commit
	stale := existing.PrevData // any CID that is not the head

	const coll = "app.bsky.feed.post"
	tests := []struct {
		name string
		w    Write
		opts WriteOpts
		want error
	}{
		{"create existing", Write{Action: ActionCreate, Collection: coll, RKey: "3k2aaaaaaaaa2", Record: postRecord(t, "x")}, WriteOpts{}, ErrRecordExists},
		{"update missing", Write{Action: ActionUpdate, Collection: coll, RKey: "3k2aaaaaaaaa3", Record: postRecord(t, "x")}, WriteOpts{}, ErrRecordNotFound},
		{"delete missing", Write{Action: ActionDelete, Collection: coll, RKey: "3k2aaaaaaaaa3"}, WriteOpts{}, ErrRecordNotFound},
		{"create swap must-not-exist on existing", Write{Action: ActionCreate, Collection: coll, RKey: "3k2aaaaaaaaa2", Record: postRecord(t, "x"), SwapRecord: &undef}, WriteOpts{}, ErrInvalidSwap},
		{"update swap mismatch", Write{Action: ActionUpdate, Collection: coll, RKey: "3k2aaaaaaaaa2", Record: postRecord(t, "x"), SwapRecord: &other}, WriteOpts{}, ErrInvalidSwap},
		{"delete swap must-not-exist", Write{Action: ActionDelete, Collection: coll, RKey: "3k2aaaaaaaaa2", SwapRecord: &undef}, WriteOpts{}, ErrInvalidSwap},
		{"create swap on missing path", Write{Action: ActionCreate, Collection: coll, RKey: "3k2aaaaaaaaa4", Record: postRecord(t, "x"), SwapRecord: &other}, WriteOpts{}, ErrInvalidSwap},
		{"swap commit mismatch", Write{Action: ActionCreate, Collection: coll, RKey: "3k2aaaaaaaaa5", Record: postRecord(t, "x")}, WriteOpts{SwapCommit: &stale}, ErrInvalidSwap},
		{"type is not the collection", Write{Action: ActionCreate, Collection: "app.bsky.feed.like", RKey: "3k2aaaaaaaaa6", Record: postRecord(t, "x")}, WriteOpts{}, ErrInvalidRecord},
		{"bad collection", Write{Action: ActionDelete, Collection: "not an nsid", RKey: "x"}, WriteOpts{}, ErrInvalidWrite},
		{"bad rkey", Write{Action: ActionDelete, Collection: coll, RKey: ".."}, WriteOpts{}, ErrInvalidWrite},
		{"update without record", Write{Action: ActionUpdate, Collection: coll, RKey: "3k2aaaaaaaaa2"}, WriteOpts{}, ErrInvalidWrite},
		{"unknown action", Write{Action: "upsert", Collection: coll, RKey: "3k2aaaaaaaaa2"}, WriteOpts{}, ErrInvalidWrite},
		// Successful swaps last: they change the repo (each on its own path).
		{"create swap must-not-exist", Write{Action: ActionCreate, Collection: coll, RKey: "3k2aaaaaaaab1", Record: postRecord(t, "y"), SwapRecord: &undef}, WriteOpts{SwapCommit: &head}, nil},
	}
	for _, tt := range tests {
		// Sequential: the cases share one repo and the last one writes.
		_, err := s.ApplyWrites(ctx, did, []Write{tt.w}, tt.opts)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: ApplyWrites = %v, want %v", tt.name, err, tt.want)
		}
	}
	ev, err := s.ApplyWrites(ctx, did, []Write{
		{Action: ActionUpdate, Collection: coll, RKey: "3k2aaaaaaaaa2", Record: postRecord(t, "z"), SwapRecord: &cur},
	}, WriteOpts{})
	if err != nil {
		t.Fatalf("update with matching swap = %v", err)
	}
	if _, err := s.ApplyWrites(ctx, did, []Write{
		{Action: ActionDelete, Collection: coll, RKey: "3k2aaaaaaaaa2", SwapRecord: &ev.Ops[0].CID},
	}, WriteOpts{SwapCommit: &ev.Commit}); err != nil {
		t.Fatalf("delete with matching swaps = %v", err)
	}
}

func TestUpdateToSameValueMakesNoCommit(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(16)
	createTestRepo(t, s, did)
	before := createPost(t, s, did, "3k2aaaaaaaaa2", "same")
	called := false
	ev, err := s.ApplyWrites(ctx, did, []Write{
		{Action: ActionUpdate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2", Record: postRecord(t, "same")},
	}, WriteOpts{OnCommit: func(*CommitEvent) error { called = true; return nil }})
	if err != nil {
		t.Fatalf("ApplyWrites(same value) = %v", err)
	}
	if !ev.NoChange || ev.Commit != before.Commit || len(ev.Ops) != 0 || called {
		t.Errorf("same-value update: NoChange %v, commit %s (head %s), %d ops, OnCommit called %v", ev.NoChange, ev.Commit, before.Commit, len(ev.Ops), called)
	}
	if ev.Results[0].CID != before.Ops[0].CID {
		t.Errorf("result CID = %s, want %s", ev.Results[0].CID, before.Ops[0].CID)
	}
}

func TestApplyWritesCap(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(12)
	key := createTestRepo(t, s, did)
	batch := func(n int, prefix string) []Write {
		ws := make([]Write, n)
		for i := range ws {
			ws[i] = Write{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: syntax.RecordKey(fmt.Sprintf("%s%04d", prefix, i)), Record: postRecord(t, fmt.Sprint(prefix, i))}
		}
		return ws
	}
	if _, err := s.ApplyWrites(ctx, did, batch(MaxWrites+1, "a"), WriteOpts{}); !errors.Is(err, ErrInvalidWrite) {
		t.Errorf("ApplyWrites(%d writes) = %v, want ErrInvalidWrite", MaxWrites+1, err)
	}
	ev, err := s.ApplyWrites(ctx, did, batch(MaxWrites, "b"), WriteOpts{})
	if err != nil {
		t.Fatalf("ApplyWrites(%d writes) = %v", MaxWrites, err)
	}
	if len(ev.Ops) != MaxWrites {
		t.Errorf("ops = %d, want %d", len(ev.Ops), MaxWrites)
	}
	verifyEvent(t, ev, key)
}

func TestApplyWritesIsAtomic(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(13)
	createTestRepo(t, s, did)
	before := createPost(t, s, did, "3k2aaaaaaaaa2", "keep")
	ws := []Write{
		{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaab2", Record: postRecord(t, "new 1")},
		{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2"},
		{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaab3", Record: postRecord(t, "new 2")},
		{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa9"}, // missing
	}
	if _, err := s.ApplyWrites(ctx, did, ws, WriteOpts{}); !errors.Is(err, ErrRecordNotFound) {
		t.Fatalf("ApplyWrites(batch with a bad op) = %v, want ErrRecordNotFound", err)
	}
	commit, rev, _, err := s.Head(ctx, did)
	if err != nil || commit != before.Commit || rev != before.Rev {
		t.Errorf("Head after failed batch = %s %s %v, want %s %s", commit, rev, err, before.Commit, before.Rev)
	}
	recs, _, err := s.ListRecords(ctx, did, "app.bsky.feed.post", "", 100, false)
	if err != nil || len(recs) != 1 || recs[0].RKey != "3k2aaaaaaaaa2" {
		t.Errorf("ListRecords after failed batch = %+v, %v; want only the kept post", recs, err)
	}
	checkReachable(t, s, did)
	// The node cache must not have been poisoned by the rolled-back tree: the next write
	// still verifies.
	verifyEvent(t, createPost(t, s, did, "3k2aaaaaaaab4", "after"), mustKey(t, s, did))
}

func mustKey(t testing.TB, s *Store, did syntax.DID) atcrypto.PrivateKey {
	t.Helper()
	k, err := s.SigningKey(t.Context(), did)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOnCommitRunsInOrder(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	did := actorDID(14)
	createTestRepo(t, s, did)
	var revs []syntax.TID
	done := make(chan struct{})
	const n = 20
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			_, err := s.ApplyWrites(t.Context(), did, []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(t, fmt.Sprint(i))}},
				WriteOpts{OnCommit: func(ev *CommitEvent) error {
					revs = append(revs, ev.Rev) // safe: OnCommit runs under the repo's lock
					return nil
				}})
			if err != nil {
				t.Errorf("ApplyWrites = %v", err)
			}
		}()
	}
	for range n {
		<-done
	}
	if len(revs) != n || !slices.IsSorted(revs) {
		t.Errorf("OnCommit saw revs %v, want %d in increasing order", revs, n)
	}
	errHook := errors.New("relay down")
	ev, err := s.ApplyWrites(t.Context(), did, []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(t, "x")}},
		WriteOpts{OnCommit: func(*CommitEvent) error { return errHook }})
	if !errors.Is(err, errHook) || ev == nil {
		t.Errorf("ApplyWrites with failing OnCommit = %v, %v; want the event and the hook's error", ev, err)
	}
}

func TestBlobRefsAndBacklinks(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(15)
	createTestRepo(t, s, did)
	const blob = "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"
	blobCID := cid.MustParse(blob)
	withImage := func(text string) *Record {
		return jsonRecord(t, fmt.Sprintf(`{"$type":"app.bsky.feed.post","text":%q,"createdAt":"2024-01-02T03:04:05.000Z",
			"embed":{"$type":"app.bsky.embed.images","images":[{"alt":"","image":{"$type":"blob","ref":{"$link":%q},"mimeType":"image/png","size":1000}}]}}`, text, blob))
	}
	ev, err := s.ApplyWrites(ctx, did, []Write{
		{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2", Record: withImage("one")},
		{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa3", Record: withImage("two")},
	}, WriteOpts{})
	if err != nil {
		t.Fatalf("ApplyWrites = %v", err)
	}
	if !slices.Equal(ev.BlobsAdded, []cid.Cid{blobCID}) || len(ev.BlobsRemoved) != 0 {
		t.Errorf("blobs added %v removed %v, want added [%s]", ev.BlobsAdded, ev.BlobsRemoved, blob)
	}
	ev, err = s.ApplyWrites(ctx, did, []Write{{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2"}}, WriteOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.BlobsAdded)+len(ev.BlobsRemoved) != 0 {
		t.Errorf("deleting one of two users: added %v removed %v, want none", ev.BlobsAdded, ev.BlobsRemoved)
	}
	ev, err = s.ApplyWrites(ctx, did, []Write{{Action: ActionUpdate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa3", Record: postRecord(t, "no image")}}, WriteOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ev.BlobsRemoved, []cid.Cid{blobCID}) {
		t.Errorf("removing the last user: removed %v, want [%s]", ev.BlobsRemoved, blob)
	}
	if ok, err := s.BlobReferenced(ctx, did, blobCID); err != nil || ok {
		t.Errorf("BlobReferenced = %v, %v; want false", ok, err)
	}

	subject := "at://did:plc:other/app.bsky.feed.post/3k2aaaaaaaaa2"
	like := jsonRecord(t, fmt.Sprintf(`{"$type":"app.bsky.feed.like","subject":{"uri":%q,"cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},"createdAt":"2024-01-02T03:04:05.000Z"}`, subject))
	follow := jsonRecord(t, `{"$type":"app.bsky.graph.follow","subject":"did:plc:other","createdAt":"2024-01-02T03:04:05.000Z"}`)
	if _, err := s.ApplyWrites(ctx, did, []Write{
		{Action: ActionCreate, Collection: "app.bsky.feed.like", RKey: "3k2aaaaaaaal1", Record: like},
		{Action: ActionCreate, Collection: "app.bsky.graph.follow", RKey: "3k2aaaaaaaaf1", Record: follow},
	}, WriteOpts{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		collection syntax.NSID
		subject    string
		want       []syntax.RecordKey
	}{
		{"like by uri", "app.bsky.feed.like", subject, []syntax.RecordKey{"3k2aaaaaaaal1"}},
		{"follow by did", "app.bsky.graph.follow", "did:plc:other", []syntax.RecordKey{"3k2aaaaaaaaf1"}},
		{"other collection", "app.bsky.feed.repost", subject, nil},
	}
	for _, tt := range tests {
		got, err := s.Backlinks(ctx, did, tt.collection, tt.subject)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: Backlinks = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	if _, err := s.ApplyWrites(ctx, did, []Write{{Action: ActionDelete, Collection: "app.bsky.feed.like", RKey: "3k2aaaaaaaal1"}}, WriteOpts{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Backlinks(ctx, did, "app.bsky.feed.like", subject); len(got) != 0 {
		t.Errorf("Backlinks after delete = %v, want none", got)
	}
}

// TestRandomOpsAgainstIndigo runs a random sequence of batches and checks every event with
// indigo's verifier, our root against indigo's MST for the same records, and that the
// stored blocks are exactly the reachable ones.
func TestRandomOpsAgainstIndigo(t *testing.T) {
	t.Parallel()
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			s, _ := openTestStore(t, StoreConfig{NodeCache: 64})
			did := actorDID(20 + int(seed))
			key := createTestRepo(t, s, did)
			r := rand.New(rand.NewPCG(seed, 42))
			model := map[string]cid.Cid{}
			collections := []syntax.NSID{"app.bsky.feed.post", "app.bsky.feed.like", "com.example.thing"}
			clock := syntax.NewTIDClock(1)
			for round := range 60 {
				var ws []Write
				touched := map[string]bool{}
				for range 1 + r.IntN(8) {
					keys := slices.Sorted(maps.Keys(model))
					var w Write
					switch op := r.IntN(10); {
					case op < 5 || len(keys) == 0:
						coll := collections[r.IntN(len(collections))]
						w = Write{Action: ActionCreate, Collection: coll, RKey: syntax.RecordKey(clock.Next().String()),
							Record: jsonRecord(t, fmt.Sprintf(`{"$type":%q,"n":%d}`, coll, r.IntN(40)))}
					case op < 8:
						k := keys[r.IntN(len(keys))]
						coll, rkey, _ := syntax.ParseRepoPath(k)
						w = Write{Action: ActionUpdate, Collection: coll, RKey: rkey,
							Record: jsonRecord(t, fmt.Sprintf(`{"$type":%q,"n":%d}`, coll, r.IntN(40)))}
					default:
						k := keys[r.IntN(len(keys))]
						coll, rkey, _ := syntax.ParseRepoPath(k)
						w = Write{Action: ActionDelete, Collection: coll, RKey: rkey}
					}
					p := string(w.Collection) + "/" + string(w.RKey)
					if touched[p] {
						continue
					}
					touched[p] = true
					ws = append(ws, w)
					if w.Action == ActionDelete {
						delete(model, p)
					} else {
						model[p] = w.Record.CID
					}
				}
				ev, err := s.ApplyWrites(t.Context(), did, ws, WriteOpts{Validate: ValidateSkip})
				if err != nil {
					t.Fatalf("round %d: ApplyWrites = %v", round, err)
				}
				if !ev.NoChange {
					verifyEvent(t, ev, key)
				}
				if want := indigoRoot(t, model); ev.Data != want {
					t.Fatalf("round %d: root %s, indigo computes %s for the same %d records", round, ev.Data, want, len(model))
				}
			}
			checkReachable(t, s, did)
		})
	}
}

// TestReplacedNodesWrittenAgain deletes a record right after creating it, so the delete
// writes again the nodes the create replaced while they are on the garbage list
// (migration 0003): they must come off it, and until a collection the replaced nodes must
// not be served or exported.
func TestReplacedNodesWrittenAgain(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _ := openTestStore(t, StoreConfig{})
	did := actorDID(90)
	createTestRepo(t, s, did)
	for i := range 20 {
		createPost(t, s, did, fmt.Sprintf("3k2aaaaaaa%03d", i), "x")
	}
	before := createPost(t, s, did, "3k2aaaaaab000", "y")
	extra := createPost(t, s, did, "3k2aaaaaab001", "z")
	if _, err := s.ApplyWrites(ctx, did, []Write{{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaab001"}}, WriteOpts{}); err != nil {
		t.Fatalf("ApplyWrites(delete) = %v", err)
	}
	var buf bytes.Buffer
	if err := s.GetBlocks(ctx, did, []cid.Cid{before.Data}, &buf); err != nil {
		t.Errorf("GetBlocks(root written again) = %v", err)
	}
	if err := s.GetBlocks(ctx, did, []cid.Cid{extra.Data}, &buf); !errors.Is(err, ErrBlockNotFound) {
		t.Errorf("GetBlocks(replaced root) = %v, want ErrBlockNotFound", err)
	}
	buf.Reset()
	if err := s.ExportCAR(ctx, did, before.Rev, &buf); err != nil {
		t.Fatalf("ExportCAR(since) = %v", err)
	}
	car, err := ReadCAR(&buf, DefaultCARLimits())
	if err != nil {
		t.Fatalf("ReadCAR(export since) = %v", err)
	}
	for _, b := range car.Blocks {
		if b.CID == extra.Data {
			t.Errorf("ExportCAR(since %s) has the replaced root %s", before.Rev, extra.Data)
		}
	}
	checkReachable(t, s, did)
}

// TestWriterCollectsReplacedNodes checks that a writer deletes the replaced nodes once
// collectEvery of them are listed, so a long burst of commits does not grow the file.
func TestWriterCollectsReplacedNodes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, _ := openTestStore(t, StoreConfig{})
	did := actorDID(91)
	createTestRepo(t, s, did)
	prev, most, mostFresh, collections := 0, 0, 0, 0
	for i := range 700 {
		createPost(t, s, did, fmt.Sprintf("3k2aaaaaa%04d", i), "x")
		var listed, fresh int
		err := s.withActor(ctx, did, func(a *actor) error {
			return a.read(ctx, func(tx *sql.Tx) error {
				return tx.QueryRowContext(ctx, "SELECT (SELECT count(*) FROM garbage), (SELECT count(*) FROM fresh)").Scan(&listed, &fresh)
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		if listed < prev {
			collections++
		}
		prev, most, mostFresh = listed, max(most, listed), max(mostFresh, fresh)
	}
	// A commit of one record replaces (and writes) a handful of nodes, so the lists pass
	// collectEvery by no more than that.
	if collections == 0 || most > collectEvery+32 || mostFresh > collectEvery+32 {
		t.Errorf("700 commits: %d collections, garbage list reached %d rows, fresh table %d; want some, at most %d", collections, most, mostFresh, collectEvery+32)
	}
	checkReachable(t, s, did)
}

// TestGroupCommit queues writes of every outcome behind the repo's lock, so that one
// holder commits them as a group: each success is its own verifiable commit on top of the
// one before, in queue order, and each failure leaves the others alone. (The first three
// could share a commit, but the second fails, so each is committed alone.)
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	s, dir := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(15)
	key := createTestRepo(t, s, did)
	first := createPost(t, s, did, "3k2aaaaaaaaa2", "first")
	stale := first.Commit
	missing := cid.Undef

	type outcome struct {
		ev  *CommitEvent
		err error
	}
	writes := []struct {
		name    string
		writes  []Write
		opts    WriteOpts
		wantErr error
	}{
		{"create", []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaab22", Record: postRecord(t, "a")}}, WriteOpts{}, nil},
		{"create of a present path", []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2", Record: postRecord(t, "dup")}}, WriteOpts{}, ErrRecordExists},
		{"two creates", []Write{
			{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaab23", Record: postRecord(t, "b")},
			{Action: ActionCreate, Collection: "app.bsky.feed.like", RKey: "3k2aaaaaaab24", Record: jsonRecord(t, `{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:x/app.bsky.feed.post/1","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},"createdAt":"2024-01-02T03:04:05.000Z"}`)},
		}, WriteOpts{}, nil},
		{"stale swapCommit", []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaab25", Record: postRecord(t, "c")}}, WriteOpts{SwapCommit: &stale}, ErrInvalidSwap},
		{"update to the same value", []Write{{Action: ActionUpdate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2", Record: postRecord(t, "first")}}, WriteOpts{}, nil},
		{"swapRecord of a present path", []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaab23", Record: postRecord(t, "d"), SwapRecord: &missing}}, WriteOpts{}, ErrInvalidSwap},
		{"delete", []Write{{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaab22"}}, WriteOpts{}, nil},
		{"update", []Write{{Action: ActionUpdate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2", Record: postRecord(t, "edited")}}, WriteOpts{}, nil},
	}
	outcomes := make([]outcome, len(writes))
	var forwarded []*CommitEvent // appended by OnCommit, which runs under the repo's lock
	var wg sync.WaitGroup
	err := s.withActor(ctx, did, func(a *actor) error {
		a.mu.Lock()
		for i, w := range writes {
			wg.Go(func() {
				opts := w.opts
				opts.OnCommit = func(ev *CommitEvent) error {
					forwarded = append(forwarded, ev)
					return nil
				}
				ev, err := s.ApplyWrites(ctx, did, w.writes, opts)
				outcomes[i] = outcome{ev, err}
			})
			waitQueued(a, i+1) // so they queue in order
		}
		a.mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	prev := first
	var wantForwarded []*CommitEvent
	for i, w := range writes {
		got := outcomes[i]
		if w.wantErr != nil {
			if !errors.Is(got.err, w.wantErr) {
				t.Errorf("%s: err = %v, want %v", w.name, got.err, w.wantErr)
			}
			continue
		}
		if got.err != nil {
			t.Fatalf("%s: err = %v", w.name, got.err)
		}
		if got.ev.NoChange {
			if got.ev.Rev != prev.Rev {
				t.Errorf("%s: no-change result names rev %s, want the head %s", w.name, got.ev.Rev, prev.Rev)
			}
			continue
		}
		verifyEvent(t, got.ev, key)
		if got.ev.Since != prev.Rev || got.ev.PrevData != prev.Data {
			t.Errorf("%s: since %s prevData %s, want %s %s", w.name, got.ev.Since, got.ev.PrevData, prev.Rev, prev.Data)
		}
		wantForwarded = append(wantForwarded, got.ev)
		prev = got.ev
	}
	if !slices.Equal(forwarded, wantForwarded) {
		t.Errorf("OnCommit saw %d events, want the %d successful commits in queue order", len(forwarded), len(wantForwarded))
	}
	commit, rev, _, err := s.Head(ctx, did)
	if err != nil || commit != prev.Commit || rev != prev.Rev {
		t.Errorf("Head = %s %s %v, want %s %s", commit, rev, err, prev.Commit, prev.Rev)
	}
	recs, _, err := s.ListRecords(ctx, did, "app.bsky.feed.post", "", 100, false)
	if err != nil || len(recs) != 2 || recs[0].RKey != "3k2aaaaaaab23" || recs[1].RKey != "3k2aaaaaaaaa2" {
		t.Errorf("ListRecords = %+v, %v; want b and the edited first post", recs, err)
	}
	checkReachable(t, s, did)

	// The group's commits are in the file, not only in the actor's memory.
	s2, err := Open(ctx, dir, StoreConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	commit, rev, _, err = s2.Head(ctx, did)
	if err != nil || commit != prev.Commit || rev != prev.Rev {
		t.Errorf("Head from a second store = %s %s %v, want %s %s", commit, rev, err, prev.Commit, prev.Rev)
	}
}

// TestGroupCommitSharesACommit queues plain writes behind the repo's lock: they share one
// verifiable commit, each call gets the results of its own writes, and the commit is
// forwarded once. A write to a path an earlier one in the queue writes, and one with a
// swapCommit, each get a commit of their own.
func TestGroupCommitSharesACommit(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(17)
	key := createTestRepo(t, s, did)
	first := createPost(t, s, did, "3k2aaaaaaaaa2", "first")
	post := func(rkey, text string) Write {
		return Write{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: syntax.RecordKey(rkey), Record: postRecord(t, text)}
	}
	calls := []struct {
		writes []Write
		opts   WriteOpts
	}{
		{writes: []Write{post("3k2aaaaaaab22", "a")}},
		{writes: []Write{post("3k2aaaaaaab23", "b"), post("3k2aaaaaaab24", "c")}},
		{writes: []Write{{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaaaa2"}}},
		{writes: []Write{{Action: ActionUpdate, Collection: "app.bsky.feed.post", RKey: "3k2aaaaaaab22", Record: postRecord(t, "a2")}}},
		{writes: []Write{post("3k2aaaaaaab25", "d")}, opts: WriteOpts{SwapCommit: &first.Commit}},
	}
	evs := make([]*CommitEvent, len(calls))
	errs := make([]error, len(calls))
	forwards := 0 // changed under the repo's lock, by the hooks
	var wg sync.WaitGroup
	err := s.withActor(ctx, did, func(a *actor) error {
		a.mu.Lock()
		for i, c := range calls {
			wg.Go(func() {
				opts := c.opts
				opts.OnCommit = func(ev *CommitEvent) error {
					_, err := ev.Forwarding.Do(func() (any, error) {
						forwards++
						return nil, nil
					})
					return err
				}
				evs[i], errs[i] = s.ApplyWrites(ctx, did, c.writes, opts)
			})
			waitQueued(a, i+1)
		}
		a.mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range 4 {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
	}
	shared := evs[0]
	for i, ev := range evs[:3] {
		if ev.Commit != shared.Commit || len(ev.Results) != len(calls[i].writes) {
			t.Errorf("call %d: commit %s with %d results, want the shared %s with %d", i, ev.Commit, len(ev.Results), shared.Commit, len(calls[i].writes))
		}
	}
	if len(shared.Ops) != 4 || shared.Since != first.Rev || shared.PrevData != first.Data {
		t.Errorf("shared commit: %d ops since %s, want 4 since %s", len(shared.Ops), shared.Since, first.Rev)
	}
	verifyEvent(t, shared, key)
	if got := evs[1].Results[1].URI.String(); !strings.HasSuffix(got, "/3k2aaaaaaab24") {
		t.Errorf("second call's second result = %s, want its own record", got)
	}
	// The update writes a path the first call wrote: a commit of its own, after the shared one.
	if evs[3].Since != shared.Rev || evs[3].Commit == shared.Commit {
		t.Errorf("update: since %s commit %s, want its own commit after %s", evs[3].Since, evs[3].Commit, shared.Rev)
	}
	verifyEvent(t, evs[3], key)
	if !errors.Is(errs[4], ErrInvalidSwap) {
		t.Errorf("stale swapCommit: err = %v, want ErrInvalidSwap", errs[4])
	}
	if forwards != 2 {
		t.Errorf("%d commits forwarded, want 2 (the shared one and the update)", forwards)
	}
	checkReachable(t, s, did)
}

// TestGroupCommitPanicLeavesNoFalseSuccess: a hook that panics in the goroutine committing
// a group must not leave the other writers of that group believing they succeeded.
func TestGroupCommitPanicLeavesNoFalseSuccess(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t, StoreConfig{})
	ctx := t.Context()
	did := actorDID(16)
	createTestRepo(t, s, did)
	type outcome struct {
		ev  *CommitEvent
		err error
	}
	outcomes := make(chan outcome, 2)
	write := func(hook func(*CommitEvent) error) {
		defer func() {
			if p := recover(); p != nil {
				outcomes <- outcome{err: fmt.Errorf("panic: %v", p)}
			}
		}()
		ev, err := s.ApplyWrites(ctx, did, []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", Record: postRecord(t, "x")}},
			WriteOpts{OnCommit: hook})
		outcomes <- outcome{ev, err}
	}
	err := s.withActor(ctx, did, func(a *actor) error {
		a.mu.Lock()
		go write(func(*CommitEvent) error { panic("hook bug") })
		waitQueued(a, 1)
		// The second writer's hook never runs: the first one's panics before it.
		go write(func(*CommitEvent) error { return nil })
		waitQueued(a, 2)
		a.mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		o := <-outcomes
		if o.err == nil {
			t.Errorf("a writer of the panicked group got success (event %v)", o.ev)
		}
	}
}

// waitQueued returns once n write requests are queued on a.
func waitQueued(a *actor, n int) {
	for {
		a.queueMu.Lock()
		queued := len(a.queue)
		a.queueMu.Unlock()
		if queued >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
