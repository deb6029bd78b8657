package node

import (
	"net/http"

	"github.com/aerie-social/aerie/node/xrpc"
)

// appStartupDefaults are app.bsky methods the official Bluesky app calls on start that
// this node has no data for yet (labelers, trends, starter packs, bookmarks,
// push). Each answers the lexicon's well-formed empty result, so the app starts and shows
// what the node does have; the README lists them. The AppView's own methods, registered
// after these, replace any of them it implements.
var appStartupDefaults = []struct {
	nsid      string
	procedure bool
	body      map[string]any
}{
	{"app.bsky.unspecced.getConfig", false, map[string]any{}},
	{"app.bsky.labeler.getServices", false, map[string]any{"views": []any{}}},
	{"app.bsky.notification.registerPush", true, nil},
	{"app.bsky.notification.listActivitySubscriptions", false, map[string]any{"subscriptions": []any{}}},
	{"app.bsky.unspecced.getTrendingTopics", false, map[string]any{"topics": []any{}, "suggested": []any{}}},
	{"app.bsky.unspecced.getTrends", false, map[string]any{"trends": []any{}}},
	{"app.bsky.unspecced.getSuggestedFeeds", false, map[string]any{"feeds": []any{}}},
	{"app.bsky.unspecced.getPopularFeedGenerators", false, map[string]any{"feeds": []any{}}},
	{"app.bsky.graph.getSuggestedFollowsByActor", false, map[string]any{"suggestions": []any{}}},
	{"app.bsky.graph.getStarterPacks", false, map[string]any{"starterPacks": []any{}}},
	{"app.bsky.graph.getActorStarterPacks", false, map[string]any{"starterPacks": []any{}}},
	{"app.bsky.bookmark.getBookmarks", false, map[string]any{"bookmarks": []any{}}},
}

// appStartupRoutes registers appStartupDefaults.
func (n *Node) appStartupRoutes(x *xrpcMux) {
	for _, d := range appStartupDefaults {
		body := d.body
		h := n.withAuth(authOptional, func(w http.ResponseWriter, r *http.Request) error {
			if body == nil {
				w.WriteHeader(http.StatusOK)
				return nil
			}
			xrpc.WriteJSON(w, http.StatusOK, body)
			return nil
		})
		if d.procedure {
			x.procedure(d.nsid, h)
		} else {
			x.query(d.nsid, h)
		}
	}
}
