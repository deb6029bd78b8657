package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/rivo/uniseg"
)

// settingsNotices are the confirmations /settings shows after a redirect, by ?done=.
var settingsNotices = map[string]string{
	"handle":  "Your handle is changed.",
	"revoked": "The app password is revoked.",
	"code":    "A confirmation code is on its way to your email address. Enter it below to delete your account.",
}

func (s *Server) handleSettings(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	s.renderSettings(w, r, sess, http.StatusOK, &page{Notice: settingsNotices[r.URL.Query().Get("done")]})
}

// renderSettings renders the settings page p, filling in the account's app passwords.
func (s *Server) renderSettings(w http.ResponseWriter, r *http.Request, sess *session, status int, p *page) {
	list, err := s.backend.ListAppPasswords(r.Context(), sess.DID)
	if err != nil {
		s.readFailed(w, r, err)
		return
	}
	p.Title, p.AppPasswords, p.Here = "Settings", list, "/settings"
	p.Domains, _ = s.backend.SignUpOptions()
	s.render(w, r, status, "settings", p)
}

// settingsFailed shows the settings page with the backend's message when it is one for
// the person, else the generic error page.
func (s *Server) settingsFailed(w http.ResponseWriter, r *http.Request, sess *session, what string, err error) {
	var fe *FormError
	if errors.As(err, &fe) {
		s.renderSettings(w, r, sess, http.StatusBadRequest, &page{Error: fe.Message})
		return
	}
	s.writeFailed(w, r, sess, what, err)
}

func (s *Server) handleCreateAppPassword(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	if name == "" {
		s.renderSettings(w, r, sess, http.StatusBadRequest, &page{Error: "Give the app password a name."})
		return
	}
	password, err := s.backend.CreateAppPassword(r.Context(), sess.DID, name)
	if err != nil {
		s.settingsFailed(w, r, sess, "create app password", err)
		return
	}
	// Rendered, not redirected: the password is shown this once and never stored for a
	// later page (the response is no-store like every page).
	s.renderSettings(w, r, sess, http.StatusOK, &page{NewPassword: &newAppPassword{Name: name, Password: password}})
}

func (s *Server) handleRevokeAppPassword(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	if err := s.backend.RevokeAppPassword(r.Context(), sess.DID, r.PostForm.Get("name")); err != nil {
		s.settingsFailed(w, r, sess, "revoke app password", err)
		return
	}
	http.Redirect(w, r, "/settings?done=revoked", http.StatusSeeOther)
}

func (s *Server) handleUpdateHandle(w http.ResponseWriter, r *http.Request) {
	st := stateFrom(r.Context())
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	handle := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(r.PostForm.Get("handle")), "@"))
	if domains, _ := s.backend.SignUpOptions(); !strings.Contains(handle, ".") && len(domains) > 0 {
		handle += domains[0]
	}
	canonical, err := s.backend.UpdateHandle(r.Context(), sess.DID, handle)
	if err != nil {
		s.settingsFailed(w, r, sess, "update handle", err)
		return
	}
	// The session names the handle for links to the account's own profile.
	s.signIn(w, st, sess.DID, canonical)
	http.Redirect(w, r, "/settings?done=handle", http.StatusSeeOther)
}

// handleExportRepo downloads the account's repository as a CAR file, as
// com.atproto.sync.getRepo serves it.
func (s *Server) handleExportRepo(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	name := strings.NewReplacer(":", "-", "/", "-").Replace(sess.Handle)
	if name == "" {
		name = "repo"
	}
	lw := &lazyHeader{w: w, header: func(h http.Header) {
		h.Set("Content-Type", "application/vnd.ipld.car")
		h.Set("Content-Disposition", `attachment; filename="`+name+"-"+s.now().UTC().Format("2006-01-02")+`.car"`)
	}}
	if err := s.backend.ExportRepo(r.Context(), sess.DID, lw); err != nil {
		if !lw.started {
			s.writeFailed(w, r, sess, "export repo", err)
			return
		}
		// Mid-stream the status is sent: the download ends short and the log says why.
		s.log.ErrorContext(r.Context(), "export repo", "did", sess.DID, "err", err)
	}
}

// lazyHeader sets the download's headers at its first byte, so that an error before
// any byte can still be an error page.
type lazyHeader struct {
	w       http.ResponseWriter
	header  func(http.Header)
	started bool
}

func (l *lazyHeader) Write(b []byte) (int, error) {
	if !l.started {
		l.started = true
		l.header(l.w.Header())
	}
	return l.w.Write(b)
}

// confirmPassword checks the signed-in account's password before an action that cannot
// be taken back by a click.
func (s *Server) confirmPassword(w http.ResponseWriter, r *http.Request, sess *session) bool {
	_, _, err := s.backend.Login(r.Context(), sess.DID, r.PostForm.Get("password"))
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrBadCredentials):
		s.renderSettings(w, r, sess, http.StatusUnauthorized, &page{Error: "Wrong password."})
	case errors.Is(err, ErrRateLimited):
		s.renderSettings(w, r, sess, http.StatusTooManyRequests, &page{Error: "Too many attempts. Wait a few minutes and try again."})
	default:
		s.writeFailed(w, r, sess, "confirm password", err)
	}
	return false
}

func (s *Server) handleDeactivate(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil || !s.confirmPassword(w, r, sess) {
		return
	}
	if err := s.backend.DeactivateAccount(r.Context(), sess.DID); err != nil {
		s.settingsFailed(w, r, sess, "deactivate account", err)
		return
	}
	s.signOut(w, stateFrom(r.Context()))
	s.render(w, r, http.StatusOK, "error", &page{Title: "Account deactivated",
		Message: "Your account is deactivated: your posts are hidden and the network is told. Sign in again to reactivate it."})
}

func (s *Server) handleRequestDelete(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	if err := s.backend.RequestAccountDelete(r.Context(), sess.DID); err != nil {
		s.settingsFailed(w, r, sess, "request account deletion", err)
		return
	}
	http.Redirect(w, r, "/settings?done=code#delete", http.StatusSeeOther)
}

func (s *Server) handleDeleteAccount(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	err := s.backend.DeleteAccount(r.Context(), sess.DID, r.PostForm.Get("password"), strings.TrimSpace(r.PostForm.Get("token")))
	if err != nil {
		s.settingsFailed(w, r, sess, "delete account", err)
		return
	}
	s.signOut(w, stateFrom(r.Context()))
	s.render(w, r, http.StatusOK, "error", &page{Title: "Account deleted",
		Message: "Your account, its posts and its files are deleted from this server, and the network is told."})
}

// Limits of app.bsky.actor.profile.
const (
	maxDisplayNameGraphemes = 64
	maxDescriptionGraphemes = 256
)

func (s *Server) handleEditProfileForm(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	rec, err := s.backend.GetRecord(r.Context(), sess.DID, "app.bsky.actor.profile", "self")
	if err != nil && !errors.Is(err, ErrNoRecord) {
		s.readFailed(w, r, err)
		return
	}
	p := &page{Title: "Edit profile"}
	p.DisplayName, _ = rec["displayName"].(string)
	p.Description, _ = rec["description"].(string)
	s.render(w, r, http.StatusOK, "editprofile", p)
}

// handleEditProfile writes app.bsky.actor.profile/self with the form's display name,
// description and new avatar or banner, keeping the record's other fields.
func (s *Server) handleEditProfile(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("displayName"))
	desc := strings.TrimSpace(strings.ReplaceAll(r.PostForm.Get("description"), "\r\n", "\n"))
	fail := func(msg string) {
		s.render(w, r, http.StatusBadRequest, "editprofile", &page{Title: "Edit profile", Error: msg, DisplayName: name, Description: desc})
	}
	switch {
	case uniseg.GraphemeClusterCount(name) > maxDisplayNameGraphemes || len(name) > 10*maxDisplayNameGraphemes:
		fail("A display name has at most 64 characters.")
		return
	case uniseg.GraphemeClusterCount(desc) > maxDescriptionGraphemes || len(desc) > 10*maxDescriptionGraphemes:
		fail("A description has at most 256 characters.")
		return
	}
	ctx := r.Context()
	rec, err := s.backend.GetRecord(ctx, sess.DID, "app.bsky.actor.profile", "self")
	if errors.Is(err, ErrNoRecord) {
		rec, err = map[string]any{}, nil
	}
	if err != nil {
		s.writeFailed(w, r, sess, "read profile", err)
		return
	}
	rec["$type"] = "app.bsky.actor.profile"
	for key, v := range map[string]string{"displayName": name, "description": desc} {
		if v == "" {
			delete(rec, key)
		} else {
			rec[key] = v
		}
	}
	for _, key := range []string{"avatar", "banner"} {
		if r.MultipartForm == nil || len(r.MultipartForm.File[key]) == 0 || r.MultipartForm.File[key][0].Size == 0 {
			continue
		}
		img, err := s.uploadImage(ctx, sess.DID, r.MultipartForm.File[key][0])
		var fe *FormError
		if errors.As(err, &fe) {
			fail(fe.Message)
			return
		}
		if err != nil {
			s.writeFailed(w, r, sess, "upload "+key, err)
			return
		}
		rec[key] = img["image"]
	}
	if err := s.backend.PutRecord(ctx, sess.DID, "app.bsky.actor.profile", "self", rec); err != nil {
		s.writeFailed(w, r, sess, "save profile", err)
		return
	}
	ref := sess.Handle
	if _, err := syntax.ParseHandle(ref); err != nil {
		ref = sess.DID
	}
	http.Redirect(w, r, "/profile/"+ref, http.StatusSeeOther)
}
