package node

import (
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/api/bsky"
)

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// getTyped GETs an XRPC query and decodes the answer into out, reporting the status.
func getTyped(t *testing.T, u string, header map[string]string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s = %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: %v in %s", u, err, b)
		}
	}
	return resp.StatusCode
}

// createRecord writes a record over XRPC and returns its URI and CID.
func createRecord(t *testing.T, base, access, did, collection, record string) (string, string) {
	t.Helper()
	status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.createRecord",
		fmt.Sprintf(`{"repo":%q,"collection":%q,"record":%s}`, did, collection, record), bearer(access))
	if status != 200 {
		t.Fatalf("createRecord %s on %s = %d %v", collection, base, status, out)
	}
	return out["uri"].(string), out["cid"].(string)
}

// TestTwoNodesFederate runs two nodes on loopback sharing one PLC directory: a user on A
// follows a user on B and sees B's posts with B's profile; A's like and reply reach B's
// counts and notifications (B crawls A); a delete on B disappears on A.
func TestTwoNodesFederate(t *testing.T) {
	t.Parallel()
	a, baseA := testNode(t, func(c *Config) {
		c.PLC.Listen = "127.0.0.1:0"
		c.Net.AllowPrivateNetwork = true
	})
	plcURL := "http://" + a.PLCAddr().String()
	_, baseB := testNode(t, func(c *Config) {
		c.PLC.URL = plcURL
		c.Net.AllowPrivateNetwork = true
	})
	hostA := strings.TrimPrefix(baseA, "http://")
	hostB := strings.TrimPrefix(baseB, "http://")

	alice := createTestAccount(t, baseA, "alice.test")
	bob := createTestAccount(t, baseB, "bob.test")
	aliceDID, aliceJWT := alice["did"].(string), alice["accessJwt"].(string)
	bobDID, bobJWT := bob["did"].(string), bob["accessJwt"].(string)
	status, out, _ := getJSON(t, "POST", baseB+"/xrpc/com.atproto.repo.putRecord",
		fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.actor.profile","rkey":"self","record":{"$type":"app.bsky.actor.profile","displayName":"Bob on B"}}`, bobDID), bearer(bobJWT))
	if status != 200 {
		t.Fatalf("putRecord profile on B = %d %v", status, out)
	}
	firstURI, _ := createRecord(t, baseB, bobJWT, bobDID, "app.bsky.feed.post", `{"text":"hello from B","createdAt":"2026-11-25T10:00:00Z"}`)

	// Following bob makes A crawl B and backfill bob's repo.
	createRecord(t, baseA, aliceJWT, aliceDID, "app.bsky.graph.follow", fmt.Sprintf(`{"subject":%q,"createdAt":"2026-11-25T10:01:00Z"}`, bobDID))
	timeline := func() *bsky.FeedGetTimeline_Output {
		var tl bsky.FeedGetTimeline_Output
		if status := getTyped(t, baseA+"/xrpc/app.bsky.feed.getTimeline?limit=20", bearer(aliceJWT), &tl); status != 200 {
			t.Fatalf("getTimeline on A = %d", status)
		}
		return &tl
	}
	hasPost := func(tl *bsky.FeedGetTimeline_Output, uri string) *bsky.FeedDefs_PostView {
		for _, item := range tl.Feed {
			if item.Post.Uri == uri {
				return item.Post
			}
		}
		return nil
	}
	eventually(t, "bob's backfilled post in alice's timeline on A", 20*time.Second, func() bool {
		return hasPost(timeline(), firstURI) != nil
	})
	p := hasPost(timeline(), firstURI)
	if p.Author.Did != bobDID || p.Author.Handle != "bob.test" || p.Author.DisplayName == nil || *p.Author.DisplayName != "Bob on B" {
		t.Errorf("bob's post on A has author %+v, want bob.test with his profile", p.Author)
	}

	// Each node crawls the other once the follow is in place.
	hostActive := func(base, host string) func() bool {
		return func() bool {
			status, out, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.sync.getHostStatus?hostname="+url.QueryEscape(host), "", nil)
			return status == 200 && out["status"] == "active"
		}
	}
	eventually(t, "A crawling B", 20*time.Second, hostActive(baseA, hostB))
	eventually(t, "B crawling A (asked by A)", 20*time.Second, hostActive(baseB, hostA))

	// A new post on B arrives on A through the live stream.
	secondURI, secondCID := createRecord(t, baseB, bobJWT, bobDID, "app.bsky.feed.post", `{"text":"second from B","createdAt":"2026-11-25T10:02:00Z"}`)
	eventually(t, "bob's live post on A", 20*time.Second, func() bool { return hasPost(timeline(), secondURI) != nil })

	// alice likes and replies on A; the counts show on both nodes and bob is notified on B.
	createRecord(t, baseA, aliceJWT, aliceDID, "app.bsky.feed.like",
		fmt.Sprintf(`{"subject":{"uri":%q,"cid":%q},"createdAt":"2026-11-25T10:03:00Z"}`, secondURI, secondCID))
	createRecord(t, baseA, aliceJWT, aliceDID, "app.bsky.feed.post",
		fmt.Sprintf(`{"text":"nice one","reply":{"root":{"uri":%[1]q,"cid":%[2]q},"parent":{"uri":%[1]q,"cid":%[2]q}},"createdAt":"2026-11-25T10:04:00Z"}`, secondURI, secondCID))
	counts := func(base, jwt string) (likes, replies int64) {
		var out bsky.FeedGetPosts_Output
		if status := getTyped(t, base+"/xrpc/app.bsky.feed.getPosts?uris="+url.QueryEscape(secondURI), bearer(jwt), &out); status != 200 || len(out.Posts) != 1 {
			return -1, -1
		}
		p := out.Posts[0]
		if p.LikeCount != nil {
			likes = *p.LikeCount
		}
		if p.ReplyCount != nil {
			replies = *p.ReplyCount
		}
		return likes, replies
	}
	eventually(t, "like and reply counted on A", 10*time.Second, func() bool { l, r := counts(baseA, aliceJWT); return l == 1 && r == 1 })
	eventually(t, "like and reply counted on B", 20*time.Second, func() bool { l, r := counts(baseB, bobJWT); return l == 1 && r == 1 })
	eventually(t, "bob notified on B", 10*time.Second, func() bool {
		var out bsky.NotificationListNotifications_Output
		if getTyped(t, baseB+"/xrpc/app.bsky.notification.listNotifications", bearer(bobJWT), &out) != 200 {
			return false
		}
		reasons := map[string]bool{}
		for _, n := range out.Notifications {
			if n.Author.Did == aliceDID {
				reasons[n.Reason] = true
				if n.Author.Handle != "alice.test" {
					t.Errorf("notification author handle = %q, want alice.test", n.Author.Handle)
				}
			}
		}
		return reasons["like"] && reasons["reply"]
	})
	// A indexed the like and reply too, but keeps notifications only for its own accounts.
	index, err := sql.Open("sqlite", "file:"+filepath.Join(a.cfg.DataDir, "index.sqlite")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer index.Close()
	var kept int
	if err := index.QueryRow("SELECT count(*) FROM notifications WHERE recipient = ?", bobDID).Scan(&kept); err != nil || kept != 0 {
		t.Errorf("A's index holds %d notifications for bob, hosted on B (err %v); want 0", kept, err)
	}

	// bob deletes the post on B: it leaves A's index too.
	rkey := secondURI[strings.LastIndex(secondURI, "/")+1:]
	status, out, _ = getJSON(t, "POST", baseB+"/xrpc/com.atproto.repo.deleteRecord",
		fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","rkey":%q}`, bobDID, rkey), bearer(bobJWT))
	if status != 200 {
		t.Fatalf("deleteRecord on B = %d %v", status, out)
	}
	eventually(t, "the deleted post gone from A", 20*time.Second, func() bool { return hasPost(timeline(), secondURI) == nil })

	// An operator backfills another account of B by hand (aerie backfill).
	carol := createTestAccount(t, baseB, "carol.test")
	carolDID := carol["did"].(string)
	carolPost, _ := createRecord(t, baseB, carol["accessJwt"].(string), carolDID, "app.bsky.feed.post", `{"text":"carol here","createdAt":"2026-11-25T10:05:00Z"}`)
	admin := map[string]string{"Content-Type": "application/json", "Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:admin-secret"))}
	status, out, _ = getJSON(t, "POST", baseA+"/xrpc/social.aerie.admin.backfill", fmt.Sprintf(`{"account":%q}`, carolDID), admin)
	if status != 200 || out["records"] != float64(1) {
		t.Fatalf("backfill carol on A = %d %v, want 1 record", status, out)
	}
	var posts bsky.FeedGetPosts_Output
	if getTyped(t, baseA+"/xrpc/app.bsky.feed.getPosts?uris="+url.QueryEscape(carolPost), bearer(aliceJWT), &posts); len(posts.Posts) != 1 {
		t.Errorf("carol's post on A after the backfill: %d posts", len(posts.Posts))
	}
	status, out, _ = getJSON(t, "POST", baseA+"/xrpc/social.aerie.admin.backfill", `{"account":"not a handle"}`, admin)
	if status != 400 {
		t.Errorf("backfill of a malformed account = %d %v, want 400", status, out)
	}

	// A lists B among the hosts it crawls, with bob's account.
	status, out, _ = getJSON(t, "GET", baseA+"/xrpc/com.atproto.sync.listHosts", "", nil)
	if status != 200 || !strings.Contains(toJSON(out), hostB) {
		t.Errorf("listHosts on A = %d %v, want %s", status, out, hostB)
	}
	status, out, _ = getJSON(t, "GET", baseA+"/xrpc/com.atproto.sync.getHostStatus?hostname=nowhere.example.com", "", nil)
	if status != 400 || out["error"] != "HostNotFound" {
		t.Errorf("getHostStatus of an unknown host = %d %v, want 400 HostNotFound", status, out)
	}
}
