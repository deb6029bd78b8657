package web

import (
	"encoding/json"
	"net/url"
	"strconv"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// The *JSON types decode the parts of the AppView's app.bsky views the pages use; the
// other types are what the templates render.

type profileJSON struct {
	DID            string `json:"did"`
	Handle         string `json:"handle"`
	DisplayName    string `json:"displayName"`
	Description    string `json:"description"`
	Avatar         string `json:"avatar"`
	Banner         string `json:"banner"`
	FollowersCount int64  `json:"followersCount"`
	FollowsCount   int64  `json:"followsCount"`
	PostsCount     int64  `json:"postsCount"`
	Viewer         *struct {
		Following  string `json:"following"`
		FollowedBy string `json:"followedBy"`
		Blocking   string `json:"blocking"`
		BlockedBy  bool   `json:"blockedBy"`
		Muted      bool   `json:"muted"`
	} `json:"viewer"`
}

type postJSON struct {
	URI         string          `json:"uri"`
	CID         string          `json:"cid"`
	Author      *profileJSON    `json:"author"`
	Record      json.RawMessage `json:"record"`
	Embed       json.RawMessage `json:"embed"`
	ReplyCount  int64           `json:"replyCount"`
	RepostCount int64           `json:"repostCount"`
	LikeCount   int64           `json:"likeCount"`
	IndexedAt   string          `json:"indexedAt"`
	Viewer      *struct {
		Like          string `json:"like"`
		Repost        string `json:"repost"`
		ReplyDisabled bool   `json:"replyDisabled"`
	} `json:"viewer"`
}

type strongRefJSON struct {
	URI string `json:"uri"`
	CID string `json:"cid"`
}

type postRecordJSON struct {
	Text      string      `json:"text"`
	CreatedAt string      `json:"createdAt"`
	Facets    []facetJSON `json:"facets"`
	Reply     *struct {
		Root   strongRefJSON `json:"root"`
		Parent strongRefJSON `json:"parent"`
	} `json:"reply"`
}

type embedJSON struct {
	Type   string `json:"$type"`
	Images []struct {
		Thumb       string `json:"thumb"`
		Fullsize    string `json:"fullsize"`
		Alt         string `json:"alt"`
		AspectRatio *struct {
			Width  int64 `json:"width"`
			Height int64 `json:"height"`
		} `json:"aspectRatio"`
	} `json:"images"`
	External *struct {
		URI         string `json:"uri"`
		Title       string `json:"title"`
		Description string `json:"description"`
	} `json:"external"`
	Media *embedJSON `json:"media"`
	// Record is the quoted post: a #viewRecord in app.bsky.embed.record#view, and an
	// app.bsky.embed.record#view around one in recordWithMedia#view.
	Record json.RawMessage `json:"record"`
}

// viewRecordJSON is app.bsky.embed.record#viewRecord, a quoted post.
type viewRecordJSON struct {
	Type   string          `json:"$type"`
	URI    string          `json:"uri"`
	Author *profileJSON    `json:"author"`
	Value  json.RawMessage `json:"value"`
	Record json.RawMessage `json:"record"`
}

type feedItemJSON struct {
	Post  *postJSON `json:"post"`
	Reply *struct {
		Parent *postJSON `json:"parent"`
	} `json:"reply"`
	Reason *struct {
		Type string       `json:"$type"`
		By   *profileJSON `json:"by"`
	} `json:"reason"`
}

type feedJSON struct {
	Cursor string          `json:"cursor"`
	Feed   []*feedItemJSON `json:"feed"`
}

type threadJSON struct {
	Type     string        `json:"$type"`
	Post     *postJSON     `json:"post"`
	Parent   *threadJSON   `json:"parent"`
	Replies  []*threadJSON `json:"replies"`
	NotFound bool          `json:"notFound"`
	Blocked  bool          `json:"blocked"`
}

type notificationJSON struct {
	URI       string          `json:"uri"`
	Author    *profileJSON    `json:"author"`
	Reason    string          `json:"reason"`
	Subject   string          `json:"reasonSubject"`
	Record    json.RawMessage `json:"record"`
	IsRead    bool            `json:"isRead"`
	IndexedAt string          `json:"indexedAt"`
}

// Actor is an account as a post or notification shows it.
type Actor struct {
	DID    string
	Handle string
	Name   string // the display name, or the handle
	Avatar string
	Link   string
}

// Profile is the header of a profile page.
type Profile struct {
	Actor
	Description string
	Banner      string
	Followers   int64
	Follows     int64
	Posts       int64
	// Self is true on the viewer's own profile.
	Self bool
	// FollowingURI is the viewer's follow record of this account, "" when not following.
	FollowingURI string
	FollowsYou   bool
	Muted        bool
	// BlockingURI is the viewer's block record of this account, "" when not blocking.
	BlockingURI string
	BlockedBy   bool
}

// Image is one image of a post.
type Image struct {
	Thumb, Fullsize, Alt string
	Width, Height        int64
}

// External is a link card.
type External struct {
	URI, Title, Description string
}

// Quoted is a quoted post inside another.
type Quoted struct {
	Author   Actor
	Segments []Segment
	Link     string
}

// Post is a post as the pages render it.
type Post struct {
	URI, CID string
	Link     string
	Author   Actor
	Text     string
	// Segments is Text split by its facets, for rendering mentions and links.
	Segments []Segment
	Time     string // short, relative to now
	ISOTime  string
	Replies  int64
	Reposts  int64
	Likes    int64
	// LikeURI is the viewer's like of the post, "" when not liked.
	LikeURI string
	// RepostURI is the viewer's repost of the post, "" when not reposted.
	RepostURI     string
	ReplyDisabled bool
	Images        []Image
	External      *External
	// Quote is the post this one quotes.
	Quote *Quoted
	// RepostedBy is set on a timeline item that is a repost.
	RepostedBy *Actor
	// ReplyTo is the author of the parent of a reply shown in a feed.
	ReplyTo *Actor
	// Root is the thread root a reply to this post goes under.
	Root StrongRef
}

func actorOf(p *profileJSON) Actor {
	if p == nil {
		return Actor{Name: "Unknown account", Handle: "handle.invalid"}
	}
	a := Actor{DID: p.DID, Handle: p.Handle, Name: p.DisplayName, Avatar: p.Avatar, Link: "/profile/" + url.PathEscape(actorRef(p))}
	if a.Name == "" {
		a.Name = p.Handle
	}
	return a
}

// actorRef is how links name an account: its handle, or its DID when the handle is not
// valid.
func actorRef(p *profileJSON) string {
	if p.Handle == "" || p.Handle == "handle.invalid" {
		return p.DID
	}
	return p.Handle
}

func profileOf(p *profileJSON, viewer string) *Profile {
	pr := &Profile{Actor: actorOf(p), Description: p.Description, Banner: p.Banner,
		Followers: p.FollowersCount, Follows: p.FollowsCount, Posts: p.PostsCount, Self: p.DID == viewer}
	if p.Viewer != nil {
		pr.FollowingURI = p.Viewer.Following
		pr.FollowsYou = p.Viewer.FollowedBy != ""
		pr.Muted = p.Viewer.Muted
		pr.BlockingURI = p.Viewer.Blocking
		pr.BlockedBy = p.Viewer.BlockedBy
	}
	return pr
}

func (s *Server) postOf(p *postJSON) *Post {
	if p == nil {
		return nil
	}
	var rec postRecordJSON
	json.Unmarshal(p.Record, &rec) // a malformed record shows as an empty post
	post := &Post{URI: p.URI, CID: p.CID, Author: actorOf(p.Author), Text: rec.Text, Segments: segments(rec.Text, rec.Facets),
		Replies: p.ReplyCount, Reposts: p.RepostCount, Likes: p.LikeCount,
		Root: StrongRef{URI: p.URI, CID: p.CID}}
	if rec.Reply != nil && rec.Reply.Root.URI != "" {
		post.Root = StrongRef{URI: rec.Reply.Root.URI, CID: rec.Reply.Root.CID}
	}
	if u, err := syntax.ParseATURI(p.URI); err == nil && p.Author != nil {
		post.Link = post.Author.Link + "/post/" + url.PathEscape(u.RecordKey().String())
	}
	if t, err := syntax.ParseDatetimeLenient(p.IndexedAt); err == nil {
		post.Time = s.relTime(t.Time())
		post.ISOTime = t.Time().UTC().Format(time.RFC3339)
	}
	if p.Viewer != nil {
		post.LikeURI = p.Viewer.Like
		post.RepostURI = p.Viewer.Repost
		post.ReplyDisabled = p.Viewer.ReplyDisabled
	}
	var e embedJSON
	if len(p.Embed) > 0 && json.Unmarshal(p.Embed, &e) == nil {
		media := &e
		if e.Media != nil {
			media = e.Media
		}
		for _, im := range media.Images {
			img := Image{Thumb: im.Thumb, Fullsize: im.Fullsize, Alt: im.Alt}
			if im.AspectRatio != nil {
				img.Width, img.Height = im.AspectRatio.Width, im.AspectRatio.Height
			}
			post.Images = append(post.Images, img)
		}
		if x := media.External; x != nil {
			post.External = &External{URI: x.URI, Title: x.Title, Description: x.Description}
		}
		post.Quote = quotedOf(e.Record)
	}
	return post
}

func (s *Server) feedOf(items []*feedItemJSON) []*Post {
	out := make([]*Post, 0, len(items))
	for _, it := range items {
		p := s.postOf(it.Post)
		if p == nil {
			continue
		}
		if it.Reason != nil && it.Reason.By != nil {
			a := actorOf(it.Reason.By)
			p.RepostedBy = &a
		}
		if it.Reply != nil && it.Reply.Parent != nil && it.Reply.Parent.Author != nil {
			a := actorOf(it.Reply.Parent.Author)
			p.ReplyTo = &a
		}
		out = append(out, p)
	}
	return out
}

// relTime renders t as bsky.app does: "now", "5m", "3h", "2d", then a date.
func (s *Server) relTime(t time.Time) string {
	d := s.now().Sub(t)
	switch {
	case d < time.Minute:
		return "now"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 24*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d < 7*24*time.Hour:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	case t.Year() == s.now().Year():
		return t.Format("Jan 2")
	}
	return t.Format("Jan 2, 2006")
}

// quotedOf returns the quoted post of an embed's record view, nil when there is none or
// it is not a visible post (not found, blocked, a feed generator...).
func quotedOf(raw json.RawMessage) *Quoted {
	if len(raw) == 0 {
		return nil
	}
	var v viewRecordJSON
	if json.Unmarshal(raw, &v) != nil {
		return nil
	}
	if v.Type == "app.bsky.embed.record#view" {
		return quotedOf(v.Record)
	}
	if v.Type != "app.bsky.embed.record#viewRecord" || v.Author == nil {
		return nil
	}
	var rec postRecordJSON
	json.Unmarshal(v.Value, &rec) // a malformed record shows as an empty quote
	q := &Quoted{Author: actorOf(v.Author), Segments: segments(rec.Text, rec.Facets)}
	q.Link = postLink(q.Author.Link, v.URI)
	return q
}
