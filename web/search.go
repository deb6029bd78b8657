package web

import (
	"net/http"
	"net/url"
	"strings"
)

// maxQueryBytes bounds a search query; longer ones are cut rather than refused.
const maxQueryBytes = 500

// handleSearch shows the accounts and posts matching ?q= (app.bsky.actor.searchActors
// and app.bsky.feed.searchPosts); without q it is only the search form.
func (s *Server) handleSearch(w http.ResponseWriter, r *http.Request) {
	viewer := viewerDID(r)
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if len(q) > maxQueryBytes {
		q = strings.ToValidUTF8(q[:maxQueryBytes], "")
	}
	p := &page{Title: "Search", Query: q}
	if q == "" {
		s.render(w, r, http.StatusOK, "search", p)
		return
	}
	p.Title = q + " — Search"
	var actors struct {
		Actors []*profileJSON `json:"actors"`
	}
	if err := s.query(r.Context(), viewer, "app.bsky.actor.searchActors", url.Values{"q": {q}, "limit": {"8"}}, &actors); err != nil {
		s.readFailed(w, r, err)
		return
	}
	for _, a := range actors.Actors {
		p.Actors = append(p.Actors, profileOf(a, viewer))
	}
	params := url.Values{"q": {q}, "limit": {"25"}}
	if c := r.URL.Query().Get("cursor"); c != "" {
		params.Set("cursor", c)
	}
	var posts struct {
		Cursor string      `json:"cursor"`
		Posts  []*postJSON `json:"posts"`
	}
	if err := s.query(r.Context(), viewer, "app.bsky.feed.searchPosts", params, &posts); err != nil {
		s.readFailed(w, r, err)
		return
	}
	for _, pj := range posts.Posts {
		if post := s.postOf(pj); post != nil {
			p.Feed = append(p.Feed, post)
		}
	}
	if posts.Cursor != "" && len(posts.Posts) > 0 {
		p.MoreLink = "/search?" + url.Values{"q": {q}, "cursor": {posts.Cursor}}.Encode()
	}
	s.render(w, r, http.StatusOK, "search", p)
}
