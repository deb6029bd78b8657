package node

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/api/bsky"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// testFeedgen is a feed generator on another host: a did:web on localhost whose document
// names itself as #bsky_fg, answering describeFeedGenerator and getFeedSkeleton.
type testFeedgen struct {
	srv *httptest.Server
	did string

	mu    sync.Mutex
	posts []string // the skeleton
	feed  string   // the feed it describes
	auth  string   // Authorization of the last getFeedSkeleton
	calls int      // requests of any kind
}

func newTestFeedgen(t *testing.T) *testFeedgen {
	t.Helper()
	f := &testFeedgen{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	port := f.srv.URL[strings.LastIndexByte(f.srv.URL, ':')+1:]
	f.did = "did:web:localhost%3A" + port
	return f
}

func (f *testFeedgen) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/.well-known/did.json":
		json.NewEncoder(w).Encode(map[string]any{
			"@context": []string{"https://www.w3.org/ns/did/v1"},
			"id":       f.did,
			"service": []map[string]string{{"id": "#bsky_fg", "type": "BskyFeedGenerator",
				"serviceEndpoint": "http://" + r.Host}},
		})
	case "/xrpc/app.bsky.feed.describeFeedGenerator":
		json.NewEncoder(w).Encode(map[string]any{"did": f.did, "feeds": []map[string]string{{"uri": f.feed}}})
	case "/xrpc/app.bsky.feed.getFeedSkeleton":
		f.auth = r.Header.Get("Authorization")
		items := []map[string]string{}
		for _, p := range f.posts {
			items = append(items, map[string]string{"post": p})
		}
		json.NewEncoder(w).Encode(map[string]any{"feed": items, "cursor": "next"})
	default:
		http.NotFound(w, r)
	}
}

// TestCustomFeedThroughTheNode: a generator record written here names a feed service on
// another host; getFeed resolves its did:web, calls getFeedSkeleton with a service JWT
// signed by the viewer's repo key, and hydrates the posts.
func TestCustomFeedThroughTheNode(t *testing.T) {
	t.Parallel()
	n, base := testNode(t, func(c *Config) { c.Net.AllowPrivateNetwork = true })
	fg := newTestFeedgen(t)
	alice := createTestAccount(t, base, "alice.test")
	bob := createTestAccount(t, base, "bob.test")
	aliceDID, aliceTok := alice["did"].(string), alice["accessJwt"].(string)
	create := func(tok, did, coll, rkey, record string) map[string]any {
		t.Helper()
		status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.createRecord",
			fmt.Sprintf(`{"repo":%q,"collection":%q,"rkey":%q,"record":%s}`, did, coll, rkey, record), bearer(tok))
		if status != 200 {
			t.Fatalf("createRecord %s = %d %v", coll, status, out)
		}
		return out
	}
	post := create(bob["accessJwt"].(string), bob["did"].(string), "app.bsky.feed.post", "3lbobpost2222",
		`{"text":"in a custom feed","createdAt":"2026-11-25T12:00:00Z"}`)
	gen := create(aliceTok, aliceDID, "app.bsky.feed.generator", "cool",
		fmt.Sprintf(`{"did":%q,"displayName":"Cool","createdAt":"2026-11-25T12:00:00Z"}`, fg.did))
	feedURI := gen["uri"].(string)
	fg.mu.Lock()
	fg.posts, fg.feed = []string{post["uri"].(string)}, feedURI
	fg.mu.Unlock()

	get := func(nsid string, q url.Values, out any) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/xrpc/"+nsid+"?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+aliceTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			var eb map[string]any
			json.NewDecoder(resp.Body).Decode(&eb)
			t.Fatalf("%s = %d %v", nsid, resp.StatusCode, eb)
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s: decode: %v", nsid, err)
		}
	}
	var feed bsky.FeedGetFeed_Output
	get("app.bsky.feed.getFeed", url.Values{"feed": {feedURI}}, &feed)
	if len(feed.Feed) != 1 || feed.Feed[0].Post.Uri != post["uri"] || feed.Feed[0].Post.Author.Handle != "bob.test" ||
		feed.Cursor == nil || *feed.Cursor != "next" {
		t.Errorf("getFeed = %+v, want bob's post and the skeleton's cursor", feed)
	}

	// The skeleton request carried a service JWT from alice for the feed service and
	// getFeedSkeleton, signed with her repo key.
	fg.mu.Lock()
	auth := fg.auth
	fg.mu.Unlock()
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	parts := strings.Split(tok, ".")
	if !ok || len(parts) != 3 {
		t.Fatalf("getFeedSkeleton Authorization = %q, want a bearer JWT", auth)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct{ Iss, Aud, Lxm string }
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Iss != aliceDID || claims.Aud != fg.did ||
		claims.Lxm != "app.bsky.feed.getFeedSkeleton" {
		t.Errorf("service JWT claims = %s, want iss alice, aud %s, lxm getFeedSkeleton", payload, fg.did)
	}
	key, err := n.repos.SigningKey(t.Context(), syntax.DID(aliceDID))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if err := pub.HashAndVerify([]byte(parts[0]+"."+parts[1]), sig); err != nil {
		t.Errorf("service JWT signature does not verify with alice's key: %v", err)
	}

	var gv bsky.FeedGetFeedGenerator_Output
	get("app.bsky.feed.getFeedGenerator", url.Values{"feed": {feedURI}}, &gv)
	if !gv.IsOnline || !gv.IsValid || gv.View.Creator.Handle != "alice.test" {
		t.Errorf("getFeedGenerator = online %v valid %v creator %+v", gv.IsOnline, gv.IsValid, gv.View.Creator)
	}
	var gens bsky.FeedGetFeedGenerators_Output
	get("app.bsky.feed.getFeedGenerators", url.Values{"feeds": {feedURI}}, &gens)
	var af bsky.FeedGetActorFeeds_Output
	get("app.bsky.feed.getActorFeeds", url.Values{"actor": {"alice.test"}}, &af)
	if len(gens.Feeds) != 1 || len(af.Feeds) != 1 {
		t.Errorf("getFeedGenerators = %d feeds, getActorFeeds = %d, want 1 each", len(gens.Feeds), len(af.Feeds))
	}
}

// TestCustomFeedRefusesPrivateNetwork: without net.allow_private_network, a feed service
// on a loopback address is never called.
func TestCustomFeedRefusesPrivateNetwork(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	fg := newTestFeedgen(t)
	alice := createTestAccount(t, base, "alice.test")
	status, gen, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.createRecord",
		fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.generator","rkey":"cool","record":{"did":%q,"displayName":"Cool","createdAt":"2026-11-25T12:00:00Z"}}`,
			alice["did"], fg.did), bearer(alice["accessJwt"].(string)))
	if status != 200 {
		t.Fatalf("createRecord = %d %v", status, gen)
	}
	status, out, _ := getJSON(t, "GET", base+"/xrpc/app.bsky.feed.getFeed?feed="+url.QueryEscape(gen["uri"].(string)), "",
		bearer(alice["accessJwt"].(string)))
	if status != http.StatusBadRequest || out["error"] != "InvalidRequest" {
		t.Errorf("getFeed of a loopback feed service = %d %v, want 400 InvalidRequest", status, out)
	}
	fg.mu.Lock()
	defer fg.mu.Unlock()
	if fg.calls != 0 {
		t.Errorf("the loopback feed service was called %d times", fg.calls)
	}
}
