package appview

import "encoding/json"

// The view types below are the JSON shapes of the app.bsky lexicons (atproto-reference
// §11.2). Optional fields are omitempty; counts are pointers so that a zero is written
// where the lexicon has the field. Union members carry $type.

// label is com.atproto.label.defs#label.
type label struct {
	Src string `json:"src"`
	URI string `json:"uri"`
	CID string `json:"cid,omitempty"`
	Val string `json:"val"`
	Cts string `json:"cts"`
}

// actorViewer is app.bsky.actor.defs#viewerState.
type actorViewer struct {
	Muted      bool   `json:"muted,omitempty"`
	BlockedBy  bool   `json:"blockedBy,omitempty"`
	Blocking   string `json:"blocking,omitempty"`
	Following  string `json:"following,omitempty"`
	FollowedBy string `json:"followedBy,omitempty"`
	// blockingByList is set when a subscribed modlist blocks the actor.
	BlockingByList *listViewBasic `json:"blockingByList,omitempty"`
}

// profileView covers profileViewBasic, profileView and profileViewDetailed: the
// constructors fill only the fields of the level asked for.
type profileView struct {
	DID            string       `json:"did"`
	Handle         string       `json:"handle"`
	DisplayName    string       `json:"displayName,omitempty"`
	Pronouns       string       `json:"pronouns,omitempty"`
	Description    string       `json:"description,omitempty"`
	Website        string       `json:"website,omitempty"`
	Avatar         string       `json:"avatar,omitempty"`
	Banner         string       `json:"banner,omitempty"`
	FollowersCount *int64       `json:"followersCount,omitempty"`
	FollowsCount   *int64       `json:"followsCount,omitempty"`
	PostsCount     *int64       `json:"postsCount,omitempty"`
	Associated     *associated  `json:"associated,omitempty"`
	PinnedPost     *strongRef   `json:"pinnedPost,omitempty"`
	IndexedAt      string       `json:"indexedAt,omitempty"`
	CreatedAt      string       `json:"createdAt,omitempty"`
	Viewer         *actorViewer `json:"viewer,omitempty"`
	Labels         []label      `json:"labels,omitempty"`
}

// associated is app.bsky.actor.defs#profileAssociated.
type associated struct {
	Lists    int64 `json:"lists"`
	Feedgens int64 `json:"feedgens"`
}

// strongRef is com.atproto.repo.strongRef.
type strongRef struct {
	URI string `json:"uri"`
	CID string `json:"cid"`
}

// postViewer is app.bsky.feed.defs#viewerState.
type postViewer struct {
	Like          string `json:"like,omitempty"`
	Repost        string `json:"repost,omitempty"`
	ThreadMuted   bool   `json:"threadMuted"`
	ReplyDisabled bool   `json:"replyDisabled,omitempty"`
	// EmbeddingDisabled: the post's postgate forbids the viewer to quote it.
	EmbeddingDisabled bool `json:"embeddingDisabled,omitempty"`
	Pinned            bool `json:"pinned,omitempty"`
}

// postView is app.bsky.feed.defs#postView.
type postView struct {
	Type        string          `json:"$type"`
	URI         string          `json:"uri"`
	CID         string          `json:"cid"`
	Author      *profileView    `json:"author"`
	Record      json.RawMessage `json:"record"`
	Embed       any             `json:"embed,omitempty"`
	ReplyCount  *int64          `json:"replyCount,omitempty"`
	RepostCount *int64          `json:"repostCount,omitempty"`
	LikeCount   *int64          `json:"likeCount,omitempty"`
	QuoteCount  *int64          `json:"quoteCount,omitempty"`
	IndexedAt   string          `json:"indexedAt"`
	Viewer      *postViewer     `json:"viewer,omitempty"`
	Labels      []label         `json:"labels,omitempty"`
	Threadgate  *threadgateView `json:"threadgate,omitempty"`
}

// threadgateView is app.bsky.feed.defs#threadgateView.
type threadgateView struct {
	URI    string          `json:"uri"`
	CID    string          `json:"cid"`
	Record json.RawMessage `json:"record"`
}

// notFoundPost is app.bsky.feed.defs#notFoundPost.
type notFoundPost struct {
	Type     string `json:"$type"`
	URI      string `json:"uri"`
	NotFound bool   `json:"notFound"`
}

func newNotFoundPost(uri string) *notFoundPost {
	return &notFoundPost{Type: "app.bsky.feed.defs#notFoundPost", URI: uri, NotFound: true}
}

// blockedAuthor is app.bsky.feed.defs#blockedAuthor.
type blockedAuthor struct {
	DID    string       `json:"did"`
	Viewer *actorViewer `json:"viewer,omitempty"`
}

// blockedPost is app.bsky.feed.defs#blockedPost.
type blockedPost struct {
	Type    string         `json:"$type"`
	URI     string         `json:"uri"`
	Blocked bool           `json:"blocked"`
	Author  *blockedAuthor `json:"author"`
}

func newBlockedPost(uri, did string, v *actorViewer) *blockedPost {
	return &blockedPost{Type: "app.bsky.feed.defs#blockedPost", URI: uri, Blocked: true, Author: &blockedAuthor{DID: did, Viewer: v}}
}

// feedViewPost is app.bsky.feed.defs#feedViewPost.
type feedViewPost struct {
	Post   *postView `json:"post"`
	Reply  *replyRef `json:"reply,omitempty"`
	Reason any       `json:"reason,omitempty"`
	// FeedContext and ReqID are passed through from a feed generator's skeleton.
	FeedContext string `json:"feedContext,omitempty"`
	ReqID       string `json:"reqId,omitempty"`
}

// replyRef is app.bsky.feed.defs#replyRef: root and parent are postView, notFoundPost or
// blockedPost.
type replyRef struct {
	Root              any          `json:"root"`
	Parent            any          `json:"parent"`
	GrandparentAuthor *profileView `json:"grandparentAuthor,omitempty"`
}

// reasonRepost is app.bsky.feed.defs#reasonRepost.
type reasonRepost struct {
	Type      string       `json:"$type"`
	By        *profileView `json:"by"`
	URI       string       `json:"uri,omitempty"`
	CID       string       `json:"cid,omitempty"`
	IndexedAt string       `json:"indexedAt"`
}

// reasonPin is app.bsky.feed.defs#reasonPin.
type reasonPin struct {
	Type string `json:"$type"`
}

// threadViewPost is app.bsky.feed.defs#threadViewPost.
type threadViewPost struct {
	Type    string    `json:"$type"`
	Post    *postView `json:"post"`
	Parent  any       `json:"parent,omitempty"`
	Replies []any     `json:"replies,omitempty"`
}

// listViewBasic is app.bsky.graph.defs#listViewBasic.
type listViewBasic struct {
	URI           string  `json:"uri"`
	CID           string  `json:"cid"`
	Name          string  `json:"name"`
	Purpose       string  `json:"purpose"`
	Avatar        string  `json:"avatar,omitempty"`
	ListItemCount *int64  `json:"listItemCount,omitempty"`
	Labels        []label `json:"labels,omitempty"`
	IndexedAt     string  `json:"indexedAt,omitempty"`
}

// listView is app.bsky.graph.defs#listView.
type listView struct {
	URI           string       `json:"uri"`
	CID           string       `json:"cid"`
	Creator       *profileView `json:"creator"`
	Name          string       `json:"name"`
	Purpose       string       `json:"purpose"`
	Description   string       `json:"description,omitempty"`
	Avatar        string       `json:"avatar,omitempty"`
	ListItemCount *int64       `json:"listItemCount,omitempty"`
	Labels        []label      `json:"labels,omitempty"`
	IndexedAt     string       `json:"indexedAt"`
}

// Embed views (app.bsky.embed.*#view).

type aspectRatio struct {
	Width  int64 `json:"width"`
	Height int64 `json:"height"`
}

type imagesView struct {
	Type   string      `json:"$type"`
	Images []imageView `json:"images"`
}

type imageView struct {
	Thumb       string       `json:"thumb"`
	Fullsize    string       `json:"fullsize"`
	Alt         string       `json:"alt"`
	AspectRatio *aspectRatio `json:"aspectRatio,omitempty"`
}

type externalView struct {
	Type     string           `json:"$type"`
	External externalViewItem `json:"external"`
}

type externalViewItem struct {
	URI         string `json:"uri"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Thumb       string `json:"thumb,omitempty"`
}

type videoView struct {
	Type        string       `json:"$type"`
	CID         string       `json:"cid"`
	Playlist    string       `json:"playlist"`
	Thumbnail   string       `json:"thumbnail,omitempty"`
	Alt         string       `json:"alt,omitempty"`
	AspectRatio *aspectRatio `json:"aspectRatio,omitempty"`
}

type recordView struct {
	Type   string `json:"$type"`
	Record any    `json:"record"`
}

type recordWithMediaView struct {
	Type   string      `json:"$type"`
	Record *recordView `json:"record"`
	Media  any         `json:"media"`
}

// viewRecord is app.bsky.embed.record#viewRecord.
type viewRecord struct {
	Type        string          `json:"$type"`
	URI         string          `json:"uri"`
	CID         string          `json:"cid"`
	Author      *profileView    `json:"author"`
	Value       json.RawMessage `json:"value"`
	Labels      []label         `json:"labels,omitempty"`
	ReplyCount  *int64          `json:"replyCount,omitempty"`
	RepostCount *int64          `json:"repostCount,omitempty"`
	LikeCount   *int64          `json:"likeCount,omitempty"`
	QuoteCount  *int64          `json:"quoteCount,omitempty"`
	Embeds      []any           `json:"embeds,omitempty"`
	IndexedAt   string          `json:"indexedAt"`
}

type viewNotFound struct {
	Type     string `json:"$type"`
	URI      string `json:"uri"`
	NotFound bool   `json:"notFound"`
}

type viewBlocked struct {
	Type    string         `json:"$type"`
	URI     string         `json:"uri"`
	Blocked bool           `json:"blocked"`
	Author  *blockedAuthor `json:"author"`
}

// viewDetached is app.bsky.embed.record#viewDetached: the quoted post's author detached
// this quote with a postgate.
type viewDetached struct {
	Type     string `json:"$type"`
	URI      string `json:"uri"`
	Detached bool   `json:"detached"`
}
