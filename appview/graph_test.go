package appview

import (
	"net/http"
	"testing"

	"github.com/bluesky-social/indigo/api/bsky"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

func TestGraphAndListViews(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	alice, bob, carol := n.account("alice"), n.account("bob"), n.account("carol")
	n.follow(alice, bob)
	n.block(alice, carol)
	list := n.create(alice, colList, "", map[string]any{"name": "friends", "purpose": "app.bsky.graph.defs#curatelist"})
	n.create(alice, colListItem, "", map[string]any{"subject": bob.String(), "list": list.uri})
	root := n.post(alice, "root")
	n.reply(alice, "self-thread", root, root)
	n.reply(bob, "other", root, root)
	n.create(alice, colPost, "", map[string]any{"text": "pic", "embed": map[string]any{
		"$type": "app.bsky.embed.images",
		"images": []any{map[string]any{"alt": "a cat", "image": map[string]any{
			"$type": "blob", "ref": map[string]any{"$link": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},
			"mimeType": "image/jpeg", "size": 1000}}}}})
	n.sync()

	var rel bsky.GraphGetRelationships_Output
	n.get(alice, "app.bsky.graph.getRelationships", vals("actor", alice.String(), "others", bob.String(), "others", carol.String(), "others", "nobody.test"), &rel)
	if len(rel.Relationships) != 3 || rel.Relationships[0].GraphDefs_Relationship.Following == nil ||
		rel.Relationships[1].GraphDefs_Relationship.Blocking == nil || rel.Relationships[2].GraphDefs_NotFoundActor == nil {
		t.Errorf("getRelationships = %+v", rel.Relationships)
	}
	var blocks bsky.GraphGetBlocks_Output
	n.get(alice, "app.bsky.graph.getBlocks", nil, &blocks)
	if len(blocks.Blocks) != 1 || blocks.Blocks[0].Did != carol.String() {
		t.Errorf("getBlocks = %+v, want carol", blocks.Blocks)
	}
	var lists bsky.GraphGetLists_Output
	n.get(bob, "app.bsky.graph.getLists", vals("actor", alice.String()), &lists)
	if len(lists.Lists) != 1 || *lists.Lists[0].ListItemCount != 1 {
		t.Errorf("getLists = %+v, want one list of one", lists.Lists)
	}
	var gl bsky.GraphGetList_Output
	n.get(bob, "app.bsky.graph.getList", vals("list", list.uri), &gl)
	if len(gl.Items) != 1 || gl.Items[0].Subject.Did != bob.String() {
		t.Errorf("getList items = %+v, want bob", gl.Items)
	}

	tests := []struct {
		name   string
		filter string
		want   int
	}{
		{name: "all", filter: "posts_with_replies", want: 3},
		{name: "no replies", filter: "posts_no_replies", want: 2},
		{name: "author threads", filter: "posts_and_author_threads", want: 3},
		{name: "media", filter: "posts_with_media", want: 1},
	}
	for _, tt := range tests {
		var out bsky.FeedGetAuthorFeed_Output
		n.get(bob, "app.bsky.feed.getAuthorFeed", vals("actor", alice.String(), "filter", tt.filter), &out)
		if len(out.Feed) != tt.want {
			t.Errorf("getAuthorFeed(%s) = %d items, want %d", tt.filter, len(out.Feed), tt.want)
		}
		if tt.filter == "posts_with_media" && len(out.Feed) == 1 {
			e := out.Feed[0].Post.Embed
			if e == nil || e.EmbedImages_View == nil || e.EmbedImages_View.Images[0].Thumb !=
				"https://pds.test/img/feed_thumbnail/plain/"+alice.String()+"/bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy@jpeg" {
				t.Errorf("image embed = %+v", e)
			}
		}
	}

	var sugg bsky.ActorGetSuggestions_Output
	n.get(carol, "app.bsky.actor.getSuggestions", nil, &sugg)
	var profs bsky.ActorGetProfiles_Output
	n.get(bob, "app.bsky.actor.getProfiles", vals("actors", alice.String(), "actors", "carol.test"), &profs)
	if len(profs.Profiles) != 2 {
		t.Errorf("getProfiles = %d profiles, want 2", len(profs.Profiles))
	}
	var sa bsky.ActorSearchActors_Output
	n.get(bob, "app.bsky.actor.searchActors", vals("q", "alice"), &sa)
	if len(sa.Actors) != 1 {
		t.Errorf("searchActors(alice) = %d, want 1", len(sa.Actors))
	}
}

// TestModerationViewerState checks each kind of the viewer's moderation state (loadMod)
// in the viewer state of profiles: mutes, blocks both ways, and modlists both ways.
func TestModerationViewerState(t *testing.T) {
	t.Parallel()
	n := newTestNet(t)
	alice, bob, carol, dave, erin := n.account("alice"), n.account("bob"), n.account("carol"), n.account("dave"), n.account("erin")
	block := n.block(alice, bob)
	n.block(carol, alice)
	list := n.create(dave, colList, "", map[string]any{"name": "mods", "purpose": "app.bsky.graph.defs#modlist"})
	n.create(dave, colListItem, "", map[string]any{"subject": alice.String(), "list": list.uri})
	n.create(dave, colListItem, "", map[string]any{"subject": erin.String(), "list": list.uri})
	n.create(alice, colListBlock, "", map[string]any{"subject": list.uri})
	n.create(dave, colListBlock, "", map[string]any{"subject": list.uri})
	n.sync()
	if st := n.call(alice, http.MethodPost, "app.bsky.graph.muteActor", nil, map[string]string{"actor": dave.String()}, nil); st != http.StatusOK {
		t.Fatalf("muteActor = %d", st)
	}

	v := func(actor syntax.DID) *bsky.ActorDefs_ViewerState { return n.profile(alice, actor).Viewer }
	if got := v(bob); got == nil || got.Blocking == nil || *got.Blocking != block.uri {
		t.Errorf("alice's view of bob = %+v, want blocking %s", got, block.uri)
	}
	if got := v(carol); got == nil || got.BlockedBy == nil || !*got.BlockedBy {
		t.Errorf("alice's view of carol = %+v, want blockedBy", got)
	}
	if got := v(dave); got == nil || got.Muted == nil || !*got.Muted || got.BlockedBy == nil || !*got.BlockedBy {
		t.Errorf("alice's view of dave = %+v, want muted and blockedBy (his modlist holds alice)", got)
	}
	if got := v(erin); got == nil || got.BlockingByList == nil || got.BlockingByList.Uri != list.uri {
		t.Errorf("alice's view of erin = %+v, want blockingByList %s", got, list.uri)
	}
	if got := n.profile(bob, alice).Viewer; got == nil || got.BlockedBy == nil || !*got.BlockedBy || got.Muted != nil && *got.Muted {
		t.Errorf("bob's view of alice = %+v, want blockedBy and not muted", got)
	}
}
