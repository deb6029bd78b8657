package appview

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/bluesky-social/indigo/api/bsky"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// timelineURIs returns the post URIs of a timeline, and the reposter of each ("" if none).
func timelineURIs(out *bsky.FeedGetTimeline_Output) (uris, by []string) {
	for _, it := range out.Feed {
		uris = append(uris, it.Post.Uri)
		b := ""
		if it.Reason != nil && it.Reason.FeedDefs_ReasonRepost != nil {
			b = it.Reason.FeedDefs_ReasonRepost.By.Did
		}
		by = append(by, b)
	}
	return uris, by
}

func (n *testNet) timeline(viewer syntax.DID) *bsky.FeedGetTimeline_Output {
	n.t.Helper()
	var out bsky.FeedGetTimeline_Output
	n.get(viewer, "app.bsky.feed.getTimeline", nil, &out)
	return &out
}

func (n *testNet) postView(viewer syntax.DID, uri string) *bsky.FeedDefs_PostView {
	n.t.Helper()
	var out bsky.FeedGetPosts_Output
	n.get(viewer, "app.bsky.feed.getPosts", vals("uris", uri), &out)
	if len(out.Posts) != 1 {
		n.t.Fatalf("getPosts(%s) returned %d posts, want 1", uri, len(out.Posts))
	}
	return out.Posts[0]
}

func (n *testNet) profile(viewer, actor syntax.DID) *bsky.ActorDefs_ProfileViewDetailed {
	n.t.Helper()
	var out bsky.ActorDefs_ProfileViewDetailed
	n.get(viewer, "app.bsky.actor.getProfile", vals("actor", actor.String()), &out)
	return &out
}

func (n *testNet) notifications(viewer syntax.DID) *bsky.NotificationListNotifications_Output {
	n.t.Helper()
	var out bsky.NotificationListNotifications_Output
	n.get(viewer, "app.bsky.notification.listNotifications", nil, &out)
	return &out
}

type counts struct{ likes, reposts, replies, quotes int64 }

func countsOf(p *bsky.FeedDefs_PostView) counts {
	v := func(p *int64) int64 {
		if p == nil {
			return -1
		}
		return *p
	}
	return counts{v(p.LikeCount), v(p.RepostCount), v(p.ReplyCount), v(p.QuoteCount)}
}

func reasons(out *bsky.NotificationListNotifications_Output) map[string]int {
	m := map[string]int{}
	for _, nt := range out.Notifications {
		m[nt.Reason]++
	}
	return m
}

func TestScenario(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	alice, bob, carol, dave := n.account("alice"), n.account("bob"), n.account("carol"), n.account("dave")

	n.follow(alice, bob)
	n.follow(alice, carol)
	n.follow(bob, alice)
	p1 := n.post(bob, "hello from bob, about gardening")
	p2 := n.post(carol, "carol here")
	p3 := n.post(alice, "alice writes")
	n.sync()

	t.Run("timeline", func(t *testing.T) {
		uris, _ := timelineURIs(n.timeline(alice))
		if want := []string{p3.uri, p2.uri, p1.uri}; !slices.Equal(uris, want) {
			t.Errorf("alice's timeline = %v, want %v", uris, want)
		}
		uris, _ = timelineURIs(n.timeline(dave))
		if len(uris) != 0 {
			t.Errorf("dave follows nobody; timeline = %v", uris)
		}
	})

	r1 := n.reply(carol, "nice, bob", p1, p1)
	l1 := n.like(alice, p1)
	n.like(dave, p1)
	n.repost(carol, p1)
	q1 := n.quote(dave, "look at this", p1)
	n.sync()

	t.Run("counts", func(t *testing.T) {
		pv := n.postView(alice, p1.uri)
		if got, want := countsOf(pv), (counts{likes: 2, reposts: 1, replies: 1, quotes: 1}); got != want {
			t.Errorf("P1 counts = %+v, want %+v", got, want)
		}
		if pv.Viewer == nil || pv.Viewer.Like == nil || *pv.Viewer.Like != l1.uri {
			t.Errorf("P1 viewer.like for alice = %+v, want %s", pv.Viewer, l1.uri)
		}
		prof := n.profile(alice, bob)
		if *prof.FollowersCount != 1 || *prof.FollowsCount != 1 || *prof.PostsCount != 1 {
			t.Errorf("bob's counts = %d followers, %d follows, %d posts; want 1, 1, 1",
				*prof.FollowersCount, *prof.FollowsCount, *prof.PostsCount)
		}
		if prof.Handle != "bob.test" {
			t.Errorf("bob's handle = %q", prof.Handle)
		}
		if prof.Viewer == nil || prof.Viewer.Following == nil || prof.Viewer.FollowedBy == nil {
			t.Errorf("bob's viewer state for alice = %+v, want following and followedBy", prof.Viewer)
		}
	})

	t.Run("timeline with repost and reply", func(t *testing.T) {
		out := n.timeline(alice)
		uris, by := timelineURIs(out)
		// Newest first: carol's repost of P1, carol's reply R1, then the posts.
		want := []string{p1.uri, r1.uri, p3.uri, p2.uri, p1.uri}
		if !slices.Equal(uris, want) {
			t.Fatalf("alice's timeline = %v, want %v", uris, want)
		}
		if by[0] != carol.String() {
			t.Errorf("first item reposted by %q, want carol", by[0])
		}
		if rp := out.Feed[1].Reply; rp == nil || rp.Parent.FeedDefs_PostView == nil || rp.Parent.FeedDefs_PostView.Uri != p1.uri {
			t.Errorf("R1's reply ref = %+v, want parent P1", rp)
		}
	})

	t.Run("thread", func(t *testing.T) {
		var out bsky.FeedGetPostThread_Output
		n.get(alice, "app.bsky.feed.getPostThread", vals("uri", p1.uri), &out)
		tv := out.Thread.FeedDefs_ThreadViewPost
		if tv == nil || tv.Post.Uri != p1.uri {
			t.Fatalf("thread = %+v, want P1", out.Thread)
		}
		if len(tv.Replies) != 1 || tv.Replies[0].FeedDefs_ThreadViewPost == nil || tv.Replies[0].FeedDefs_ThreadViewPost.Post.Uri != r1.uri {
			t.Errorf("P1 replies = %+v, want R1", tv.Replies)
		}
		n.get(alice, "app.bsky.feed.getPostThread", vals("uri", r1.uri), &out)
		if p := out.Thread.FeedDefs_ThreadViewPost.Parent; p == nil || p.FeedDefs_ThreadViewPost == nil || p.FeedDefs_ThreadViewPost.Post.Uri != p1.uri {
			t.Errorf("R1 parent = %+v, want P1", p)
		}
		var v2 bsky.UnspeccedGetPostThreadV2_Output
		n.get(alice, "app.bsky.unspecced.getPostThreadV2", vals("anchor", r1.uri), &v2)
		if len(v2.Thread) != 2 || v2.Thread[0].Depth != -1 || v2.Thread[0].Uri != p1.uri || v2.Thread[1].Uri != r1.uri {
			t.Errorf("getPostThreadV2(R1) = %d items, want P1 at -1 and R1 at 0", len(v2.Thread))
		}
		var missing errorBody
		if st := n.call(alice, http.MethodGet, "app.bsky.feed.getPostThread", vals("uri", "at://"+bob.String()+"/app.bsky.feed.post/3zzzzzzzzzzzz"), nil, &missing); st != http.StatusBadRequest || missing.Error != "NotFound" {
			t.Errorf("thread of a missing post = %d %q, want 400 NotFound", st, missing.Error)
		}
	})

	t.Run("quote embed", func(t *testing.T) {
		pv := n.postView(alice, q1.uri)
		if pv.Embed == nil || pv.Embed.EmbedRecord_View == nil || pv.Embed.EmbedRecord_View.Record.EmbedRecord_ViewRecord == nil ||
			pv.Embed.EmbedRecord_View.Record.EmbedRecord_ViewRecord.Uri != p1.uri {
			t.Errorf("Q1 embed = %+v, want a viewRecord of P1", pv.Embed)
		}
		var quotes bsky.FeedGetQuotes_Output
		n.get(alice, "app.bsky.feed.getQuotes", vals("uri", p1.uri), &quotes)
		if len(quotes.Posts) != 1 || quotes.Posts[0].Uri != q1.uri {
			t.Errorf("getQuotes(P1) = %d posts, want Q1", len(quotes.Posts))
		}
	})

	t.Run("likes and reposts", func(t *testing.T) {
		var likes bsky.FeedGetLikes_Output
		n.get(alice, "app.bsky.feed.getLikes", vals("uri", p1.uri), &likes)
		if len(likes.Likes) != 2 {
			t.Errorf("getLikes(P1) = %d, want 2", len(likes.Likes))
		}
		var rb bsky.FeedGetRepostedBy_Output
		n.get(alice, "app.bsky.feed.getRepostedBy", vals("uri", p1.uri), &rb)
		if len(rb.RepostedBy) != 1 || rb.RepostedBy[0].Did != carol.String() {
			t.Errorf("getRepostedBy(P1) = %+v, want carol", rb.RepostedBy)
		}
		var al bsky.FeedGetActorLikes_Output
		n.get(alice, "app.bsky.feed.getActorLikes", vals("actor", alice.String()), &al)
		if len(al.Feed) != 1 || al.Feed[0].Post.Uri != p1.uri {
			t.Errorf("getActorLikes(alice) = %d items, want P1", len(al.Feed))
		}
	})

	t.Run("follows", func(t *testing.T) {
		var fo bsky.GraphGetFollows_Output
		n.get(bob, "app.bsky.graph.getFollows", vals("actor", "alice.test"), &fo)
		if len(fo.Follows) != 2 || fo.Subject.Did != alice.String() {
			t.Errorf("getFollows(alice) = %d, want 2", len(fo.Follows))
		}
		var fr bsky.GraphGetFollowers_Output
		n.get(bob, "app.bsky.graph.getFollowers", vals("actor", bob.String()), &fr)
		if len(fr.Followers) != 1 || fr.Followers[0].Did != alice.String() {
			t.Errorf("getFollowers(bob) = %+v, want alice", fr.Followers)
		}
	})

	t.Run("notifications", func(t *testing.T) {
		got := reasons(n.notifications(bob))
		want := map[string]int{"follow": 1, "like": 2, "repost": 1, "reply": 1, "quote": 1}
		if !maps(got, want) {
			t.Errorf("bob's notifications = %v, want %v", got, want)
		}
		var unread bsky.NotificationGetUnreadCount_Output
		n.get(bob, "app.bsky.notification.getUnreadCount", nil, &unread)
		if unread.Count != 6 {
			t.Errorf("bob's unread count = %d, want 6", unread.Count)
		}
		if st := n.call(bob, http.MethodPost, "app.bsky.notification.updateSeen", nil,
			map[string]string{"seenAt": syntax.DatetimeNow().String()}, nil); st != http.StatusOK {
			t.Fatalf("updateSeen = %d", st)
		}
		n.get(bob, "app.bsky.notification.getUnreadCount", nil, &unread)
		if unread.Count != 0 {
			t.Errorf("bob's unread count after updateSeen = %d, want 0", unread.Count)
		}
	})

	t.Run("search", func(t *testing.T) {
		var sp bsky.FeedSearchPosts_Output
		n.get(alice, "app.bsky.feed.searchPosts", vals("q", "gardening"), &sp)
		if len(sp.Posts) != 1 || sp.Posts[0].Uri != p1.uri {
			t.Errorf("searchPosts(gardening) = %d posts, want P1", len(sp.Posts))
		}
		var sa bsky.ActorSearchActorsTypeahead_Output
		n.get(alice, "app.bsky.actor.searchActorsTypeahead", vals("q", "car"), &sa)
		if len(sa.Actors) != 1 || sa.Actors[0].Did != carol.String() {
			t.Errorf("searchActorsTypeahead(car) = %+v, want carol", sa.Actors)
		}
	})

	t.Run("mute", func(t *testing.T) {
		if st := n.call(alice, http.MethodPost, "app.bsky.graph.muteActor", nil, map[string]string{"actor": carol.String()}, nil); st != http.StatusOK {
			t.Fatalf("muteActor = %d", st)
		}
		uris, by := timelineURIs(n.timeline(alice))
		if want := []string{p3.uri, p1.uri}; !slices.Equal(uris, want) || slices.Contains(by, carol.String()) {
			t.Errorf("alice's timeline with carol muted = %v (by %v), want %v", uris, by, want)
		}
		var mutes bsky.GraphGetMutes_Output
		n.get(alice, "app.bsky.graph.getMutes", nil, &mutes)
		if len(mutes.Mutes) != 1 || mutes.Mutes[0].Did != carol.String() {
			t.Errorf("getMutes = %+v, want carol", mutes.Mutes)
		}
		// Muted accounts still show in threads, flagged.
		pv := n.postView(alice, r1.uri)
		if pv.Author.Viewer == nil || pv.Author.Viewer.Muted == nil || !*pv.Author.Viewer.Muted {
			t.Errorf("R1 author viewer = %+v, want muted", pv.Author.Viewer)
		}
		n.call(alice, http.MethodPost, "app.bsky.graph.unmuteActor", nil, map[string]string{"actor": carol.String()}, nil)
		if uris, _ := timelineURIs(n.timeline(alice)); len(uris) != 5 {
			t.Errorf("alice's timeline after unmute = %v, want 5 items", uris)
		}
	})

	t.Run("block", func(t *testing.T) {
		blk := n.block(bob, dave)
		n.sync()
		got := reasons(n.notifications(bob))
		if got["quote"] != 0 || got["like"] != 1 {
			t.Errorf("bob's notifications after blocking dave = %v, want dave's gone", got)
		}
		var eb errorBody
		if st := n.call(dave, http.MethodGet, "app.bsky.feed.getAuthorFeed", vals("actor", bob.String()), nil, &eb); st != http.StatusBadRequest || eb.Error != "BlockedByActor" {
			t.Errorf("dave's getAuthorFeed(bob) = %d %q, want 400 BlockedByActor", st, eb.Error)
		}
		if st := n.call(bob, http.MethodGet, "app.bsky.feed.getAuthorFeed", vals("actor", dave.String()), nil, &eb); st != http.StatusBadRequest || eb.Error != "BlockedActor" {
			t.Errorf("bob's getAuthorFeed(dave) = %d %q, want 400 BlockedActor", st, eb.Error)
		}
		var th bsky.FeedGetPostThread_Output
		n.get(dave, "app.bsky.feed.getPostThread", vals("uri", p1.uri), &th)
		if th.Thread.FeedDefs_BlockedPost == nil {
			t.Errorf("dave's thread of bob's P1 = %+v, want blockedPost", th.Thread)
		}
		var posts bsky.FeedGetPosts_Output
		n.get(bob, "app.bsky.feed.getPosts", vals("uris", q1.uri), &posts)
		if len(posts.Posts) != 0 {
			t.Errorf("bob's getPosts(Q1 by blocked dave) = %d posts, want 0", len(posts.Posts))
		}
		prof := n.profile(dave, bob)
		if prof.Viewer == nil || prof.Viewer.BlockedBy == nil || !*prof.Viewer.BlockedBy {
			t.Errorf("bob's profile for dave: viewer = %+v, want blockedBy", prof.Viewer)
		}
		n.delete(bob, blk.uri)
		n.sync()
	})

	t.Run("deletes drop counts", func(t *testing.T) {
		n.delete(alice, l1.uri)
		n.delete(dave, q1.uri)
		n.delete(carol, r1.uri)
		n.sync()
		if got, want := countsOf(n.postView(alice, p1.uri)), (counts{likes: 1, reposts: 1, replies: 0, quotes: 0}); got != want {
			t.Errorf("P1 counts after deletes = %+v, want %+v", got, want)
		}
		got := reasons(n.notifications(bob))
		if want := map[string]int{"follow": 1, "like": 1, "repost": 1}; !maps(got, want) {
			t.Errorf("bob's notifications after deletes = %v, want %v", got, want)
		}
		n.delete(bob, p1.uri)
		n.sync()
		var posts bsky.FeedGetPosts_Output
		n.get(alice, "app.bsky.feed.getPosts", vals("uris", p1.uri), &posts)
		if len(posts.Posts) != 0 {
			t.Errorf("getPosts(deleted P1) = %d posts, want 0", len(posts.Posts))
		}
		if prof := n.profile(alice, bob); *prof.PostsCount != 0 {
			t.Errorf("bob's postsCount after delete = %d, want 0", *prof.PostsCount)
		}
		uris, _ := timelineURIs(n.timeline(alice))
		if want := []string{p3.uri, p2.uri}; !slices.Equal(uris, want) {
			t.Errorf("alice's timeline after P1 deleted = %v, want %v", uris, want)
		}
	})

	t.Run("profile record and handle change", func(t *testing.T) {
		n.create(bob, colProfile, "self", map[string]any{"displayName": "Bob B", "description": "gardener"})
		n.submit(relayIdentity(bob, "robert.test"))
		n.sync()
		prof := n.profile(alice, bob)
		if prof.DisplayName == nil || *prof.DisplayName != "Bob B" || prof.Handle != "robert.test" {
			t.Errorf("bob's profile = %v %q, want Bob B, robert.test", prof.DisplayName, prof.Handle)
		}
		var out bsky.ActorDefs_ProfileViewDetailed
		n.get(alice, "app.bsky.actor.getProfile", vals("actor", "robert.test"), &out)
		if out.Did != bob.String() {
			t.Errorf("getProfile(robert.test) = %s, want bob", out.Did)
		}
	})

	t.Run("deactivation hides", func(t *testing.T) {
		n.submit(relayAccount(carol, false, "deactivated"))
		n.sync()
		var eb errorBody
		if st := n.call(alice, http.MethodGet, "app.bsky.actor.getProfile", vals("actor", carol.String()), nil, &eb); st != http.StatusBadRequest || eb.Error != "AccountDeactivated" {
			t.Errorf("getProfile(deactivated carol) = %d %q, want AccountDeactivated", st, eb.Error)
		}
		uris, _ := timelineURIs(n.timeline(alice))
		if want := []string{p3.uri}; !slices.Equal(uris, want) {
			t.Errorf("alice's timeline with carol deactivated = %v, want %v", uris, want)
		}
	})

	t.Run("auth required", func(t *testing.T) {
		var eb errorBody
		if st := n.call("", http.MethodGet, "app.bsky.feed.getTimeline", url.Values{}, nil, &eb); st != http.StatusUnauthorized {
			t.Errorf("anonymous getTimeline = %d, want 401", st)
		}
	})
}

func maps(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
