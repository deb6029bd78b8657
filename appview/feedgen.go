package appview

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/xrpc"
)

// Custom feeds (atproto-reference §11.6): app.bsky.feed.generator records are indexed in
// feed_generators; getFeed asks the generator's service for a skeleton and hydrates it
// like the timeline.

// FeedDeps is what the AppView needs from the node to reach feed generator services.
type FeedDeps struct {
	// HTTP makes the outbound calls. It must have a timeout; the node's refuses private
	// addresses unless net.allow_private_network is set.
	HTTP *http.Client
	// Endpoint returns the #bsky_fg service endpoint of the feed service DID.
	Endpoint func(ctx context.Context, did syntax.DID) (string, error)
	// ServiceToken returns a service JWT from iss for aud good for lxm, or "" when iss is
	// not an account that can sign here (the skeleton is then asked for anonymously).
	ServiceToken func(ctx context.Context, iss syntax.DID, aud, lxm string) (string, error)
}

// FeedMethods returns the methods that reach feed generator services through d
// (app.bsky.feed.getFeed and getFeedGenerator), for the node to mount beside Methods.
func (a *AppView) FeedMethods(d FeedDeps) []Method {
	f := &feedClient{a: a, d: d}
	return []Method{
		{NSID: "app.bsky.feed.getFeed", Auth: AuthOptional, Handler: a.serve("app.bsky.feed.getFeed", AuthOptional, f.getFeed)},
		{NSID: "app.bsky.feed.getFeedGenerator", Auth: AuthOptional, Handler: a.serve("app.bsky.feed.getFeedGenerator", AuthOptional, f.getFeedGenerator)},
	}
}

// Limits on what a feed generator sends back: a skeleton of 100 items with the lexicon's
// longest feedContext is about 250 KB.
const (
	maxSkeletonBytes    = 1 << 20
	maxDescribeBytes    = 256 << 10
	maxFeedContextBytes = 2000
	maxReqIDBytes       = 100
)

const lxmGetFeedSkeleton = "app.bsky.feed.getFeedSkeleton"

// generatorRow is a feed_generators row.
type generatorRow struct {
	uri, cid, author, did, name string
	record                      json.RawMessage
	indexedAt, likes            int64
}

const generatorColumns = `uri, cid, author, did, display_name, record, indexed_at, like_count`

func scanGenerator(rows interface{ Scan(...any) error }) (*generatorRow, error) {
	g := &generatorRow{}
	var rec string
	err := rows.Scan(&g.uri, &g.cid, &g.author, &g.did, &g.name, &rec, &g.indexedAt, &g.likes)
	g.record = json.RawMessage(rec)
	return g, err
}

// generatorView is app.bsky.feed.defs#generatorView.
type generatorView struct {
	Type                string           `json:"$type"`
	URI                 string           `json:"uri"`
	CID                 string           `json:"cid"`
	DID                 string           `json:"did"`
	Creator             *profileView     `json:"creator"`
	DisplayName         string           `json:"displayName"`
	Description         string           `json:"description,omitempty"`
	DescriptionFacets   json.RawMessage  `json:"descriptionFacets,omitempty"`
	Avatar              string           `json:"avatar,omitempty"`
	LikeCount           *int64           `json:"likeCount,omitempty"`
	AcceptsInteractions bool             `json:"acceptsInteractions,omitempty"`
	Labels              []label          `json:"labels,omitempty"`
	Viewer              *generatorViewer `json:"viewer,omitempty"`
	ContentMode         string           `json:"contentMode,omitempty"`
	IndexedAt           string           `json:"indexedAt"`
}

// generatorViewer is app.bsky.feed.defs#generatorViewerState.
type generatorViewer struct {
	Like string `json:"like,omitempty"`
}

// loadGenerators returns the indexed generators among uris whose creator the viewer may
// see, with their creators and the viewer's likes loaded.
func (r *req) loadGenerators(uris []string) (map[string]*generatorRow, error) {
	gens := map[string]*generatorRow{}
	if len(uris) == 0 {
		return gens, nil
	}
	err := r.inQuery(`SELECT `+generatorColumns+` FROM feed_generators WHERE uri IN (%s)`, nil, uris, func(rows *sql.Rows) error {
		g, err := scanGenerator(rows)
		gens[g.uri] = g
		return err
	})
	if err != nil {
		return nil, err
	}
	return gens, r.hydrateGenerators(gens)
}

// hydrateGenerators loads the creators of gens and the viewer's likes of them, and drops
// those whose creator is not shown (inactive, or blocked either way).
func (r *req) hydrateGenerators(gens map[string]*generatorRow) error {
	dids := make([]string, 0, len(gens))
	uris := make([]string, 0, len(gens))
	for _, g := range gens {
		dids = append(dids, g.author)
		uris = append(uris, g.uri)
	}
	if err := r.loadProfiles(dids); err != nil {
		return err
	}
	for u, g := range gens {
		if !r.actors[g.author].active() || r.blocked(g.author) {
			delete(gens, u)
		}
	}
	if r.viewer == "" || len(uris) == 0 {
		return nil
	}
	r.genLikes = map[string]string{}
	return r.inQuery(`SELECT subject, min(uri) FROM likes WHERE author = ? AND subject IN (%s) GROUP BY subject`,
		[]any{r.viewer}, uris, func(rows *sql.Rows) error {
			var s, u string
			err := rows.Scan(&s, &u)
			r.genLikes[s] = u
			return err
		})
}

// generatorView renders a hydrated generator.
func (r *req) generatorView(g *generatorRow) *generatorView {
	var rec struct {
		Description         string          `json:"description"`
		DescriptionFacets   json.RawMessage `json:"descriptionFacets"`
		Avatar              *blobJSON       `json:"avatar"`
		AcceptsInteractions bool            `json:"acceptsInteractions"`
		ContentMode         string          `json:"contentMode"`
		CreatedAt           string          `json:"createdAt"`
		Labels              struct {
			Type   string `json:"$type"`
			Values []struct {
				Val string `json:"val"`
			} `json:"values"`
		} `json:"labels"`
	}
	// The JSON was written by repo.RecordJSON; a field of an unexpected shape is only
	// left out of the view.
	_ = json.Unmarshal(g.record, &rec)
	v := &generatorView{
		Type:                "app.bsky.feed.defs#generatorView",
		URI:                 g.uri,
		CID:                 g.cid,
		DID:                 g.did,
		Creator:             r.profile(g.author),
		DisplayName:         g.name,
		Description:         rec.Description,
		Avatar:              r.a.imageURL("avatar", g.author, rec.Avatar.cid()),
		LikeCount:           counted(g.likes),
		AcceptsInteractions: rec.AcceptsInteractions,
		ContentMode:         rec.ContentMode,
		IndexedAt:           fmtTime(g.indexedAt),
	}
	if len(rec.DescriptionFacets) > 0 && rec.DescriptionFacets[0] == '[' {
		v.DescriptionFacets = rec.DescriptionFacets
	}
	if rec.Labels.Type == "com.atproto.label.defs#selfLabels" {
		for _, l := range rec.Labels.Values {
			v.Labels = append(v.Labels, label{Src: g.author, URI: g.uri, CID: g.cid, Val: l.Val, Cts: rec.CreatedAt})
		}
	}
	if r.viewer != "" {
		v.Viewer = &generatorViewer{Like: r.genLikes[g.uri]}
	}
	return v
}

// maxGetFeedGenerators bounds getFeedGenerators' feeds (the app asks for its saved
// feeds, which it caps far lower).
const maxGetFeedGenerators = 100

func (a *AppView) getFeedGenerators(hr *http.Request, viewer string) (any, error) {
	raw := hr.URL.Query()["feeds"]
	if len(raw) > maxGetFeedGenerators {
		return nil, xrpc.InvalidRequest("at most %d feeds", maxGetFeedGenerators)
	}
	uris := make([]string, 0, len(raw))
	for _, s := range raw {
		u, err := xrpc.ParseATURI(s)
		if err != nil {
			return nil, xrpc.InvalidRequest("feeds must be at:// URIs")
		}
		uris = append(uris, u.String())
	}
	out := struct {
		Feeds []*generatorView `json:"feeds"`
	}{Feeds: []*generatorView{}}
	err := a.read(hr.Context(), viewer, func(r *req) error {
		gens, err := r.loadGenerators(uris)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, u := range uris {
			if g := gens[u]; g != nil && !seen[u] {
				seen[u] = true
				out.Feeds = append(out.Feeds, r.generatorView(g))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (a *AppView) getActorFeeds(hr *http.Request, viewer string) (any, error) {
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	cur, err := parseTimeCursor(hr.URL.Query().Get("cursor"))
	if err != nil {
		return nil, err
	}
	out := struct {
		Cursor string           `json:"cursor,omitempty"`
		Feeds  []*generatorView `json:"feeds"`
	}{Feeds: []*generatorView{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		did, err := r.actorParam(hr, "actor")
		if err != nil {
			return err
		}
		gens := map[string]*generatorRow{}
		var order []*generatorRow
		err = r.rows(`SELECT `+generatorColumns+` FROM feed_generators WHERE author = ? AND (indexed_at, uri) < (?, ?)
			ORDER BY indexed_at DESC, uri DESC LIMIT ?`, []any{did, cur.at, cur.uri, limit}, func(rows *sql.Rows) error {
			g, err := scanGenerator(rows)
			gens[g.uri] = g
			order = append(order, g)
			return err
		})
		if err != nil {
			return err
		}
		if err := r.hydrateGenerators(gens); err != nil {
			return err
		}
		for _, g := range order {
			if gens[g.uri] != nil {
				out.Feeds = append(out.Feeds, r.generatorView(g))
			}
		}
		if len(order) == limit {
			last := order[len(order)-1]
			out.Cursor = timeCursor{at: last.indexedAt, uri: last.uri}.String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// feedClient serves the methods that call feed generator services.
type feedClient struct {
	a *AppView
	d FeedDeps
}

// errUnknownFeed is getFeed's answer for a feed URI that names no indexed generator.
var errUnknownFeed = &xrpc.Error{Status: http.StatusBadRequest, Name: "UnknownFeed", Message: "could not find feed"}

// generator reads the generator uri names and its view; errUnknownFeed when it is not
// indexed or its creator is not shown.
func (f *feedClient) generator(ctx context.Context, viewer, uri string) (*generatorRow, *generatorView, error) {
	var g *generatorRow
	var v *generatorView
	err := f.a.read(ctx, viewer, func(r *req) error {
		gens, err := r.loadGenerators([]string{uri})
		if err != nil {
			return err
		}
		if g = gens[uri]; g != nil {
			v = r.generatorView(g)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if g == nil {
		return nil, nil, errUnknownFeed
	}
	return g, v, nil
}

// endpoint resolves the generator's service endpoint. A DID that does not resolve or has
// no #bsky_fg service is the feed's fault, so the client hears 400 as the reference
// AppView answers.
func (f *feedClient) endpoint(ctx context.Context, did string) (*url.URL, error) {
	d, err := syntax.ParseDID(did)
	if err != nil {
		return nil, xrpc.InvalidRequest("feed generator has an invalid service DID")
	}
	ep, err := f.d.Endpoint(ctx, d)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest",
			Message: "could not resolve the feed generator service", Err: err}
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, xrpc.InvalidRequest("invalid feed generator service details in DID document: %s", did)
	}
	return u, nil
}

// get calls nsid on the service at base and decodes the JSON answer into out, reading at
// most limit bytes. An XRPC error answer of the service comes back as *xrpc.Error with
// its name when it is 4xx, and as 502 UpstreamFailure otherwise.
func (f *feedClient) get(ctx context.Context, base *url.URL, nsid string, q url.Values, h http.Header, limit int64, out any) error {
	u := base.JoinPath("xrpc", nsid)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("build %s request: %w", nsid, err)
	}
	req.Header = h
	req.Header.Set("Accept", "application/json")
	resp, err := f.d.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &xrpc.Error{Status: http.StatusBadGateway, Name: "UpstreamFailure", Message: "feed unavailable", Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return &xrpc.Error{Status: http.StatusBadGateway, Name: "UpstreamFailure", Message: "feed unavailable", Err: err}
	}
	if int64(len(body)) > limit {
		return &xrpc.Error{Status: http.StatusBadGateway, Name: "UpstreamFailure", Message: "feed generator answer is too large"}
	}
	if resp.StatusCode != http.StatusOK {
		var eb xrpc.Body
		_ = json.Unmarshal(body, &eb)
		cause := fmt.Errorf("%s answered %d %s", nsid, resp.StatusCode, eb.Error)
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && eb.Error != "" {
			return &xrpc.Error{Status: http.StatusBadRequest, Name: eb.Error, Message: eb.Message, Err: cause}
		}
		return &xrpc.Error{Status: http.StatusBadGateway, Name: "UpstreamFailure", Message: "feed unavailable", Err: cause}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return &xrpc.Error{Status: http.StatusBadGateway, Name: "UpstreamFailure", Message: "feed generator answered malformed JSON", Err: err}
	}
	return nil
}

// generatorStatusOutput is getFeedGenerator's output.
type generatorStatusOutput struct {
	View     *generatorView `json:"view"`
	IsOnline bool           `json:"isOnline"`
	IsValid  bool           `json:"isValid"`
}

// getFeedGenerator answers the generator's view and whether its service answers
// (isOnline) and claims this feed (isValid), asked through describeFeedGenerator.
func (f *feedClient) getFeedGenerator(hr *http.Request, viewer string) (any, error) {
	uri, err := uriParam(hr, "feed")
	if err != nil {
		return nil, err
	}
	g, v, err := f.generator(hr.Context(), viewer, uri)
	if errors.Is(err, errUnknownFeed) {
		return nil, xrpc.InvalidRequest("could not find feed")
	}
	if err != nil {
		return nil, err
	}
	out := &generatorStatusOutput{View: v}
	base, err := f.endpoint(hr.Context(), g.did)
	if err != nil {
		if hr.Context().Err() != nil {
			return nil, err
		}
		return out, nil // not resolvable: neither online nor valid
	}
	var desc struct {
		DID   string `json:"did"`
		Feeds []struct {
			URI string `json:"uri"`
		} `json:"feeds"`
	}
	if err := f.get(hr.Context(), base, "app.bsky.feed.describeFeedGenerator", nil, http.Header{}, maxDescribeBytes, &desc); err != nil {
		if hr.Context().Err() != nil {
			return nil, err
		}
		f.a.log.DebugContext(hr.Context(), "describe feed generator", "did", g.did, "err", err)
		return out, nil
	}
	out.IsOnline = true
	if desc.DID == g.did {
		for _, fd := range desc.Feeds {
			if fd.URI == uri {
				out.IsValid = true
				break
			}
		}
	}
	return out, nil
}

// skeleton is getFeedSkeleton's output as the AppView reads it. Own types rather than
// indigo's, so that a reason of a $type we do not know drops only the reason, not the feed.
type skeleton struct {
	Cursor string `json:"cursor"`
	Feed   []struct {
		Post   string `json:"post"`
		Reason *struct {
			Type   string `json:"$type"`
			Repost string `json:"repost"`
		} `json:"reason"`
		FeedContext string `json:"feedContext"`
	} `json:"feed"`
	ReqID string `json:"reqId"`
}

func (f *feedClient) getFeed(hr *http.Request, viewer string) (any, error) {
	ctx := hr.Context()
	uri, err := uriParam(hr, "feed")
	if err != nil {
		return nil, err
	}
	limit, err := limitParam(hr, 50, 100)
	if err != nil {
		return nil, err
	}
	cursor := hr.URL.Query().Get("cursor")
	g, _, err := f.generator(ctx, viewer, uri)
	if err != nil {
		return nil, err
	}
	base, err := f.endpoint(ctx, g.did)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	if al := hr.Header.Get("Accept-Language"); al != "" {
		h.Set("Accept-Language", al)
	}
	if viewer != "" {
		// The token names the feed service as audience and the one method it is good for,
		// as the reference PDS mints it for getFeed (§11.6).
		tok, err := f.d.ServiceToken(ctx, syntax.DID(viewer), g.did, lxmGetFeedSkeleton)
		if err != nil {
			return nil, fmt.Errorf("mint service token for feed %s: %w", uri, err)
		}
		if tok != "" {
			h.Set("Authorization", "Bearer "+tok)
		}
	}
	q := url.Values{"feed": {uri}, "limit": {strconv.Itoa(limit)}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var sk skeleton
	if err := f.get(ctx, base, lxmGetFeedSkeleton, q, h, maxSkeletonBytes, &sk); err != nil {
		return nil, err
	}
	return f.a.hydrateSkeleton(ctx, viewer, &sk, limit)
}

// hydrateSkeleton turns a skeleton into feedViewPosts through the timeline's hydration,
// dropping what the index does not hold or the viewer must not see.
func (a *AppView) hydrateSkeleton(ctx context.Context, viewer string, sk *skeleton, limit int) (*feedOutput, error) {
	out := &feedOutput{Feed: []*feedViewPost{}, Cursor: sk.Cursor}
	reqID := sk.ReqID
	if len(reqID) > maxReqIDBytes {
		reqID = ""
	}
	type entry struct {
		it          feedItem
		pin         bool
		feedContext string
	}
	var entries []entry
	var reposts []string
	for _, s := range sk.Feed {
		if len(entries) == limit {
			break // a generator that sends more than asked is cut to the page
		}
		pu, err := syntax.ParseATURI(s.Post)
		if err != nil || pu.Collection().String() != colPost {
			continue
		}
		e := entry{it: feedItem{postURI: pu.String(), uri: pu.String(), originator: uriAuthority(pu.String())}}
		if len(s.FeedContext) <= maxFeedContextBytes {
			e.feedContext = s.FeedContext
		}
		if s.Reason != nil {
			switch s.Reason.Type {
			case "app.bsky.feed.defs#skeletonReasonRepost":
				if ru, err := syntax.ParseATURI(s.Reason.Repost); err == nil && ru.Collection().String() == colRepost {
					e.it.uri = ru.String()
					reposts = append(reposts, ru.String())
				}
			case "app.bsky.feed.defs#skeletonReasonPin":
				e.pin = true
			}
		}
		entries = append(entries, e)
	}
	err := a.read(ctx, viewer, func(r *req) error {
		type repostRow struct {
			cid, author, subject string
			at                   int64
		}
		found := map[string]repostRow{}
		err := r.inQuery(`SELECT uri, cid, author, subject, indexed_at FROM reposts WHERE uri IN (%s)`, nil, reposts, func(rows *sql.Rows) error {
			var u string
			var rr repostRow
			err := rows.Scan(&u, &rr.cid, &rr.author, &rr.subject, &rr.at)
			found[u] = rr
			return err
		})
		if err != nil {
			return err
		}
		items := make([]feedItem, 0, len(entries))
		for i := range entries {
			it := &entries[i].it
			if it.uri != it.postURI {
				// A repost the index does not hold, or of another post, cannot be shown as
				// a reason; the post itself still can.
				if rr, ok := found[it.uri]; ok && rr.subject == it.postURI {
					it.originator, it.repostCID, it.at = rr.author, rr.cid, rr.at
				} else {
					it.uri = it.postURI
				}
			}
			items = append(items, *it)
		}
		if err := r.hydrateFeed(items); err != nil {
			return err
		}
		for _, e := range entries {
			fv := r.feedViewPost(e.it, true)
			if fv == nil {
				continue
			}
			if e.pin && fv.Reason == nil {
				fv.Reason = &reasonPin{Type: "app.bsky.feed.defs#reasonPin"}
			}
			fv.FeedContext = e.feedContext
			fv.ReqID = reqID
			out.Feed = append(out.Feed, fv)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
