package node

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	indigorepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/coder/websocket"

	"github.com/aerie-social/aerie/relay"
)

// createTestAccount signs up handle through the XRPC API and returns its session.
func createTestAccount(t *testing.T, base, handle string) map[string]any {
	t.Helper()
	status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAccount",
		`{"handle":"`+handle+`","email":"`+strings.Split(handle, ".")[0]+`@example.com","password":"password-`+handle+`"}`,
		map[string]string{"Content-Type": "application/json"})
	if status != 200 {
		t.Fatalf("createAccount(%s) = %d %v", handle, status, body)
	}
	return body
}

// readFrames reads n events from a subscribeRepos stream.
func readFrames(t *testing.T, ctx context.Context, conn *websocket.Conn, n int) []*relay.Event {
	t.Helper()
	var out []*relay.Event
	for len(out) < n {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read frame %d: %v", len(out), err)
		}
		if typ != websocket.MessageBinary {
			t.Fatalf("frame %d is not binary", len(out))
		}
		ev, err := relay.DecodeFrame(data)
		if err != nil {
			t.Fatalf("decode frame %d: %v", len(out), err)
		}
		out = append(out, ev)
	}
	return out
}

func TestAccountWritesReachTheFirehose(t *testing.T) {
	t.Parallel()
	n, base := testNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	sess := createTestAccount(t, base, "alice.test")
	did := sess["did"].(string)
	if !strings.HasPrefix(did, "did:plc:") || len(did) != len("did:plc:")+24 {
		t.Fatalf("createAccount did = %q, want a did:plc", did)
	}
	doc, _ := sess["didDoc"].(map[string]any)
	if doc == nil || !strings.Contains(toJSON(doc), n.PublicURL()) {
		t.Errorf("createAccount didDoc = %v, want the PDS endpoint %s", doc, n.PublicURL())
	}
	access := sess["accessJwt"].(string)

	// Creation emits #identity, #account, #commit (genesis) and #sync.
	wsURL := "ws" + strings.TrimPrefix(base, "http") + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
	conn, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("dial firehose: %v", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(5 << 20)
	created := readFrames(t, ctx, conn, 4)
	var kinds []string
	for _, ev := range created {
		kinds = append(kinds, ev.Kind())
	}
	if got := strings.Join(kinds, " "); got != "#identity #account #commit #sync" {
		t.Errorf("account creation events = %s, want #identity #account #commit #sync", got)
	}

	// Writes: each commit frame verifies with indigo against the account's key.
	pub := signingKeyOf(t, n, did)
	var uris []string
	for i := range 5 {
		status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.createRecord",
			fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","record":{"text":"post %d","createdAt":"2026-11-25T12:00:00Z"}}`, did, i),
			bearer(access))
		if status != 200 || out["validationStatus"] != "valid" {
			t.Fatalf("createRecord %d = %d %v", i, status, out)
		}
		uris = append(uris, out["uri"].(string))
	}
	rkey := uris[0][strings.LastIndex(uris[0], "/")+1:]
	status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.deleteRecord",
		fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","rkey":%q}`, did, rkey), bearer(access))
	if status != 200 {
		t.Fatalf("deleteRecord = %d %v", status, out)
	}
	commits := readFrames(t, ctx, conn, 6)
	lastSeq := created[len(created)-1].Seq
	for i, ev := range commits {
		if ev.Commit == nil {
			t.Fatalf("event %d is %s, want #commit", i, ev.Kind())
		}
		if ev.Seq <= lastSeq {
			t.Errorf("event %d seq %d after %d: not increasing", i, ev.Seq, lastSeq)
		}
		lastSeq = ev.Seq
		if _, err := indigorepo.VerifyCommitMessage(ctx, ev.Commit); err != nil {
			t.Errorf("indigo VerifyCommitMessage(event %d) = %v", i, err)
		}
		commit, _, err := indigorepo.LoadCommitFromCAR(ctx, strings.NewReader(string(ev.Commit.Blocks)))
		if err != nil {
			t.Fatalf("load commit of event %d: %v", i, err)
		}
		if err := commit.VerifySignature(pub); err != nil {
			t.Errorf("event %d signature: %v", i, err)
		}
	}

	// Reconnecting with a cursor yields exactly the rest, nothing twice.
	cursor := commits[2].Seq
	conn2, _, err := websocket.Dial(ctx, strings.Replace(wsURL, "cursor=0", "cursor="+strconv.FormatInt(cursor, 10), 1), nil)
	if err != nil {
		t.Fatalf("dial with cursor: %v", err)
	}
	defer conn2.CloseNow()
	rest := readFrames(t, ctx, conn2, 3)
	for i, ev := range rest {
		if ev.Seq != commits[3+i].Seq {
			t.Errorf("after cursor %d: event %d has seq %d, want %d", cursor, i, ev.Seq, commits[3+i].Seq)
		}
	}

	// Reads see the writes.
	status, list, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.repo.listRecords?repo="+did+"&collection=app.bsky.feed.post", "", nil)
	if status != 200 || len(list["records"].([]any)) != 4 {
		t.Errorf("listRecords = %d, %d records, want 4", status, len(list["records"].([]any)))
	}
	status, latest, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.sync.getLatestCommit?did="+did, "", nil)
	if status != 200 || latest["rev"] != commits[len(commits)-1].Commit.Rev {
		t.Errorf("getLatestCommit = %d %v, want rev %s", status, latest, commits[len(commits)-1].Commit.Rev)
	}
	resp, err := http.Get(base + "/xrpc/com.atproto.sync.getRepo?did=" + did)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, repo, err := indigorepo.LoadRepoFromCAR(ctx, resp.Body)
	if err != nil {
		t.Fatalf("indigo LoadRepoFromCAR(getRepo) = %v", err)
	}
	if _, err := repo.GetRecordCID(ctx, "app.bsky.feed.post", syntaxRKey(t, uris[1])); err != nil {
		t.Errorf("exported repo lacks %s: %v", uris[1], err)
	}
}

func signingKeyOf(t *testing.T, n *Node, did string) atcrypto.PublicKey {
	t.Helper()
	key, err := n.repos.SigningKey(t.Context(), syntaxDID(did))
	if err != nil {
		t.Fatalf("SigningKey(%s) = %v", did, err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestConcurrentWritesShareVerifiableCommits sends createRecords to one account from many
// clients at once, so that they queue behind the repo and share commits: every #commit on
// the firehose verifies, each record is in exactly one of them, each response names a
// commit the firehose carried, and the author feed shows every post.
func TestConcurrentWritesShareVerifiableCommits(t *testing.T) {
	t.Parallel()
	n, base := testNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess := createTestAccount(t, base, "busy.test")
	did, access := sess["did"].(string), sess["accessJwt"].(string)
	pub := signingKeyOf(t, n, did)

	const clients, each = 16, 4
	var mu sync.Mutex
	answered := map[string]string{} // uri -> commit cid
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.createRecord",
					fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","record":{"text":"client %d post %d","createdAt":"2026-11-25T12:00:00Z"}}`, did, c, i),
					bearer(access))
				if status != 200 {
					t.Errorf("createRecord = %d %v", status, out)
					return
				}
				commit, _ := out["commit"].(map[string]any)
				mu.Lock()
				answered[out["uri"].(string)] = fmt.Sprint(commit["cid"])
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(answered) != clients*each {
		t.Fatalf("%d distinct records created, want %d", len(answered), clients*each)
	}

	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(5 << 20)
	inOps := map[string]int{}
	commits := map[string]bool{}
	for len(inOps) < clients*each {
		ev := readFrames(t, ctx, conn, 1)[0]
		if ev.Commit == nil || ev.Commit.Since == nil { // creation's events, genesis
			continue
		}
		if _, err := indigorepo.VerifyCommitMessage(ctx, ev.Commit); err != nil {
			t.Errorf("VerifyCommitMessage(seq %d, %d ops) = %v", ev.Seq, len(ev.Commit.Ops), err)
		}
		commit, _, err := indigorepo.LoadCommitFromCAR(ctx, strings.NewReader(string(ev.Commit.Blocks)))
		if err != nil {
			t.Fatal(err)
		}
		if err := commit.VerifySignature(pub); err != nil {
			t.Errorf("seq %d signature: %v", ev.Seq, err)
		}
		commits[ev.Commit.Commit.String()] = true
		for _, op := range ev.Commit.Ops {
			inOps["at://"+did+"/"+op.Path]++
		}
	}
	for uri, cid := range answered {
		if inOps[uri] != 1 || !commits[cid] {
			t.Errorf("%s: in %d firehose ops, commit %s carried: %v; want once, true", uri, inOps[uri], cid, commits[cid])
		}
	}
	t.Logf("%d records in %d commits", len(answered), len(commits))

	status, feed, _ := getJSON(t, "GET", base+"/xrpc/app.bsky.feed.getAuthorFeed?limit=100&actor="+did, "", bearer(access))
	if items, _ := feed["feed"].([]any); status != 200 || len(items) != clients*each {
		t.Errorf("getAuthorFeed = %d with %d items, want %d", status, len(items), clients*each)
	}
}
