package appview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/xrpc"
)

type viewerKey struct{}

// WithViewer returns ctx carrying the authenticated account the views are for. The node
// sets it after authenticating the request; without it the views are anonymous.
func WithViewer(ctx context.Context, did syntax.DID) context.Context {
	return context.WithValue(ctx, viewerKey{}, did.String())
}

// ViewerFrom returns the viewer set by WithViewer, or "".
func ViewerFrom(ctx context.Context) syntax.DID {
	d, _ := ctx.Value(viewerKey{}).(string)
	return syntax.DID(d)
}

// Auth says what a method needs from the node's authentication.
type Auth int

// Auth levels of Method.
const (
	// AuthOptional methods add viewer state when the request is authenticated.
	AuthOptional Auth = iota
	// AuthRequired methods answer 401 AuthenticationRequired without a viewer.
	AuthRequired
)

// Method is one XRPC method the AppView serves.
type Method struct {
	NSID string
	// Procedure is true for POST methods, false for GET queries.
	Procedure bool
	Auth      Auth
	Handler   http.HandlerFunc
}

// handler is a method body: it returns the response value or an error for serve to map.
type handler func(r *http.Request, viewer string) (any, error)

// Methods returns the app.bsky methods the AppView answers from its index alone, for the
// node to mount at /xrpc/<NSID> behind its authentication (which sets WithViewer);
// FeedMethods returns those that also call feed generator services.
func (a *AppView) Methods() []Method {
	q := func(nsid string, auth Auth, h handler) Method {
		return Method{NSID: nsid, Auth: auth, Handler: a.serve(nsid, auth, h)}
	}
	p := func(nsid string, h handler) Method {
		return Method{NSID: nsid, Procedure: true, Auth: AuthRequired, Handler: a.serve(nsid, AuthRequired, h)}
	}
	return []Method{
		q("app.bsky.feed.getTimeline", AuthRequired, a.getTimeline),
		q("app.bsky.feed.getAuthorFeed", AuthOptional, a.getAuthorFeed),
		q("app.bsky.feed.getPostThread", AuthOptional, a.getPostThread),
		q("app.bsky.unspecced.getPostThreadV2", AuthOptional, a.getPostThreadV2),
		q("app.bsky.feed.getPosts", AuthOptional, a.getPosts),
		q("app.bsky.feed.getLikes", AuthOptional, a.getLikes),
		q("app.bsky.feed.getRepostedBy", AuthOptional, a.getRepostedBy),
		q("app.bsky.feed.getQuotes", AuthOptional, a.getQuotes),
		q("app.bsky.feed.getActorLikes", AuthRequired, a.getActorLikes),
		q("app.bsky.feed.searchPosts", AuthOptional, a.searchPosts),
		q("app.bsky.feed.getFeedGenerators", AuthOptional, a.getFeedGenerators),
		q("app.bsky.feed.getActorFeeds", AuthOptional, a.getActorFeeds),
		q("app.bsky.actor.getProfile", AuthOptional, a.getProfile),
		q("app.bsky.actor.getProfiles", AuthOptional, a.getProfiles),
		q("app.bsky.actor.searchActors", AuthOptional, a.searchActors),
		q("app.bsky.actor.searchActorsTypeahead", AuthOptional, a.searchActorsTypeahead),
		q("app.bsky.actor.getSuggestions", AuthOptional, a.getSuggestions),
		q("app.bsky.graph.getFollows", AuthOptional, a.getFollows),
		q("app.bsky.graph.getFollowers", AuthOptional, a.getFollowers),
		q("app.bsky.graph.getBlocks", AuthRequired, a.getBlocks),
		q("app.bsky.graph.getMutes", AuthRequired, a.getMutes),
		q("app.bsky.graph.getRelationships", AuthOptional, a.getRelationships),
		q("app.bsky.graph.getList", AuthOptional, a.getList),
		q("app.bsky.graph.getLists", AuthOptional, a.getLists),
		p("app.bsky.graph.muteActor", a.muteActor),
		p("app.bsky.graph.unmuteActor", a.unmuteActor),
		q("app.bsky.notification.listNotifications", AuthRequired, a.listNotifications),
		q("app.bsky.notification.getUnreadCount", AuthRequired, a.getUnreadCount),
		p("app.bsky.notification.updateSeen", a.updateSeen),
	}
}

// serve adapts a handler: viewer check, JSON response, and the XRPC error mapping.
func (a *AppView) serve(nsid string, auth Auth, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		viewer := ViewerFrom(r.Context()).String()
		if auth == AuthRequired && viewer == "" {
			xrpc.WriteError(w, http.StatusUnauthorized, "AuthenticationRequired", "Authentication Required")
			return
		}
		var out any
		err := a.awaitLocalWrites(r.Context())
		if err == nil {
			out, err = h(r, viewer)
		}
		if err == nil {
			if out == nil {
				w.WriteHeader(http.StatusOK)
				return
			}
			xrpc.WriteJSON(w, http.StatusOK, out)
			return
		}
		var xe *xrpc.Error
		switch {
		case errors.As(err, &xe):
			xrpc.WriteError(w, xe.Status, xe.Name, xe.Message)
		case errors.Is(err, xrpc.ErrInvalidSyntax):
			xrpc.WriteError(w, http.StatusBadRequest, "InvalidRequest", "invalid parameter")
		case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
			// The client went away; nobody reads the answer.
		default:
			a.log.ErrorContext(r.Context(), "appview request failed", "nsid", nsid, "err", err)
			xrpc.WriteError(w, http.StatusInternalServerError, "InternalServerError", "Internal Server Error")
		}
	}
}

func notFound(name, format string, args ...any) error {
	return &xrpc.Error{Status: http.StatusBadRequest, Name: name, Message: fmt.Sprintf(format, args...)}
}

// limitParam reads limit within [1, max], defaulting to def.
func limitParam(r *http.Request, def, maxLimit int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		return 0, xrpc.InvalidRequest("limit must be an integer between 1 and %d", maxLimit)
	}
	return n, nil
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, xrpc.InvalidRequest("%s must be an integer between %d and %d", name, lo, hi)
	}
	return n, nil
}

func boolParam(r *http.Request, name string, def bool) (bool, error) {
	switch r.URL.Query().Get(name) {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, xrpc.InvalidRequest("%s must be true or false", name)
}

// uriParam reads a required at:// URI parameter.
func uriParam(r *http.Request, name string) (string, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return "", xrpc.InvalidRequest("%s is required", name)
	}
	u, err := xrpc.ParseATURI(s)
	if err != nil {
		return "", xrpc.InvalidRequest("%s must be an at:// URI", name)
	}
	return u.String(), nil
}

// resolveActor turns a DID or handle into an indexed DID, or "" when unknown.
func (r *req) resolveActor(raw string) (string, error) {
	id, err := syntax.ParseAtIdentifier(raw)
	if err != nil {
		return "", xrpc.InvalidRequest("actor must be a DID or a handle")
	}
	if d, err := id.AsDID(); err == nil {
		return d.String(), nil
	}
	h, _ := id.AsHandle()
	var did string
	err = r.tx.QueryRowContext(r.ctx, `SELECT did FROM actors WHERE handle = ? AND status IS NULL LIMIT 1`, strings.ToLower(h.String())).Scan(&did)
	if err != nil {
		return "", nil
	}
	return did, nil
}

// actorParam reads a required actor parameter and resolves it.
func (r *req) actorParam(hr *http.Request, name string) (string, error) {
	raw := hr.URL.Query().Get(name)
	if raw == "" {
		return "", xrpc.InvalidRequest("%s is required", name)
	}
	did, err := r.resolveActor(raw)
	if err != nil {
		return "", err
	}
	if did == "" {
		return "", xrpc.InvalidRequest("Profile not found")
	}
	return did, nil
}

// maxBody bounds the JSON body of the AppView's procedures.
const maxBody = 64 << 10

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	if err := dec.Decode(v); err != nil {
		return xrpc.InvalidRequest("request body must be a JSON object")
	}
	return nil
}

// timeCursor is the cursor of lists ordered by (sort_at, uri) descending:
// "<microseconds>::<uri>".
type timeCursor struct {
	at  int64
	uri string
}

// topCursor returns the cursor that sorts after every item: the first page.
func topCursor() timeCursor { return timeCursor{at: 1<<63 - 1, uri: "\uffff"} }

func parseTimeCursor(s string) (timeCursor, error) {
	if s == "" {
		return topCursor(), nil
	}
	at, uri, ok := strings.Cut(s, "::")
	n, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil {
		return timeCursor{}, xrpc.InvalidRequest("malformed cursor")
	}
	return timeCursor{at: n, uri: uri}, nil
}

func (c timeCursor) String() string { return strconv.FormatInt(c.at, 10) + "::" + c.uri }

// less reports whether c sorts before o in (sort_at, uri) order.
func (c timeCursor) less(o timeCursor) bool {
	return c.at < o.at || (c.at == o.at && c.uri < o.uri)
}
