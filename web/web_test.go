package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/aerie-social/aerie/appview"
	"github.com/aerie-social/aerie/relay"
	"github.com/aerie-social/aerie/repo"
)

// testNode is a real repo store, sequencer and AppView, with fakeBackend writing to them
// as the node does, and the web UI served over HTTP.
type testNode struct {
	t     *testing.T
	store *repo.Store
	seq   *relay.Sequencer
	av    *appview.AppView
	srv   *httptest.Server
	web   *Server

	mu           sync.Mutex
	accounts     map[string]syntax.DID // handle or DID -> DID
	appPasswords map[string][]AppPassword
	nextDID      int
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	store, err := repo.Open(ctx, dir, repo.StoreConfig{}, log)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := relay.Open(ctx, filepath.Join(dir, "relay.sqlite"), relay.DefaultConfig(), log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := appview.DefaultConfig()
	cfg.PublicURL = "https://pds.test"
	cfg.WaitTimeout = 10 * time.Second
	av, err := appview.Open(ctx, filepath.Join(dir, "index.sqlite"), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := seq.Run(runCtx); err != nil {
			t.Errorf("Sequencer.Run = %v", err)
		}
	})
	wg.Go(func() {
		if err := av.Run(runCtx, seq); err != nil {
			t.Errorf("AppView.Run = %v", err)
		}
	})
	n := &testNode{t: t, store: store, seq: seq, av: av, accounts: map[string]syntax.DID{}, appPasswords: map[string][]AppPassword{}}
	n.web, err = New(Config{PublicURL: "http://pds.test", CookieKey: []byte(strings.Repeat("k", 32))}, n, av, log)
	if err != nil {
		t.Fatal(err)
	}
	n.srv = httptest.NewServer(n.web.Handler())
	t.Cleanup(func() {
		n.srv.Close()
		stop()
		wg.Wait()
		av.Close()
		seq.Close()
		store.Close()
	})
	return n
}

// account creates a repo for handle (password "hunter2") and announces it.
func (n *testNode) account(handle string) syntax.DID {
	n.t.Helper()
	n.mu.Lock()
	n.nextDID++
	did := syntax.DID(fmt.Sprintf("did:plc:webtest%018d", n.nextDID))
	n.accounts[handle] = did
	n.accounts[did.String()] = did
	n.mu.Unlock()
	ctx := context.Background()
	ce, err := n.store.Create(ctx, did, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	n.submit(relay.NewCommit(ce))
	n.submit(relay.NewIdentity(did, syntax.Handle(handle)))
	n.submit(relay.NewAccount(did, true, ""))
	return did
}

func (n *testNode) submit(ev *relay.Event) {
	n.t.Helper()
	seq, err := n.seq.Submit(context.Background(), ev)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.av.WaitForSeq(context.Background(), seq); err != nil {
		n.t.Fatal(err)
	}
}

// SignUpOptions implements Backend: handles under .test, an invite code required.
func (n *testNode) SignUpOptions() ([]string, bool) { return []string{".test"}, true }

// SignUp implements Backend: invite code "letmein"; the account's password is "hunter2"
// whatever was typed, so the other helpers can sign it in.
func (n *testNode) SignUp(ctx context.Context, handle, email, password, invite string) (string, string, error) {
	switch {
	case invite != "letmein":
		return "", "", &FormError{Message: "Provided invite code not available"}
	case len(password) < 8:
		return "", "", &FormError{Message: "Password must be 8 to 256 characters"}
	}
	n.mu.Lock()
	_, taken := n.accounts[handle]
	n.mu.Unlock()
	if taken || strings.HasPrefix(handle, "did:") {
		return "", "", &FormError{Message: "Handle already taken: " + handle}
	}
	return n.account(handle).String(), handle, nil
}

// Login implements Backend: every account's password is "hunter2".
func (n *testNode) Login(ctx context.Context, id, password string) (string, string, error) {
	n.mu.Lock()
	did, ok := n.accounts[id]
	n.mu.Unlock()
	if !ok || password != "hunter2" {
		return "", "", ErrBadCredentials
	}
	return did.String(), id, nil
}

func (n *testNode) writeRef(did string, action repo.Action, collection, rkey string, value map[string]any) (StrongRef, error) {
	value["$type"] = collection
	if _, ok := value["createdAt"]; !ok && collection != "app.bsky.actor.profile" {
		value["createdAt"] = time.Now().UTC().Format(syntax.AtprotoDatetimeLayout)
	}
	raw, err := json.Marshal(value)
	if err != nil {
		return StrongRef{}, err
	}
	rec, err := repo.RecordFromJSON(raw)
	if err != nil {
		return StrongRef{}, err
	}
	var seq int64
	ce, err := n.store.ApplyWrites(context.Background(), syntax.DID(did),
		[]repo.Write{{Action: action, Collection: syntax.NSID(collection), RKey: syntax.RecordKey(rkey), Record: rec}},
		repo.WriteOpts{OnCommit: func(ce *repo.CommitEvent) error {
			seq, err = n.seq.Submit(context.Background(), relay.NewCommit(ce))
			return err
		}})
	if err != nil {
		return StrongRef{}, err
	}
	if err := n.av.WaitForSeq(ctx(), seq); err != nil {
		return StrongRef{}, err
	}
	return StrongRef{URI: ce.Results[0].URI.String(), CID: ce.Results[0].CID.String()}, nil
}

func ctx() context.Context { return context.Background() }

// CreateRecord implements Backend.
func (n *testNode) CreateRecord(_ context.Context, did, collection string, record map[string]any) (StrongRef, error) {
	return n.writeRef(did, repo.ActionCreate, collection, "", record)
}

// PutRecord implements Backend.
func (n *testNode) PutRecord(_ context.Context, did, collection, rkey string, record map[string]any) error {
	_, err := n.writeRef(did, repo.ActionUpdate, collection, rkey, record)
	if errors.Is(err, repo.ErrRecordNotFound) {
		_, err = n.writeRef(did, repo.ActionCreate, collection, rkey, record)
	}
	return err
}

// GetRecord implements Backend.
func (n *testNode) GetRecord(_ context.Context, did, collection, rkey string) (map[string]any, error) {
	_, data, err := n.store.GetRecord(ctx(), syntax.DID(did), syntax.NSID(collection), syntax.RecordKey(rkey))
	if errors.Is(err, repo.ErrRecordNotFound) {
		return nil, ErrNoRecord
	}
	if err != nil {
		return nil, err
	}
	raw, err := repo.RecordJSON(data)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(raw, &out)
}

// UploadBlob implements Backend: the blob is only hashed, as the web tests serve no
// images.
func (n *testNode) UploadBlob(_ context.Context, did, mimeType string, body io.Reader) (Blob, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return Blob{}, err
	}
	mh, err := multihash.Sum(b, multihash.SHA2_256, -1)
	if err != nil {
		return Blob{}, err
	}
	return Blob{CID: cid.NewCidV1(cid.Raw, mh).String(), MimeType: mimeType, Size: int64(len(b))}, nil
}

// ResolveHandle implements Backend over the test's accounts.
func (n *testNode) ResolveHandle(_ context.Context, handle string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	did, ok := n.accounts[handle]
	if !ok {
		return "", errors.New("no such handle")
	}
	return did.String(), nil
}

// ListAppPasswords implements Backend.
func (n *testNode) ListAppPasswords(_ context.Context, did string) ([]AppPassword, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.appPasswords[did]), nil
}

// CreateAppPassword implements Backend.
func (n *testNode) CreateAppPassword(_ context.Context, did, name string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ap := range n.appPasswords[did] {
		if ap.Name == name {
			return "", &FormError{Message: "an app password with this name already exists"}
		}
	}
	n.appPasswords[did] = append(n.appPasswords[did], AppPassword{Name: name, CreatedAt: "2026-01-01T00:00:00Z"})
	return "abcd-efgh-ijkl-mnop", nil
}

// RevokeAppPassword implements Backend.
func (n *testNode) RevokeAppPassword(_ context.Context, did, name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.appPasswords[did] = slices.DeleteFunc(n.appPasswords[did], func(ap AppPassword) bool { return ap.Name == name })
	return nil
}

// UpdateHandle implements Backend.
func (n *testNode) UpdateHandle(_ context.Context, did, handle string) (string, error) {
	h, err := syntax.ParseHandle(handle)
	if err != nil {
		return "", &FormError{Message: "Input/handle must be a valid handle"}
	}
	n.mu.Lock()
	n.accounts[h.String()] = syntax.DID(did)
	n.mu.Unlock()
	n.submit(relay.NewIdentity(syntax.DID(did), h))
	return h.String(), nil
}

// ExportRepo implements Backend.
func (n *testNode) ExportRepo(_ context.Context, did string, w io.Writer) error {
	return n.store.ExportCAR(ctx(), syntax.DID(did), "", w)
}

// DeactivateAccount implements Backend.
func (n *testNode) DeactivateAccount(_ context.Context, did string) error {
	n.submit(relay.NewAccount(syntax.DID(did), false, "deactivated"))
	return nil
}

// Reactivate implements Backend; the node's own tests cover deactivated accounts.
func (n *testNode) Reactivate(ctx context.Context, id, password string) (string, string, error) {
	return n.Login(ctx, id, password)
}

// RequestAccountDelete implements Backend: the code is always "123456".
func (n *testNode) RequestAccountDelete(context.Context, string) error { return nil }

// DeleteAccount implements Backend.
func (n *testNode) DeleteAccount(_ context.Context, did, password, token string) error {
	if password != "hunter2" || token != "123456" {
		return &FormError{Message: "Token is invalid"}
	}
	n.submit(relay.NewAccount(syntax.DID(did), false, "deleted"))
	return nil
}

// DeleteRecord implements Backend.
func (n *testNode) DeleteRecord(_ context.Context, did, uri string) error {
	u := syntax.ATURI(uri)
	var seq int64
	_, err := n.store.ApplyWrites(ctx(), syntax.DID(did),
		[]repo.Write{{Action: repo.ActionDelete, Collection: u.Collection(), RKey: u.RecordKey()}},
		repo.WriteOpts{OnCommit: func(ce *repo.CommitEvent) error {
			var err error
			seq, err = n.seq.Submit(ctx(), relay.NewCommit(ce))
			return err
		}})
	if err != nil {
		return err
	}
	return n.av.WaitForSeq(ctx(), seq)
}

// CreatePost writes a post of text as did, as a test's setup.
func (n *testNode) CreatePost(did, text string) (StrongRef, error) {
	return n.CreateRecord(ctx(), did, "app.bsky.feed.post", map[string]any{"text": text})
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t    *testing.T
	n    *testNode
	c    *http.Client
	csrf string
}

func (n *testNode) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: n.t, n: n, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// get fetches path and remembers the page's CSRF token.
func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.n.srv.URL + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if m := csrfRE.FindSubmatch(body); m != nil {
		b.csrf = string(m[1])
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		b.t.Errorf("GET %s: Content-Security-Policy = %q", path, csp)
	}
	return resp.StatusCode, string(body)
}

// post submits a form with the last CSRF token (unless form has one) and returns the
// status, Location and body.
func (b *browser) post(path string, form url.Values) (int, string, string) {
	b.t.Helper()
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf)
	}
	resp, err := b.c.PostForm(b.n.srv.URL+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(body)
}

func (b *browser) signIn(handle string) {
	b.t.Helper()
	b.get("/signin")
	if st, loc, body := b.post("/signin", url.Values{"identifier": {handle}, "password": {"hunter2"}}); st != http.StatusSeeOther || loc != "/" {
		b.t.Fatalf("sign in as %s = %d %q\n%s", handle, st, loc, body)
	}
	b.get("/")
}

func wantContains(t *testing.T, what, body string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(body, s) {
			t.Errorf("%s does not contain %q", what, s)
		}
	}
}

func TestSignIn(t *testing.T) {
	n := newTestNode(t)
	n.account("alice.test")
	b := n.browser()

	st, body := b.get("/")
	if st != http.StatusOK {
		t.Fatalf("GET / signed out = %d", st)
	}
	wantContains(t, "sign-in page", body, `<label for="identifier">Handle</label>`, `<label for="password">Password</label>`, `>Sign in</button>`)

	st, _, body = b.post("/signin", url.Values{"identifier": {"alice.test"}, "password": {"wrong"}})
	if st != http.StatusUnauthorized {
		t.Errorf("sign in with a wrong password = %d, want 401", st)
	}
	wantContains(t, "failed sign-in", body, `role="alert">Wrong handle or password.`, `value="alice.test"`)

	b.signIn("alice.test")
	_, body = b.get("/")
	wantContains(t, "home", body, `>Post</button>`, `s up?</label>`, `>Sign out</button>`)

	if st, loc, _ := b.post("/signout", url.Values{}); st != http.StatusSeeOther || loc != "/" {
		t.Fatalf("sign out = %d %q", st, loc)
	}
	_, body = b.get("/")
	wantContains(t, "after sign-out", body, `>Sign in</button>`)
}

func TestCSRF(t *testing.T) {
	n := newTestNode(t)
	n.account("alice.test")
	b := n.browser()
	b.signIn("alice.test")
	for _, path := range []string{"/compose", "/signin", "/signout", "/like", "/follow", "/unlike", "/unfollow", "/repost", "/unrepost",
		"/block", "/unblock", "/mute", "/unmute", "/settings/profile", "/settings/app-passwords", "/settings/app-passwords/revoke",
		"/settings/handle", "/settings/deactivate", "/settings/delete/request", "/settings/delete"} {
		st, _, _ := b.post(path, url.Values{"csrf": {""}, "text": {"hi"}})
		if st != http.StatusForbidden {
			t.Errorf("POST %s without a token = %d, want 403", path, st)
		}
		st, _, _ = b.post(path, url.Values{"csrf": {"AAAA" + b.csrf[4:]}, "text": {"hi"}})
		if st != http.StatusForbidden {
			t.Errorf("POST %s with a wrong token = %d, want 403", path, st)
		}
	}
	// A token from another browser (its own nonce) is refused.
	other := n.browser()
	other.get("/signin")
	if st, _, _ := b.post("/compose", url.Values{"csrf": {other.csrf}, "text": {"hi"}}); st != http.StatusForbidden {
		t.Errorf("POST /compose with another browser's token = %d, want 403", st)
	}
	_, body := b.get("/")
	if strings.Contains(body, `class="text">hi<`) {
		t.Error("a refused post was written")
	}
}

func TestPostLikeFollowThreadNotifications(t *testing.T) {
	n := newTestNode(t)
	n.account("alice.test")
	bobDID := n.account("bob.test")
	alice, bob := n.browser(), n.browser()
	alice.signIn("alice.test")
	bob.signIn("bob.test")

	// Bob posts HTML; it is text everywhere.
	evil := `<script>alert("x")</script> & <b>bold</b>`
	if st, loc, body := bob.post("/compose", url.Values{"text": {evil}, "next": {"/"}}); st != http.StatusSeeOther || loc != "/" {
		t.Fatalf("compose = %d %q\n%s", st, loc, body)
	}
	escaped := `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;`

	// Alice follows Bob from his profile.
	st, body := alice.get("/profile/bob.test")
	if st != http.StatusOK {
		t.Fatalf("GET profile = %d", st)
	}
	wantContains(t, "profile", body, `<h1>bob.test</h1>`, `>Follow</button>`, escaped)
	if st, loc, _ := alice.post("/follow", url.Values{"subject": {bobDID.String()}, "next": {"/profile/bob.test"}}); st != http.StatusSeeOther || loc != "/profile/bob.test" {
		t.Fatalf("follow = %d %q", st, loc)
	}
	_, body = alice.get("/profile/bob.test")
	wantContains(t, "profile after follow", body, `>Unfollow</button>`, `<strong>1</strong> followers`)

	// The post is in Alice's timeline; she likes it.
	_, body = alice.get("/")
	wantContains(t, "timeline", body, escaped, `aria-label="Like (0 likes)"`)
	for _, page := range []string{body} {
		if strings.Contains(page, "<script>alert") || strings.Contains(page, "<b>bold") {
			t.Fatal("post text is not escaped")
		}
	}
	uri := regexp.MustCompile(`name="uri" value="(at://[^"]+)"><input type="hidden" name="cid" value="([^"]+)"`).FindStringSubmatch(body)
	if uri == nil {
		t.Fatalf("no like form in the timeline:\n%s", body)
	}
	if st, _, _ := alice.post("/like", url.Values{"uri": {uri[1]}, "cid": {uri[2]}, "next": {"https://evil.example/"}}); st != http.StatusSeeOther {
		t.Fatalf("like = %d", st)
	}
	_, body = alice.get("/")
	wantContains(t, "timeline after like", body, `aria-label="Like (1 like)"`, `aria-pressed="true"`)

	// The thread page, and a reply from Alice.
	link := regexp.MustCompile(`href="(/profile/bob.test/post/[^"]+)"`).FindStringSubmatch(body)
	if link == nil {
		t.Fatal("no post link in the timeline")
	}
	st, body = alice.get(link[1])
	if st != http.StatusOK {
		t.Fatalf("GET thread = %d", st)
	}
	wantContains(t, "thread", body, escaped, `>Reply</button>`, `Write your reply`)
	form := url.Values{"text": {"nice <i>post</i>"}, "next": {link[1]}}
	for _, f := range []string{"root_uri", "root_cid", "parent_uri", "parent_cid"} {
		m := regexp.MustCompile(`name="` + f + `" value="([^"]+)"`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no %s in the reply form", f)
		}
		form.Set(f, m[1])
	}
	if st, loc, _ := alice.post("/compose", form); st != http.StatusSeeOther || loc != link[1] {
		t.Fatalf("reply = %d %q", st, loc)
	}
	_, body = alice.get(link[1])
	wantContains(t, "thread after reply", body, `nice &lt;i&gt;post&lt;/i&gt;`, `class="reply"`)

	// Bob sees the follow, like and reply as notifications, and the unread badge.
	_, body = bob.get("/")
	wantContains(t, "bob's home", body, `class="badge"`)
	st, body = bob.get("/notifications")
	if st != http.StatusOK {
		t.Fatalf("GET notifications = %d", st)
	}
	wantContains(t, "notifications", body, "followed you", "liked your post", "replied to your post", `nice &lt;i&gt;post&lt;/i&gt;`)
	_, body = bob.get("/")
	if strings.Contains(body, `class="badge"`) {
		t.Error("unread badge after reading notifications")
	}

	// Alice unlikes.
	_, body = alice.get("/")
	likeURI := regexp.MustCompile(`action="/unlike".*?name="uri" value="([^"]+)"`).FindStringSubmatch(body)
	if likeURI == nil {
		t.Fatal("no unlike form")
	}
	if st, _, _ := alice.post("/unlike", url.Values{"uri": {likeURI[1]}}); st != http.StatusSeeOther {
		t.Fatalf("unlike = %d", st)
	}
	_, body = alice.get("/")
	wantContains(t, "timeline after unlike", body, `aria-label="Like (0 likes)"`)
	// Bob cannot delete Alice's records through the UI.
	if st, _, _ := bob.post("/unfollow", url.Values{"uri": {strings.Replace(likeURI[1], "app.bsky.feed.like", "app.bsky.graph.follow", 1)}}); st != http.StatusBadRequest {
		t.Errorf("unfollow of another account's record = %d, want 400", st)
	}
}

func TestPagesSignedOutAndMissing(t *testing.T) {
	n := newTestNode(t)
	n.account("alice.test")
	b := n.browser()
	for path, want := range map[string]int{
		"/profile/alice.test":                    http.StatusOK,
		"/profile/nobody.test":                   http.StatusNotFound,
		"/profile/alice.test/post/3jzfcijpj2z2a": http.StatusNotFound,
		"/profile/not%20a%20handle":              http.StatusNotFound,
		"/nowhere":                               http.StatusNotFound,
		"/signin":                                http.StatusOK,
	} {
		if st, _ := b.get(path); st != want {
			t.Errorf("GET %s = %d, want %d", path, st, want)
		}
	}
	resp, err := b.c.Get(n.srv.URL + "/notifications")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/signin" {
		t.Errorf("GET /notifications signed out = %d %q, want a redirect to /signin", resp.StatusCode, resp.Header.Get("Location"))
	}
	if st, _, _ := b.post("/compose", url.Values{"text": {"hi"}}); st != http.StatusSeeOther {
		t.Errorf("POST /compose signed out = %d, want a redirect to sign in", st)
	}
}

func TestCookies(t *testing.T) {
	n := newTestNode(t)
	n.account("alice.test")
	b := n.browser()
	b.get("/signin")
	resp, err := b.c.PostForm(n.srv.URL+"/signin", url.Values{"identifier": {"alice.test"}, "password": {"hunter2"}, "csrf": {b.csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var found bool
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			found = true
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Lax, not Secure over http", c)
			}
		}
	}
	if !found {
		t.Fatal("no session cookie")
	}
	// Over https the cookies are Secure and __Host- prefixed.
	n.web.secure = true
	rec := httptest.NewRecorder()
	n.web.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/signin", nil))
	for _, c := range rec.Result().Cookies() {
		if !c.Secure || !strings.HasPrefix(c.Name, "__Host-") {
			t.Errorf("cookie over https %+v: want Secure and __Host-", c)
		}
	}
	// A tampered session is no session.
	sess := n.web.verifySession("eyJkIjoiZGlkOnBsYzp4IiwiaCI6IngiLCJlIjo5OTk5OTk5OTk5fQ.AAAA")
	if sess != nil {
		t.Error("a session with a bad signature was accepted")
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/profile/a": "/profile/a", "": "/", "https://evil.example": "/", "//evil.example": "/",
		"/\\evil.example": "/", "/a\r\nSet-Cookie: x": "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPageWeight keeps the timeline page (HTML, CSS and JS) under 100 KB.
func TestPageWeight(t *testing.T) {
	n := newTestNode(t)
	did := n.account("alice.test")
	for i := range feedPageSize {
		if _, err := n.CreatePost(did.String(), fmt.Sprintf("post %d: %s", i, strings.Repeat("lorem ipsum ", 24))); err != nil {
			t.Fatal(err)
		}
	}
	b := n.browser()
	b.signIn("alice.test")
	_, html := b.get("/") // the timeline holds the viewer's own posts
	total := len(html)
	for _, m := range regexp.MustCompile(`(?:href|src)="(/static/[^"]+)"`).FindAllStringSubmatch(html, -1) {
		_, asset := b.get(strings.ReplaceAll(m[1], "&amp;", "&"))
		total += len(asset)
	}
	t.Logf("timeline page: %d posts, %d bytes with CSS and JS", strings.Count(html, `class="post"`), total)
	if strings.Count(html, `class="post"`) < feedPageSize {
		t.Errorf("page has %d posts, want %d", strings.Count(html, `class="post"`), feedPageSize)
	}
	if total > 100<<10 {
		t.Errorf("timeline page weighs %d bytes, want under 100 KB", total)
	}
}

func TestSignUp(t *testing.T) {
	n := newTestNode(t)
	n.account("taken.test")
	b := n.browser()

	st, body := b.get("/signup")
	if st != http.StatusOK {
		t.Fatalf("GET /signup = %d", st)
	}
	wantContains(t, "sign-up page", body, `<label for="handle">Handle</label>`, `<label for="password">Password</label>`,
		`<label for="invite">Invite code</label>`, ">Create account</button>", ".test")

	for _, tt := range []struct {
		name, handle, invite, password, wantMsg string
	}{
		{"wrong invite", "newbie", "nope", "long-enough", "invite code not available"},
		{"short password", "newbie", "letmein", "short", "Password must be"},
		{"taken handle", "taken", "letmein", "long-enough", "Handle already taken: taken.test"},
	} {
		st, _, body := b.post("/signup", url.Values{"handle": {tt.handle}, "invite": {tt.invite}, "password": {tt.password}})
		if st != http.StatusBadRequest || !strings.Contains(body, tt.wantMsg) {
			t.Errorf("%s: POST /signup = %d, want 400 with %q", tt.name, st, tt.wantMsg)
		}
	}
	if st, _, _ := b.post("/signup", url.Values{"csrf": {"forged"}, "handle": {"newbie"}, "invite": {"letmein"}, "password": {"long-enough"}}); st != http.StatusForbidden {
		t.Errorf("POST /signup with a forged CSRF token = %d, want 403", st)
	}
	st, loc, body := b.post("/signup", url.Values{"handle": {"@Newbie"}, "email": {"n@example.com"}, "invite": {"letmein"}, "password": {"long-enough"}})
	if st != http.StatusSeeOther || loc != "/" {
		t.Fatalf("POST /signup = %d %q\n%s", st, loc, body)
	}
	_, home := b.get("/")
	wantContains(t, "home after sign-up", home, "newbie.test")
}
