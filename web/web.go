package web

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/aerie-social/aerie/appview"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// minCookieKey is the shortest cookie key New accepts: an HMAC-SHA256 key of 256 bits.
const minCookieKey = 32

// Config configures the web UI.
type Config struct {
	// PublicURL is the node's public base URL; when it is https the cookies are Secure
	// whatever the request's scheme (TLS usually ends at a proxy in front of the node).
	PublicURL string
	// CookieKey signs session cookies and CSRF tokens: at least 32 random bytes that the
	// node keeps across restarts (a new key signs everyone out).
	CookieKey []byte
	// SessionTTL is how long a sign-in lasts (default 30 days).
	SessionTTL time.Duration
}

// StrongRef is a record's at:// URI and CID.
type StrongRef struct {
	URI string
	CID string
}

// ReplyRef places a new post in a thread.
type ReplyRef struct {
	Root   StrongRef
	Parent StrongRef
}

// Blob is an uploaded blob as a record references it.
type Blob struct {
	CID      string
	MimeType string
	Size     int64
}

// AppPassword is one of an account's app passwords, without the password.
type AppPassword struct {
	Name      string
	CreatedAt string
}

// Backend is what the web UI needs from the node to authenticate and write. The node
// implements it over the same services as its XRPC handlers; every method acts as the
// account did, which the web UI has already authenticated with its session cookie. The
// record methods take lexicon JSON (blobs as {"$type":"blob",...}) so that the pages, not
// the node, decide what a post, like or profile holds.
type Backend interface {
	// Login checks identifier (handle, email or DID) and password (the account password or
	// an app password) and returns the account. It returns an error wrapping
	// ErrBadCredentials for wrong credentials or an account that cannot sign in, and one
	// wrapping ErrRateLimited when the createSession rate limit is exhausted.
	Login(ctx context.Context, identifier, password string) (did, handle string, err error)
	// Reactivate checks credentials as Login does, then reactivates the account its owner
	// deactivated (as com.atproto.server.activateAccount) and returns it.
	Reactivate(ctx context.Context, identifier, password string) (did, handle string, err error)
	// CreateRecord writes record to collection in did's repo under a new TID and returns
	// its URI and CID; every AppView read after it returns shows it (read-after-write). A
	// record the lexicon refuses is an error wrapping a *FormError.
	CreateRecord(ctx context.Context, did, collection string, record map[string]any) (StrongRef, error)
	// PutRecord creates or replaces did's record collection/rkey, read-after-write as
	// CreateRecord.
	PutRecord(ctx context.Context, did, collection, rkey string, record map[string]any) error
	// GetRecord returns did's record collection/rkey as JSON, or an error wrapping
	// ErrNoRecord.
	GetRecord(ctx context.Context, did, collection, rkey string) (map[string]any, error)
	// DeleteRecord deletes the record uri (a like or follow the UI created) from did's
	// repo, indexed before it returns. The web UI only passes URIs in did's repo, but the
	// node must check that too.
	DeleteRecord(ctx context.Context, did, uri string) error
	// UploadBlob stores body (of the declared MIME type) as a blob of did for a record to
	// reference. A refusal the person can act on (too large, over quota) is a *FormError.
	UploadBlob(ctx context.Context, did, mimeType string, body io.Reader) (Blob, error)
	// ResolveHandle returns the DID handle points to, for mentions.
	ResolveHandle(ctx context.Context, handle string) (did string, err error)
	// SignUpOptions tells the sign-up page which handle domains are offered (each starting
	// with a dot) and whether an invite code is required.
	SignUpOptions() (domains []string, inviteRequired bool)
	// SignUp creates an account as com.atproto.server.createAccount does and returns it. An
	// error wrapping a *FormError carries a message for the person filling in the form.
	SignUp(ctx context.Context, handle, email, password, inviteCode string) (did, canonicalHandle string, err error)

	// The settings page. Refusals meant for the person are errors wrapping a *FormError.

	// ListAppPasswords lists did's app passwords, newest first.
	ListAppPasswords(ctx context.Context, did string) ([]AppPassword, error)
	// CreateAppPassword makes an app password called name and returns it; it is never
	// shown again.
	CreateAppPassword(ctx context.Context, did, name string) (password string, err error)
	// RevokeAppPassword deletes the app password name and ends the sessions it opened.
	RevokeAppPassword(ctx context.Context, did, name string) error
	// UpdateHandle moves did to handle (as com.atproto.identity.updateHandle) and returns
	// the handle as stored.
	UpdateHandle(ctx context.Context, did, handle string) (canonical string, err error)
	// ExportRepo writes did's whole repository as a CAR file to w.
	ExportRepo(ctx context.Context, did string, w io.Writer) error
	// DeactivateAccount deactivates did: its repo stops being served and it cannot sign in.
	DeactivateAccount(ctx context.Context, did string) error
	// RequestAccountDelete sends did a confirmation code for DeleteAccount by email (or to
	// the operator's log when the account has no address).
	RequestAccountDelete(ctx context.Context, did string) error
	// DeleteAccount deletes did for good after checking its password and the code from
	// RequestAccountDelete.
	DeleteAccount(ctx context.Context, did, password, token string) error
}

// Server is the web UI. Build it with New and serve Handler.
type Server struct {
	cfg     Config
	backend Backend
	log     *slog.Logger
	secure  bool
	methods map[string]http.HandlerFunc
	pages   map[string]*pageTemplate
	static  http.Handler
	// assetVersion is a hash of the static files, added to their URLs so that browsers
	// may cache them for long.
	assetVersion string
	now          func() time.Time
}

// New builds the web UI over backend for writes and av for reads.
func New(cfg Config, backend Backend, av *appview.AppView, log *slog.Logger) (*Server, error) {
	if len(cfg.CookieKey) < minCookieKey {
		return nil, fmt.Errorf("new web UI: cookie key has %d bytes, want at least %d", len(cfg.CookieKey), minCookieKey)
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("new web UI: public URL: %w", err)
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 30 * 24 * time.Hour
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		backend: backend,
		log:     log.With("component", "web"),
		secure:  u.Scheme == "https",
		methods: map[string]http.HandlerFunc{},
		now:     time.Now,
	}
	for _, m := range av.Methods() {
		s.methods[m.NSID] = m.Handler
	}
	if s.pages, err = parsePages(); err != nil {
		return nil, fmt.Errorf("new web UI: %w", err)
	}
	sub, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, fmt.Errorf("new web UI: %w", err)
	}
	if s.assetVersion, err = hashFS(sub); err != nil {
		return nil, fmt.Errorf("new web UI: %w", err)
	}
	s.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	return s, nil
}

// hashFS returns a short hash of every file in fsys.
func hashFS(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12], err
}

// Handler returns the web UI's HTTP handler. It answers every path (unknown ones with an
// HTML 404), so the node routes to it whatever its own router does not match:
// r.NotFound(web.Handler().ServeHTTP). It owns /, /signin, /signout, /compose, /like,
// /unlike, /repost, /unrepost, /follow, /unfollow, /block, /unblock, /mute, /unmute,
// /notifications, /search, /settings/..., /profile/... and /static/....
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.middleware)
	r.Get("/", s.handleHome)
	r.Get("/signin", s.handleSignInForm)
	r.Post("/signin", s.handleSignIn)
	r.Post("/reactivate", s.handleReactivate)
	r.Post("/signout", s.handleSignOut)
	r.Get("/signup", s.handleSignUpForm)
	r.Post("/signup", s.handleSignUp)
	r.Get("/compose", s.handleComposePage)
	r.Post("/compose", s.handleCompose)
	r.Post("/like", s.handleLike)
	r.Post("/unlike", s.handleUnlike)
	r.Post("/repost", s.handleRepost)
	r.Post("/unrepost", s.handleUnrepost)
	r.Post("/follow", s.handleFollow)
	r.Post("/unfollow", s.handleUnfollow)
	r.Post("/block", s.handleBlock)
	r.Post("/unblock", s.handleUnblock)
	r.Post("/delete", s.handleDeletePost)
	r.Post("/mute", s.handleMute)
	r.Post("/unmute", s.handleUnmute)
	r.Get("/notifications", s.handleNotifications)
	r.Get("/search", s.handleSearch)
	r.Get("/settings", s.handleSettings)
	r.Get("/settings/profile", s.handleEditProfileForm)
	r.Post("/settings/profile", s.handleEditProfile)
	r.Post("/settings/app-passwords", s.handleCreateAppPassword)
	r.Post("/settings/app-passwords/revoke", s.handleRevokeAppPassword)
	r.Post("/settings/handle", s.handleUpdateHandle)
	r.Get("/settings/export", s.handleExportRepo)
	r.Post("/settings/deactivate", s.handleDeactivate)
	r.Post("/settings/delete/request", s.handleRequestDelete)
	r.Post("/settings/delete", s.handleDeleteAccount)
	r.Get("/profile/{actor}", s.handleProfile)
	r.Get("/profile/{actor}/post/{rkey}", s.handlePost)
	r.Get("/static/*", s.handleStatic)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.renderError(w, r, http.StatusNotFound, "Page not found", "There is nothing at this address.")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.renderError(w, r, http.StatusMethodNotAllowed, "Not allowed", "This page does not take that kind of request.")
	})
	return r
}

// contentSecurityPolicy allows only this origin's scripts, styles, images (and data: and
// blob: images, the compose box's previews of files not yet uploaded), forms and
// connections: no inline script or style, no framing.
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// middleware sets the security headers, reads the session, and checks the CSRF token of
// every POST before the handler runs.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		if strings.HasPrefix(r.URL.Path, "/static/") {
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Cache-Control", "no-store")
		st := s.readState(w, r)
		if r.Method == http.MethodPost {
			if err := parseForm(w, r); err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					s.renderError(w, r, http.StatusRequestEntityTooLarge, "Too large",
						"The files are too large: an image may have at most 1 MB.")
					return
				}
				s.renderError(w, r, http.StatusBadRequest, "Bad request", "The form could not be read.")
				return
			}
			if !s.validCSRF(st, r.PostForm.Get("csrf")) {
				s.renderError(w, r.WithContext(withState(r.Context(), st)), http.StatusForbidden, "Form expired",
					"This form is out of date. Go back, reload the page and try again.")
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(withState(r.Context(), st)))
	})
}

// maxFormBytes bounds a form body: a post is at most 3000 bytes of text.
const maxFormBytes = 64 << 10

// maxImageBytes is the largest image a post, avatar or banner may embed (the lexicons'
// maxSize for app.bsky.embed.images and app.bsky.actor.profile).
const maxImageBytes = 1_000_000

// maxMultipartBytes bounds a form with files: four images and the text.
const maxMultipartBytes = maxImages*maxImageBytes + maxFormBytes

// parseForm reads a POST body, url-encoded or (for the forms with files) multipart, so
// that r.PostForm holds its fields and r.MultipartForm its files.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
		r.Body = http.MaxBytesReader(w, r.Body, maxMultipartBytes)
		// Everything fits in memory by the limit above, so no temporary files are left.
		return r.ParseMultipartForm(maxMultipartBytes)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	return r.ParseForm()
}

func (s *Server) handleStatic(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("v") == s.assetVersion {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=300")
	}
	s.static.ServeHTTP(w, r)
}

// errNotFound is a read of something the AppView does not have.
var errNotFound = errors.New("not found")
