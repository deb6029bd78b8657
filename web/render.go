package web

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"
)

// pageNames are the templates/<name>.html files; each defines "main" and is rendered
// inside layout.html.
var pageNames = []string{"signin", "signup", "home", "profile", "thread", "notifications", "error",
	"compose", "search", "settings", "editprofile"}

type pageTemplate struct{ t *template.Template }

// page is the data of every template: the frame (viewer, CSRF token, asset URLs) and the
// fields of the page being rendered.
type page struct {
	Title   string
	Viewer  *session
	CSRF    string
	Unread  int64
	CSS, JS string
	// Here is the page's own path and query, where forms return after a POST.
	Here    string
	Error   string
	Message string
	// Notice is a confirmation shown at the top of a page ("Profile saved").
	Notice string

	Identifier string // sign-in and sign-up forms
	// Reactivate turns the sign-in form into the one that reactivates a deactivated account.
	Reactivate bool

	// The sign-up form.
	Email          string
	InviteCode     string
	Domains        []string
	InviteRequired bool

	Feed     []*Post
	MoreLink string // the next page of Feed, "" at the end

	Profile *Profile
	// Tabs are the profile page's feed tabs.
	Tabs []tab

	// The compose form: its text after a refused post, and the post replied to or quoted.
	Draft       string
	ReplyParent *Post
	QuotePost   *Post

	// The search page.
	Query  string
	Actors []*Profile

	// The settings pages.
	AppPasswords []AppPassword
	NewPassword  *newAppPassword
	DisplayName  string
	Description  string

	Ancestors []*Post
	Anchor    *Post
	Replies   []*threadReply

	Notifications []*notificationItem
}

// tab is a link to one of a profile's feeds.
type tab struct {
	Name    string
	Link    string
	Current bool
}

// newAppPassword is an app password just created, shown once.
type newAppPassword struct{ Name, Password string }

// threadReply is a reply in a thread with the replies below it.
type threadReply struct {
	*Post
	Replies []*threadReply
}

// notificationItem is one line of the notifications page.
type notificationItem struct {
	Author Actor
	// Action is what the author did: "liked your post", "followed you", ...
	Action string
	Text   string
	Link   string
	Time   string
	Unread bool
}

// postItem is the data of the "post" template: a post and the page it is on.
type postItem struct {
	Page *page
	Post *Post
}

// replyItem is the data of the "reply" template.
type replyItem struct {
	Page  *page
	Reply *threadReply
}

var funcs = template.FuncMap{
	// maxImageBytes tells the page's script when to shrink an image before sending it.
	"maxImageBytes": func() int { return maxImageBytes },
	"quoteOf":       func(p *Post) *Quoted { return &Quoted{Author: p.Author, Segments: p.Segments, Link: p.Link} },
	// slots numbers the compose form's image description fields from 1.
	"slots": func(n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = i + 1
		}
		return out
	},
	"item":  func(p *page, post *Post) postItem { return postItem{Page: p, Post: post} },
	"reply": func(p *page, r *threadReply) replyItem { return replyItem{Page: p, Reply: r} },
	"count": func(n int64) string {
		switch {
		case n >= 1_000_000:
			return fmt.Sprintf("%.1fM", float64(n)/1e6)
		case n >= 10_000:
			return fmt.Sprintf("%dK", n/1000)
		case n >= 1000:
			return fmt.Sprintf("%.1fK", float64(n)/1e3)
		}
		return fmt.Sprint(n)
	},
	"plural": func(n int64, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	},
}

func parsePages() (map[string]*pageTemplate, error) {
	out := map[string]*pageTemplate{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFiles,
			"templates/layout.html", "templates/post.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		out[name] = &pageTemplate{t: t}
	}
	return out, nil
}

// render writes the page name with status, filling in the frame from r.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	st := stateFrom(r.Context())
	p.Viewer = st.sess
	p.CSRF = s.csrfToken(st)
	p.CSS = "/static/style.css?v=" + s.assetVersion
	p.JS = "/static/app.js?v=" + s.assetVersion
	if p.Here == "" {
		p.Here = r.URL.RequestURI()
	}
	if st.sess != nil && name != "notifications" {
		var out struct {
			Count int64 `json:"count"`
		}
		if err := s.query(r.Context(), st.sess.DID, "app.bsky.notification.getUnreadCount", nil, &out); err != nil {
			s.log.WarnContext(r.Context(), "count unread notifications", "did", st.sess.DID, "err", err)
		}
		p.Unread = out.Count
	}
	var buf bytes.Buffer
	if err := s.pages[name].t.ExecuteTemplate(&buf, "layout", p); err != nil {
		s.log.ErrorContext(r.Context(), "render page", "page", name, "err", err)
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// renderError renders the error page.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	s.render(w, r, status, "error", &page{Title: title, Message: msg})
}

// safeNext returns v when it is a path on this site, else "/": a form's return address
// must not send the browser elsewhere.
func safeNext(v string) string {
	if !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//") || strings.HasPrefix(v, "/\\") ||
		strings.ContainsAny(v, "\r\n") {
		return "/"
	}
	return v
}
