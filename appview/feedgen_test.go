package appview

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/api/bsky"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// feedgenServer is another host's feed generator: it answers getFeedSkeleton with what
// the test sets and remembers what it was asked.
type feedgenServer struct {
	*httptest.Server
	did syntax.DID

	mu       sync.Mutex
	feeds    []string // URIs describeFeedGenerator lists
	status   int
	skeleton any
	query    url.Values
	auth     string
	lang     string
}

func newFeedgenServer(t *testing.T, did syntax.DID) *feedgenServer {
	t.Helper()
	f := &feedgenServer{did: did, status: http.StatusOK}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *feedgenServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/xrpc/app.bsky.feed.describeFeedGenerator":
		feeds := []map[string]string{}
		for _, u := range f.feeds {
			feeds = append(feeds, map[string]string{"uri": u})
		}
		json.NewEncoder(w).Encode(map[string]any{"did": f.did, "feeds": feeds})
	case "/xrpc/app.bsky.feed.getFeedSkeleton":
		f.query, f.auth, f.lang = r.URL.Query(), r.Header.Get("Authorization"), r.Header.Get("Accept-Language")
		w.WriteHeader(f.status)
		json.NewEncoder(w).Encode(f.skeleton)
	default:
		http.NotFound(w, r)
	}
}

func (f *feedgenServer) answer(status int, body any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.skeleton = status, body
}

func (f *feedgenServer) asked() (url.Values, string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.query, f.auth, f.lang
}

func TestCustomFeeds(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	alice, bob, carol := n.account("alice"), n.account("bob"), n.account("carol")
	svc := syntax.DID("did:web:feeds.example.com")
	fg := newFeedgenServer(t, svc)
	n.addFeedgen(svc, fg.URL)

	gen := n.create(alice, colGenerator, "cool", map[string]any{"did": svc.String(), "displayName": "Cool posts",
		"description": "the coolest", "acceptsInteractions": true})
	other := n.create(alice, colGenerator, "gone", map[string]any{"did": "did:web:nowhere.example.com", "displayName": "Gone"})
	p1, p2 := n.post(bob, "first"), n.post(bob, "second")
	rp := n.repost(carol, p1)
	like := n.like(bob, gen)
	fg.feeds = []string{gen.uri}
	n.sync()

	t.Run("getFeedGenerator", func(t *testing.T) {
		var out bsky.FeedGetFeedGenerator_Output
		n.get(bob, "app.bsky.feed.getFeedGenerator", vals("feed", gen.uri), &out)
		v := out.View
		if !out.IsOnline || !out.IsValid {
			t.Errorf("getFeedGenerator isOnline=%v isValid=%v, want both true", out.IsOnline, out.IsValid)
		}
		if v.Uri != gen.uri || v.Cid != gen.cid || v.Did != svc.String() || v.DisplayName != "Cool posts" ||
			v.Description == nil || *v.Description != "the coolest" || v.AcceptsInteractions == nil || !*v.AcceptsInteractions {
			t.Errorf("generatorView = %+v", v)
		}
		if v.Creator == nil || v.Creator.Did != alice.String() || v.Creator.Handle != "alice.test" {
			t.Errorf("generatorView.creator = %+v, want alice", v.Creator)
		}
		if v.LikeCount == nil || *v.LikeCount != 1 || v.Viewer == nil || v.Viewer.Like == nil || *v.Viewer.Like != like.uri {
			t.Errorf("generatorView likeCount = %v viewer = %+v, want 1 and bob's like", v.LikeCount, v.Viewer)
		}
		n.get(bob, "app.bsky.feed.getFeedGenerator", vals("feed", other.uri), &out)
		if out.IsOnline || out.IsValid {
			t.Errorf("unresolvable generator: isOnline=%v isValid=%v, want false", out.IsOnline, out.IsValid)
		}
		var eb errorBody
		if st := n.call(bob, http.MethodGet, "app.bsky.feed.getFeedGenerator", vals("feed", "at://"+alice.String()+"/app.bsky.feed.generator/nope"), nil, &eb); st != http.StatusBadRequest {
			t.Errorf("getFeedGenerator(unknown) = %d %v, want 400", st, eb)
		}
	})

	t.Run("getFeedGenerators and getActorFeeds", func(t *testing.T) {
		var out bsky.FeedGetFeedGenerators_Output
		n.get("", "app.bsky.feed.getFeedGenerators", url.Values{"feeds": {gen.uri, "at://" + bob.String() + "/app.bsky.feed.generator/x", other.uri}}, &out)
		if len(out.Feeds) != 2 || out.Feeds[0].Uri != gen.uri || out.Feeds[1].Uri != other.uri || out.Feeds[0].Viewer != nil {
			t.Errorf("getFeedGenerators = %+v, want gen and other without viewer state", out.Feeds)
		}
		var af bsky.FeedGetActorFeeds_Output
		n.get(carol, "app.bsky.feed.getActorFeeds", vals("actor", "alice.test", "limit", "1"), &af)
		if len(af.Feeds) != 1 || af.Cursor == nil {
			t.Fatalf("getActorFeeds(limit 1) = %+v, want one feed and a cursor", af)
		}
		first := af.Feeds[0].Uri
		n.get(carol, "app.bsky.feed.getActorFeeds", vals("actor", "alice.test", "cursor", *af.Cursor), &af)
		if len(af.Feeds) != 1 || af.Feeds[0].Uri == first {
			t.Errorf("getActorFeeds page 2 = %+v, want the other feed", af.Feeds)
		}
	})

	t.Run("getFeed", func(t *testing.T) {
		fg.answer(http.StatusOK, map[string]any{
			"cursor": "page-2",
			"reqId":  "req-1",
			"feed": []any{
				map[string]any{"post": p2.uri, "feedContext": "ctx-2"},
				map[string]any{"post": p1.uri, "reason": map[string]any{"$type": "app.bsky.feed.defs#skeletonReasonRepost", "repost": rp.uri}},
				map[string]any{"post": "at://" + bob.String() + "/app.bsky.feed.post/3zzzzzzzzzzzz"}, // not indexed
				map[string]any{"post": p1.uri, "reason": map[string]any{"$type": "app.bsky.feed.defs#skeletonReasonFuture"}},
			},
		})
		var out bsky.FeedGetFeed_Output
		hr := vals("feed", gen.uri, "limit", "10", "cursor", "page-1")
		n.get(bob, "app.bsky.feed.getFeed", hr, &out)
		q, auth, _ := fg.asked()
		if q.Get("feed") != gen.uri || q.Get("limit") != "10" || q.Get("cursor") != "page-1" {
			t.Errorf("getFeedSkeleton asked with %v", q)
		}
		if want := "Bearer " + testServiceToken(bob.String(), svc.String(), "app.bsky.feed.getFeedSkeleton"); auth != want {
			t.Errorf("getFeedSkeleton Authorization = %q, want %q", auth, want)
		}
		if out.Cursor == nil || *out.Cursor != "page-2" {
			t.Errorf("getFeed cursor = %v, want the skeleton's page-2", out.Cursor)
		}
		if len(out.Feed) != 3 {
			t.Fatalf("getFeed returned %d items, want 3 (the unindexed post dropped)", len(out.Feed))
		}
		if it := out.Feed[0]; it.Post.Uri != p2.uri || it.FeedContext == nil || *it.FeedContext != "ctx-2" || it.ReqId == nil || *it.ReqId != "req-1" {
			t.Errorf("item 0 = %+v", it)
		}
		it := out.Feed[1]
		if it.Post.Uri != p1.uri || it.Reason == nil || it.Reason.FeedDefs_ReasonRepost == nil ||
			it.Reason.FeedDefs_ReasonRepost.By.Did != carol.String() || *it.Reason.FeedDefs_ReasonRepost.Uri != rp.uri {
			t.Errorf("item 1 = %+v, want p1 reposted by carol", it)
		}
		if it := out.Feed[2]; it.Post.Uri != p1.uri || it.Reason != nil {
			t.Errorf("item 2 = %+v, want p1 without the unknown reason", it)
		}

		// Anonymous: no token.
		n.get("", "app.bsky.feed.getFeed", vals("feed", gen.uri), &out)
		if _, auth, _ := fg.asked(); auth != "" {
			t.Errorf("anonymous getFeedSkeleton Authorization = %q, want none", auth)
		}
	})

	t.Run("getFeed errors", func(t *testing.T) {
		tests := []struct {
			name   string
			feed   string
			status int
			body   any
			want   int
			errs   string
		}{
			{"unknown feed", "at://" + bob.String() + "/app.bsky.feed.generator/none", 0, nil, http.StatusBadRequest, "UnknownFeed"},
			{"generator says UnknownFeed", gen.uri, http.StatusBadRequest, map[string]string{"error": "UnknownFeed", "message": "no"}, http.StatusBadRequest, "UnknownFeed"},
			{"generator fails", gen.uri, http.StatusInternalServerError, map[string]string{"error": "InternalServerError"}, http.StatusBadGateway, "UpstreamFailure"},
			{"generator answers garbage", gen.uri, http.StatusOK, "not a skeleton", http.StatusBadGateway, "UpstreamFailure"},
			{"service DID does not resolve", other.uri, 0, nil, http.StatusBadRequest, "InvalidRequest"},
			{"feed is not a URI", "feed", 0, nil, http.StatusBadRequest, "InvalidRequest"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.status != 0 {
					fg.answer(tt.status, tt.body)
				}
				var eb errorBody
				st := n.call(bob, http.MethodGet, "app.bsky.feed.getFeed", vals("feed", tt.feed), nil, &eb)
				if st != tt.want || eb.Error != tt.errs {
					t.Errorf("getFeed(%s) = %d %s, want %d %s", tt.feed, st, eb.Error, tt.want, tt.errs)
				}
			})
		}
	})
}
