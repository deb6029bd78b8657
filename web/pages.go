package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/rivo/uniseg"
)

// Limits of a post's text (app.bsky.feed.post).
const (
	maxPostGraphemes = 300
	maxPostBytes     = 3000
)

// feedPageSize is how many posts a timeline or profile page shows.
const feedPageSize = 30

// handleHome is the timeline when signed in, else the sign-in page.
func (s *Server) handleHome(w http.ResponseWriter, r *http.Request) {
	sess := stateFrom(r.Context()).sess
	if sess == nil {
		s.render(w, r, http.StatusOK, "signin", &page{Title: "Sign in"})
		return
	}
	params := url.Values{"limit": {"30"}}
	if c := r.URL.Query().Get("cursor"); c != "" {
		params.Set("cursor", c)
	}
	var out feedJSON
	if err := s.query(r.Context(), sess.DID, "app.bsky.feed.getTimeline", params, &out); err != nil {
		s.readFailed(w, r, err)
		return
	}
	p := &page{Title: "Home", Feed: s.feedOf(out.Feed)}
	if out.Cursor != "" && len(out.Feed) > 0 {
		p.MoreLink = "/?cursor=" + url.QueryEscape(out.Cursor)
	}
	s.render(w, r, http.StatusOK, "home", p)
}

func (s *Server) handleSignInForm(w http.ResponseWriter, r *http.Request) {
	if stateFrom(r.Context()).sess != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "signin", &page{Title: "Sign in"})
}

func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request) {
	s.signInForm(w, r, false)
}

// handleReactivate reactivates a deactivated account from the sign-in page, asking for
// the password again rather than carrying it in the page.
func (s *Server) handleReactivate(w http.ResponseWriter, r *http.Request) {
	s.signInForm(w, r, true)
}

// signInForm checks the sign-in form's credentials and signs the browser in, after
// reactivating the account when reactivate is set.
func (s *Server) signInForm(w http.ResponseWriter, r *http.Request, reactivate bool) {
	st := stateFrom(r.Context())
	id := strings.TrimPrefix(strings.TrimSpace(r.PostForm.Get("identifier")), "@")
	password := r.PostForm.Get("password")
	title, check := "Sign in", s.backend.Login
	if reactivate {
		title, check = "Reactivate your account", s.backend.Reactivate
	}
	fail := func(status int, msg string) {
		s.render(w, r, status, "signin", &page{Title: title, Identifier: id, Reactivate: reactivate, Error: msg})
	}
	if id == "" || password == "" {
		fail(http.StatusBadRequest, "Enter your handle or email and your password.")
		return
	}
	did, handle, err := check(r.Context(), id, password)
	var fe *FormError
	switch {
	case errors.Is(err, ErrDeactivated):
		s.render(w, r, http.StatusForbidden, "signin", &page{Title: "Reactivate your account", Identifier: id, Reactivate: true})
		return
	case errors.Is(err, ErrBadCredentials):
		fail(http.StatusUnauthorized, "Wrong handle or password.")
		return
	case errors.Is(err, ErrRateLimited):
		fail(http.StatusTooManyRequests, "Too many sign-in attempts. Wait a few minutes and try again.")
		return
	case errors.As(err, &fe):
		fail(http.StatusBadRequest, fe.Message)
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), strings.ToLower(title), "err", err)
		fail(http.StatusInternalServerError, "That is not possible right now. Try again later.")
		return
	}
	s.signIn(w, st, did, handle)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) signUpPage(id, email, invite, msg string) *page {
	domains, invite2 := s.backend.SignUpOptions()
	return &page{Title: "Create account", Identifier: id, Email: email, InviteCode: invite, Error: msg,
		Domains: domains, InviteRequired: invite2}
}

func (s *Server) handleSignUpForm(w http.ResponseWriter, r *http.Request) {
	if stateFrom(r.Context()).sess != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "signup", s.signUpPage("", "", "", ""))
}

func (s *Server) handleSignUp(w http.ResponseWriter, r *http.Request) {
	st := stateFrom(r.Context())
	handle := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(r.PostForm.Get("handle")), "@"))
	email := strings.TrimSpace(r.PostForm.Get("email"))
	password := r.PostForm.Get("password")
	invite := strings.TrimSpace(r.PostForm.Get("invite"))
	domains, _ := s.backend.SignUpOptions()
	// A bare name gets the first offered domain, as people type "alice", not "alice.example.com".
	if !strings.Contains(handle, ".") && len(domains) > 0 {
		handle += domains[0]
	}
	did, canonical, err := s.backend.SignUp(r.Context(), handle, email, password, invite)
	var fe *FormError
	switch {
	case errors.As(err, &fe):
		s.render(w, r, http.StatusBadRequest, "signup", s.signUpPage(handle, email, invite, fe.Message))
		return
	case errors.Is(err, ErrRateLimited):
		s.render(w, r, http.StatusTooManyRequests, "signup", s.signUpPage(handle, email, invite, "Too many attempts. Wait a few minutes and try again."))
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), "sign up", "err", err)
		s.render(w, r, http.StatusInternalServerError, "signup", s.signUpPage(handle, email, invite, "Creating an account is not possible right now. Try again later."))
		return
	}
	s.signIn(w, st, did, canonical)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) handleSignOut(w http.ResponseWriter, r *http.Request) {
	s.signOut(w, stateFrom(r.Context()))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// signedIn returns the session, or redirects to the sign-in page and returns nil.
func (s *Server) signedIn(w http.ResponseWriter, r *http.Request) *session {
	sess := stateFrom(r.Context()).sess
	if sess == nil {
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
	}
	return sess
}

func validRef(ref StrongRef) bool {
	if _, err := syntax.ParseATURI(ref.URI); err != nil {
		return false
	}
	_, err := syntax.ParseCID(ref.CID)
	return err == nil
}

func (s *Server) handleLike(w http.ResponseWriter, r *http.Request) {
	s.createAbout(w, r, "app.bsky.feed.like", "like")
}

func (s *Server) handleRepost(w http.ResponseWriter, r *http.Request) {
	s.createAbout(w, r, "app.bsky.feed.repost", "repost")
}

// createAbout writes a like or repost (collection) of the post the form names.
func (s *Server) createAbout(w http.ResponseWriter, r *http.Request, collection, what string) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	ref := StrongRef{URI: r.PostForm.Get("uri"), CID: r.PostForm.Get("cid")}
	if !validRef(ref) {
		s.renderError(w, r, http.StatusBadRequest, "Bad request", "The post to "+what+" is not valid.")
		return
	}
	rec := map[string]any{"$type": collection, "subject": map[string]any{"uri": ref.URI, "cid": ref.CID}, "createdAt": s.timestamp()}
	if _, err := s.backend.CreateRecord(r.Context(), sess.DID, collection, rec); err != nil {
		s.writeFailed(w, r, sess, what, err)
		return
	}
	s.back(w, r)
}

func (s *Server) handleFollow(w http.ResponseWriter, r *http.Request) {
	s.createAboutAccount(w, r, "app.bsky.graph.follow", "follow")
}

func (s *Server) handleBlock(w http.ResponseWriter, r *http.Request) {
	s.createAboutAccount(w, r, "app.bsky.graph.block", "block")
}

// accountForm returns the signed-in session and the other account a form names (field
// subject), or answers the request itself and returns a nil session.
func (s *Server) accountForm(w http.ResponseWriter, r *http.Request, what string) (*session, syntax.DID) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return nil, ""
	}
	subject, err := syntax.ParseDID(r.PostForm.Get("subject"))
	if err != nil || subject.String() == sess.DID {
		s.renderError(w, r, http.StatusBadRequest, "Bad request", "The account to "+what+" is not valid.")
		return nil, ""
	}
	return sess, subject
}

// createAboutAccount writes a follow or block (collection) of the account the form names.
func (s *Server) createAboutAccount(w http.ResponseWriter, r *http.Request, collection, what string) {
	sess, subject := s.accountForm(w, r, what)
	if sess == nil {
		return
	}
	rec := map[string]any{"$type": collection, "subject": subject.String(), "createdAt": s.timestamp()}
	if _, err := s.backend.CreateRecord(r.Context(), sess.DID, collection, rec); err != nil {
		s.writeFailed(w, r, sess, what, err)
		return
	}
	s.back(w, r)
}

func (s *Server) handleMute(w http.ResponseWriter, r *http.Request) {
	s.mute(w, r, "app.bsky.graph.muteActor", "mute")
}

func (s *Server) handleUnmute(w http.ResponseWriter, r *http.Request) {
	s.mute(w, r, "app.bsky.graph.unmuteActor", "unmute")
}

// mute calls the AppView's mute procedure nsid: mutes are private state kept in the
// index, not records.
func (s *Server) mute(w http.ResponseWriter, r *http.Request, nsid, what string) {
	sess, subject := s.accountForm(w, r, what)
	if sess == nil {
		return
	}
	if err := s.call(r.Context(), sess.DID, http.MethodPost, nsid, nil, map[string]string{"actor": subject.String()}, nil); err != nil {
		s.writeFailed(w, r, sess, what, err)
		return
	}
	s.back(w, r)
}

// back redirects to the form's return address, where the change shows.
func (s *Server) back(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

// timestamp is a record's createdAt for now.
func (s *Server) timestamp() string {
	return s.now().UTC().Format(syntax.AtprotoDatetimeLayout)
}

func (s *Server) handleUnlike(w http.ResponseWriter, r *http.Request) {
	s.deleteOwn(w, r, "app.bsky.feed.like", "unlike")
}

func (s *Server) handleUnfollow(w http.ResponseWriter, r *http.Request) {
	s.deleteOwn(w, r, "app.bsky.graph.follow", "unfollow")
}

func (s *Server) handleUnrepost(w http.ResponseWriter, r *http.Request) {
	s.deleteOwn(w, r, "app.bsky.feed.repost", "unrepost")
}

func (s *Server) handleUnblock(w http.ResponseWriter, r *http.Request) {
	s.deleteOwn(w, r, "app.bsky.graph.block", "unblock")
}

// handleDeletePost deletes one of the signed-in account's posts. A form on the post's own
// page returns to the author's profile, since the page it came from is gone.
func (s *Server) handleDeletePost(w http.ResponseWriter, r *http.Request) {
	if u, err := syntax.ParseATURI(r.PostForm.Get("uri")); err == nil {
		own := "/post/" + url.PathEscape(u.RecordKey().String())
		if next := safeNext(r.PostForm.Get("next")); strings.HasSuffix(strings.SplitN(next, "?", 2)[0], own) {
			r.PostForm.Set("next", strings.TrimSuffix(strings.SplitN(next, "?", 2)[0], own))
		}
	}
	s.deleteOwn(w, r, "app.bsky.feed.post", "delete the post")
}

// deleteOwn deletes the signed-in account's record of collection named by the form's uri.
func (s *Server) deleteOwn(w http.ResponseWriter, r *http.Request, collection, what string) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	u, err := syntax.ParseATURI(r.PostForm.Get("uri"))
	if err != nil || u.Authority().String() != sess.DID || u.Collection().String() != collection || u.RecordKey() == "" {
		s.renderError(w, r, http.StatusBadRequest, "Bad request", "That is not a record of yours.")
		return
	}
	if err := s.backend.DeleteRecord(r.Context(), sess.DID, u.String()); err != nil {
		s.writeFailed(w, r, sess, what, err)
		return
	}
	s.back(w, r)
}

// writeFailed renders the error page for a failed write: the backend's message when it is
// one for the person, else a generic one with the error logged.
func (s *Server) writeFailed(w http.ResponseWriter, r *http.Request, sess *session, what string, err error) {
	var fe *FormError
	if errors.As(err, &fe) {
		s.renderError(w, r, http.StatusBadRequest, "That did not work", fe.Message)
		return
	}
	s.log.ErrorContext(r.Context(), what, "did", sess.DID, "err", err)
	s.renderError(w, r, http.StatusInternalServerError, "Something went wrong", "That did not work. Try again later.")
}

// readFailed renders a failed read: a 4xx from the AppView as "not found", anything else
// logged as a server error.
func (s *Server) readFailed(w http.ResponseWriter, r *http.Request, err error) {
	var re *readError
	if errors.As(err, &re) && re.Status < http.StatusInternalServerError || errors.Is(err, errNotFound) {
		s.renderError(w, r, http.StatusNotFound, "Not found", "This account or post does not exist, or is not visible.")
		return
	}
	if r.Context().Err() == nil {
		s.log.ErrorContext(r.Context(), "read page", "path", r.URL.Path, "err", err)
	}
	s.renderError(w, r, http.StatusInternalServerError, "Something went wrong", "This page cannot be shown right now.")
}

// viewerDID is the signed-in account, or "".
func viewerDID(r *http.Request) string {
	if sess := stateFrom(r.Context()).sess; sess != nil {
		return sess.DID
	}
	return ""
}

// profileTabs are a profile's feeds, by the value of ?tab=: the AppView's getAuthorFeed
// filters, and the account's likes (which only the account itself may read).
var profileTabs = []struct{ key, name, filter string }{
	{"", "Posts", "posts_no_replies"},
	{"replies", "Replies", "posts_with_replies"},
	{"media", "Media", "posts_with_media"},
	{"likes", "Likes", ""},
}

func (s *Server) handleProfile(w http.ResponseWriter, r *http.Request) {
	viewer := viewerDID(r)
	actor := r.PathValue("actor")
	if _, err := syntax.ParseAtIdentifier(actor); err != nil {
		s.readFailed(w, r, errNotFound)
		return
	}
	var prof profileJSON
	if err := s.query(r.Context(), viewer, "app.bsky.actor.getProfile", url.Values{"actor": {actor}}, &prof); err != nil {
		s.readFailed(w, r, err)
		return
	}
	pr := profileOf(&prof, viewer)
	p := &page{Title: pr.Name + " (@" + pr.Handle + ")", Profile: pr}
	current := r.URL.Query().Get("tab")
	nsid, params := "app.bsky.feed.getAuthorFeed", url.Values{"actor": {prof.DID}, "limit": {"30"}}
	found := false
	for _, t := range profileTabs {
		if t.key == "likes" && !pr.Self {
			continue
		}
		link := r.URL.Path
		if t.key != "" {
			link += "?tab=" + t.key
		}
		p.Tabs = append(p.Tabs, tab{Name: t.name, Link: link, Current: t.key == current})
		if t.key == current {
			found = true
			if t.filter != "" {
				params.Set("filter", t.filter)
			} else {
				nsid = "app.bsky.feed.getActorLikes"
			}
		}
	}
	if !found {
		s.readFailed(w, r, errNotFound)
		return
	}
	if c := r.URL.Query().Get("cursor"); c != "" {
		params.Set("cursor", c)
	}
	var out feedJSON
	// A blocked or blocking account's posts are not shown, as in the app.
	if !pr.BlockedBy && pr.BlockingURI == "" {
		if err := s.query(r.Context(), viewer, nsid, params, &out); err != nil {
			s.readFailed(w, r, err)
			return
		}
	}
	p.Feed = s.feedOf(out.Feed)
	if out.Cursor != "" && len(out.Feed) > 0 {
		next := url.Values{"cursor": {out.Cursor}}
		if current != "" {
			next.Set("tab", current)
		}
		p.MoreLink = r.URL.Path + "?" + next.Encode()
	}
	s.render(w, r, http.StatusOK, "profile", p)
}

func (s *Server) handlePost(w http.ResponseWriter, r *http.Request) {
	viewer := viewerDID(r)
	id, err := syntax.ParseAtIdentifier(r.PathValue("actor"))
	rkey, kerr := syntax.ParseRecordKey(r.PathValue("rkey"))
	if err != nil || kerr != nil {
		s.readFailed(w, r, errNotFound)
		return
	}
	did, err := id.AsDID()
	if err != nil {
		var prof profileJSON
		if err := s.query(r.Context(), viewer, "app.bsky.actor.getProfile", url.Values{"actor": {id.String()}}, &prof); err != nil {
			s.readFailed(w, r, err)
			return
		}
		did = syntax.DID(prof.DID)
	}
	uri := "at://" + did.String() + "/app.bsky.feed.post/" + rkey.String()
	var out struct {
		Thread *threadJSON `json:"thread"`
	}
	params := url.Values{"uri": {uri}, "depth": {"6"}, "parentHeight": {"20"}}
	if err := s.query(r.Context(), viewer, "app.bsky.feed.getPostThread", params, &out); err != nil {
		s.readFailed(w, r, err)
		return
	}
	if out.Thread == nil || out.Thread.Post == nil {
		s.readFailed(w, r, errNotFound)
		return
	}
	p := &page{Anchor: s.postOf(out.Thread.Post), Replies: s.replies(out.Thread.Replies)}
	for a := out.Thread.Parent; a != nil && a.Post != nil; a = a.Parent {
		p.Ancestors = append(p.Ancestors, s.postOf(a.Post))
	}
	for i, j := 0, len(p.Ancestors)-1; i < j; i, j = i+1, j-1 {
		p.Ancestors[i], p.Ancestors[j] = p.Ancestors[j], p.Ancestors[i]
	}
	if !p.Anchor.ReplyDisabled {
		p.ReplyParent = p.Anchor
	}
	p.Title = p.Anchor.Author.Name + ": " + truncate(p.Anchor.Text, 60)
	s.render(w, r, http.StatusOK, "thread", p)
}

func (s *Server) replies(ts []*threadJSON) []*threadReply {
	var out []*threadReply
	for _, t := range ts {
		if t == nil || t.Post == nil {
			continue
		}
		out = append(out, &threadReply{Post: s.postOf(t.Post), Replies: s.replies(t.Replies)})
	}
	return out
}

// truncate cuts text to at most n graphemes, adding an ellipsis when it cut.
func truncate(text string, n int) string {
	g := uniseg.NewGraphemes(text)
	for i := 0; g.Next(); i++ {
		if i == n {
			start, _ := g.Positions()
			return text[:start] + "…"
		}
	}
	return text
}

// notificationActions says what each notification reason means.
var notificationActions = map[string]string{
	"like":            "liked your post",
	"repost":          "reposted your post",
	"follow":          "followed you",
	"mention":         "mentioned you",
	"reply":           "replied to your post",
	"quote":           "quoted your post",
	"like-via-repost": "liked your repost",
}

func (s *Server) handleNotifications(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	var out struct {
		Notifications []*notificationJSON `json:"notifications"`
	}
	if err := s.query(r.Context(), sess.DID, "app.bsky.notification.listNotifications", url.Values{"limit": {"50"}}, &out); err != nil {
		s.readFailed(w, r, err)
		return
	}
	p := &page{Title: "Notifications"}
	for _, n := range out.Notifications {
		it := &notificationItem{Author: actorOf(n.Author), Action: notificationActions[n.Reason], Unread: !n.IsRead}
		if it.Action == "" {
			it.Action = n.Reason
		}
		var rec postRecordJSON
		json.Unmarshal(n.Record, &rec) // only replies, mentions and quotes use it
		switch n.Reason {
		case "reply", "mention", "quote":
			it.Text, it.Link = rec.Text, postLink(it.Author.Link, n.URI)
		case "follow":
			it.Link = it.Author.Link
		default:
			it.Link = s.ownPostLink(sess, n.Subject)
		}
		if t, err := syntax.ParseDatetimeLenient(n.IndexedAt); err == nil {
			it.Time = s.relTime(t.Time())
		}
		p.Notifications = append(p.Notifications, it)
	}
	seen := map[string]string{"seenAt": s.now().UTC().Format(syntax.AtprotoDatetimeLayout)}
	if err := s.call(r.Context(), sess.DID, http.MethodPost, "app.bsky.notification.updateSeen", nil, seen, nil); err != nil {
		s.log.WarnContext(r.Context(), "mark notifications seen", "did", sess.DID, "err", err)
	}
	s.render(w, r, http.StatusOK, "notifications", p)
}

// postLink is the page of the post uri by the author whose profile is at authorLink.
func postLink(authorLink, uri string) string {
	u, err := syntax.ParseATURI(uri)
	if err != nil || authorLink == "" {
		return ""
	}
	return authorLink + "/post/" + url.PathEscape(u.RecordKey().String())
}

// ownPostLink is the page of the viewer's post uri.
func (s *Server) ownPostLink(sess *session, uri string) string {
	ref := sess.Handle
	if ref == "" {
		ref = sess.DID
	}
	return postLink("/profile/"+url.PathEscape(ref), uri)
}
