package appview

import (
	"database/sql"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/aerie-social/aerie/node/xrpc"
)

// maxThreadPosts bounds the replies one thread request loads, whatever depth asks for.
const maxThreadPosts = 1000

// thread is a loaded thread: the anchor, its ancestors (nearest first) and the replies
// below it by parent.
type thread struct {
	anchor    string
	ancestors []string // nearest parent first; "" after the last marks a missing parent
	children  map[string][]string
	hidden    map[string]bool // replies the root's threadgate hides
	root      string
}

// loadThread loads the anchor's thread: parentHeight ancestors and depth levels of replies,
// everything hydrated. It returns nil when the anchor is not indexed.
func (r *req) loadThread(anchor string, depth, parentHeight int) (*thread, error) {
	if err := r.loadPosts([]string{anchor}); err != nil {
		return nil, err
	}
	ap := r.posts[anchor]
	if ap == nil {
		return nil, nil
	}
	t := &thread{anchor: anchor, children: map[string][]string{}, hidden: map[string]bool{}, root: anchor}
	if ap.replyRoot != "" {
		t.root = ap.replyRoot
	}
	all := []string{anchor}
	for cur := ap.replyParent; cur != "" && len(t.ancestors) < parentHeight; {
		if err := r.loadPosts([]string{cur}); err != nil {
			return nil, err
		}
		t.ancestors = append(t.ancestors, cur)
		all = append(all, cur)
		p := r.posts[cur]
		if p == nil {
			break
		}
		cur = p.replyParent
	}
	level := []string{anchor}
	total := 0
	for d := 0; d < depth && len(level) > 0 && total < maxThreadPosts; d++ {
		var next []string
		err := r.inQuery(`SELECT uri, reply_parent FROM posts WHERE reply_parent IN (%s) AND violates_gate = 0
			ORDER BY sort_at, uri`, nil, level, func(rows *sql.Rows) error {
			var u, parent string
			if err := rows.Scan(&u, &parent); err != nil {
				return err
			}
			if total < maxThreadPosts {
				t.children[parent] = append(t.children[parent], u)
				next = append(next, u)
				total++
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		all = append(all, next...)
		level = next
	}
	if err := r.hydratePosts(all); err != nil {
		return nil, err
	}
	if err := r.loadThreadgates([]string{t.root}); err != nil {
		return nil, err
	}
	if g := r.gates[t.root]; g != nil {
		var rec struct {
			HiddenReplies []string `json:"hiddenReplies"`
		}
		if json.Unmarshal(g.Record, &rec) == nil {
			for _, u := range rec.HiddenReplies {
				t.hidden[u] = true
			}
		}
	}
	return t, nil
}

// visible reports whether a loaded post may be shown at all.
func (r *req) visible(uri string) bool {
	p := r.posts[uri]
	return p != nil && r.actors[p.author].active()
}

func (a *AppView) getPostThread(hr *http.Request, viewer string) (any, error) {
	uri, err := uriParam(hr, "uri")
	if err != nil {
		return nil, err
	}
	depth, err := intParam(hr, "depth", 6, 0, 1000)
	if err != nil {
		return nil, err
	}
	parentHeight, err := intParam(hr, "parentHeight", 80, 0, 1000)
	if err != nil {
		return nil, err
	}
	out := struct {
		Thread     any             `json:"thread"`
		Threadgate *threadgateView `json:"threadgate,omitempty"`
	}{}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		t, err := r.loadThread(uri, depth, parentHeight)
		if err != nil {
			return err
		}
		if t == nil || !r.visible(uri) {
			return notFound("NotFound", "Post not found: %s", uri)
		}
		out.Threadgate = r.gates[t.root]
		ap := r.posts[uri]
		if r.blocked(ap.author) {
			out.Thread = newBlockedPost(uri, ap.author, r.av[ap.author])
			return nil
		}
		tv := &threadViewPost{Type: "app.bsky.feed.defs#threadViewPost", Post: r.postView(uri)}
		tv.Parent = r.parentView(t, 0)
		tv.Replies = r.replyViews(t, uri, depth)
		out.Thread = tv
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parentView renders ancestor i and those above it.
func (r *req) parentView(t *thread, i int) any {
	if i >= len(t.ancestors) {
		return nil
	}
	u := t.ancestors[i]
	if !r.visible(u) {
		return newNotFoundPost(u)
	}
	p := r.posts[u]
	if r.blocked(p.author) {
		return newBlockedPost(u, p.author, r.av[p.author])
	}
	return &threadViewPost{Type: "app.bsky.feed.defs#threadViewPost", Post: r.postView(u), Parent: r.parentView(t, i+1)}
}

// replyViews renders the replies to uri, depth levels down. Replies from blocked accounts
// and replies the threadgate hides are left out.
func (r *req) replyViews(t *thread, uri string, depth int) []any {
	if depth <= 0 {
		return nil
	}
	var out []any
	for _, c := range t.children[uri] {
		if !r.visible(c) || t.hidden[c] || r.blocked(r.posts[c].author) {
			continue
		}
		out = append(out, &threadViewPost{
			Type:    "app.bsky.feed.defs#threadViewPost",
			Post:    r.postView(c),
			Replies: r.replyViews(t, c, depth-1),
		})
	}
	return out
}

// threadItem is app.bsky.unspecced.getPostThreadV2#threadItem.
type threadItem struct {
	URI   string `json:"uri"`
	Depth int    `json:"depth"`
	Value any    `json:"value"`
}

// threadItemPost is app.bsky.unspecced.defs#threadItemPost.
type threadItemPost struct {
	Type               string    `json:"$type"`
	Post               *postView `json:"post"`
	MoreParents        bool      `json:"moreParents"`
	MoreReplies        int       `json:"moreReplies"`
	OpThread           bool      `json:"opThread"`
	HiddenByThreadgate bool      `json:"hiddenByThreadgate"`
	MutedByViewer      bool      `json:"mutedByViewer"`
}

type threadItemStub struct {
	Type   string         `json:"$type"`
	Author *blockedAuthor `json:"author,omitempty"`
}

func (a *AppView) getPostThreadV2(hr *http.Request, viewer string) (any, error) {
	uri, err := uriParam(hr, "anchor")
	if err != nil {
		return nil, err
	}
	above, err := boolParam(hr, "above", true)
	if err != nil {
		return nil, err
	}
	below, err := intParam(hr, "below", 6, 0, 20)
	if err != nil {
		return nil, err
	}
	branching, err := intParam(hr, "branchingFactor", 10, 0, 100)
	if err != nil {
		return nil, err
	}
	sort := hr.URL.Query().Get("sort")
	switch sort {
	case "", "newest", "oldest", "top":
	default:
		return nil, xrpc.InvalidRequest("sort must be newest, oldest or top")
	}
	parentHeight := 0
	if above {
		parentHeight = 80
	}
	out := struct {
		Thread          []threadItem    `json:"thread"`
		Threadgate      *threadgateView `json:"threadgate,omitempty"`
		HasOtherReplies bool            `json:"hasOtherReplies"`
	}{Thread: []threadItem{}}
	err = a.read(hr.Context(), viewer, func(r *req) error {
		t, err := r.loadThread(uri, below, parentHeight)
		if err != nil {
			return err
		}
		if t == nil || !r.visible(uri) {
			return notFound("NotFound", "Post not found: %s", uri)
		}
		out.Threadgate = r.gates[t.root]
		op := uriAuthority(t.root)
		// Ancestors, from the top down.
		opChain := true
		for i := len(t.ancestors) - 1; i >= 0; i-- {
			u := t.ancestors[i]
			item := threadItem{URI: u, Depth: -(i + 1)}
			switch p := r.posts[u]; {
			case !r.visible(u):
				item.Value = &threadItemStub{Type: "app.bsky.unspecced.defs#threadItemNotFound"}
				opChain = false
			case r.blocked(p.author):
				item.Value = &threadItemStub{Type: "app.bsky.unspecced.defs#threadItemBlocked", Author: &blockedAuthor{DID: p.author, Viewer: r.av[p.author]}}
				opChain = false
			default:
				opChain = opChain && p.author == op
				item.Value = &threadItemPost{
					Type:          "app.bsky.unspecced.defs#threadItemPost",
					Post:          r.postView(u),
					MoreParents:   i == len(t.ancestors)-1 && p.replyParent != "",
					OpThread:      opChain,
					MutedByViewer: r.muted(p.author),
				}
			}
			out.Thread = append(out.Thread, item)
		}
		ap := r.posts[uri]
		if r.blocked(ap.author) {
			out.Thread = append(out.Thread, threadItem{URI: uri, Value: &threadItemStub{
				Type: "app.bsky.unspecced.defs#threadItemBlocked", Author: &blockedAuthor{DID: ap.author, Viewer: r.av[ap.author]}}})
			return nil
		}
		anchorOp := (len(t.ancestors) == 0 || opChain) && ap.author == op
		out.Thread = append(out.Thread, threadItem{URI: uri, Value: &threadItemPost{
			Type:          "app.bsky.unspecced.defs#threadItemPost",
			Post:          r.postView(uri),
			MoreParents:   len(t.ancestors) == 0 && ap.replyParent != "" && !above,
			OpThread:      anchorOp,
			MutedByViewer: r.muted(ap.author),
		}})
		out.Thread = r.flatReplies(out.Thread, t, uri, 1, below, branching, sort, anchorOp, op)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// flatReplies appends the replies to uri depth-first, branching at most per level.
func (r *req) flatReplies(out []threadItem, t *thread, uri string, depth, below, branching int, sort string, opThread bool, op string) []threadItem {
	if depth > below {
		return out
	}
	kids := slices.Clone(t.children[uri])
	kids = slices.DeleteFunc(kids, func(c string) bool { return !r.visible(c) || r.blocked(r.posts[c].author) })
	switch sort {
	case "", "newest":
		slices.Reverse(kids)
	case "top":
		slices.SortStableFunc(kids, func(x, y string) int { return int(r.posts[y].likes - r.posts[x].likes) })
	}
	// The OP's own continuation comes first, as the app draws it as one thread.
	slices.SortStableFunc(kids, func(x, y string) int {
		xo, yo := r.posts[x].author == op, r.posts[y].author == op
		switch {
		case xo && !yo:
			return -1
		case yo && !xo:
			return 1
		}
		return 0
	})
	for i, c := range kids {
		p := r.posts[c]
		if branching > 0 && i >= branching {
			break
		}
		childOp := opThread && p.author == op
		more := 0
		if depth == below {
			more = len(t.children[c])
		}
		out = append(out, threadItem{URI: c, Depth: depth, Value: &threadItemPost{
			Type:               "app.bsky.unspecced.defs#threadItemPost",
			Post:               r.postView(c),
			MoreReplies:        more,
			OpThread:           childOp,
			HiddenByThreadgate: t.hidden[c],
			MutedByViewer:      r.muted(p.author),
		}})
		out = r.flatReplies(out, t, c, depth+1, below, branching, sort, childOp, op)
	}
	return out
}
