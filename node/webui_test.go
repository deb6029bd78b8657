package node

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// TestWebUISignInAndPost drives the built-in web UI against the real node: sign in with
// the account's password, post from the home page, and see the post (escaped) there.
func TestWebUISignInAndPost(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	createTestAccount(t, base, "webuser.test")
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	page := func(resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s = %d", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode)
		}
		return string(b)
	}
	csrf := func(html string) string {
		t.Helper()
		m := csrfField.FindStringSubmatch(html)
		if m == nil {
			t.Fatalf("no CSRF field in %q", html)
		}
		return m[1]
	}

	signin := page(client.Get(base + "/signin"))
	wrong, err := client.PostForm(base+"/signin", url.Values{"csrf": {csrf(signin)}, "identifier": {"webuser.test"}, "password": {"nope"}})
	if err != nil {
		t.Fatal(err)
	}
	wrong.Body.Close()
	if wrong.StatusCode != 401 {
		t.Errorf("sign-in with a wrong password = %d, want 401", wrong.StatusCode)
	}
	home := page(client.PostForm(base+"/signin", url.Values{"csrf": {csrf(signin)}, "identifier": {"webuser.test"}, "password": {"password-webuser.test"}}))
	if !strings.Contains(home, "webuser.test") {
		t.Fatalf("home after sign-in does not name the account")
	}
	home = page(client.PostForm(base+"/compose", url.Values{"csrf": {csrf(home)}, "text": {"hello from the web <script>alert(1)</script>"}}))
	if !strings.Contains(home, "hello from the web &lt;script&gt;") || strings.Contains(home, "<script>alert") {
		t.Errorf("home after posting lacks the escaped post")
	}
	// A post without the CSRF token is refused and writes nothing.
	resp, err := client.PostForm(base+"/compose", url.Values{"text": {"forged"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("compose without CSRF = %d, want 403", resp.StatusCode)
	}
}

// TestWebUISignUp creates an account through the web UI's sign-up form, with the node's
// real account creation (PLC, repo, events) behind it.
func TestWebUISignUp(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	resp, err := client.Get(base + "/signup")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfField.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no CSRF field on the sign-up page")
	}
	resp, err = client.PostForm(base+"/signup", url.Values{"csrf": {m[1]}, "handle": {"fresh"}, "password": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "Password must be") {
		t.Errorf("sign-up with a short password = %d", resp.StatusCode)
	}
	resp, err = client.PostForm(base+"/signup", url.Values{"csrf": {m[1]}, "handle": {"fresh"}, "password": {"fresh-password"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "fresh.test") {
		t.Fatalf("sign-up = %d, home does not name fresh.test", resp.StatusCode)
	}
	status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession",
		`{"identifier":"fresh.test","password":"fresh-password"}`, map[string]string{"Content-Type": "application/json"})
	if status != 200 || !strings.HasPrefix(out["did"].(string), "did:plc:") {
		t.Errorf("createSession for the web-created account = %d %v", status, out)
	}
}

// webClient is a cookie-keeping browser of the node's web UI that does not follow
// redirects and remembers the last page's CSRF token.
type webClient struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func newWebClient(t *testing.T, base string) *webClient {
	jar, _ := cookiejar.New(nil)
	return &webClient{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (w *webClient) do(req *http.Request) (int, string) {
	w.t.Helper()
	resp, err := w.c.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if m := csrfField.FindSubmatch(b); m != nil {
		w.csrf = string(m[1])
	}
	return resp.StatusCode, string(b)
}

func (w *webClient) get(path string) (int, string) {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.base+path, nil)
	return w.do(req)
}

func (w *webClient) post(path string, form url.Values) (int, string) {
	w.t.Helper()
	form.Set("csrf", w.csrf)
	req, _ := http.NewRequest(http.MethodPost, w.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return w.do(req)
}

// postFiles submits a multipart form with one file per field of files.
func (w *webClient) postFiles(path string, form url.Values, files map[string][]byte) (int, string) {
	w.t.Helper()
	form.Set("csrf", w.csrf)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for k, vs := range form {
		for _, v := range vs {
			mw.WriteField(k, v)
		}
	}
	for k, b := range files {
		fw, _ := mw.CreateFormFile(k, k+".png")
		fw.Write(b)
	}
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, w.base+path, &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return w.do(req)
}

func (w *webClient) signIn(handle, password string) {
	w.t.Helper()
	w.get("/signin")
	if st, body := w.post("/signin", url.Values{"identifier": {handle}, "password": {password}}); st != http.StatusSeeOther {
		w.t.Fatalf("sign in as %s = %d\n%s", handle, st, body)
	}
	w.get("/")
}

// TestWebUIImagesProfileSettings runs the writes that need the node's own services
// through the web UI: an image post through the blob store, a profile with an avatar,
// app passwords that really sign in, a handle change, the repo export and the deletion of
// the account with its emailed code.
func TestWebUIImagesProfileSettings(t *testing.T) {
	t.Parallel()
	n, base := testNode(t)
	did := createTestAccount(t, base, "pat.test")["did"].(string)
	quinn := createTestAccount(t, base, "quinn.test")["did"].(string)
	w := newWebClient(t, base)
	w.signIn("pat.test", "password-pat.test")
	var picture bytes.Buffer
	png.Encode(&picture, image.NewRGBA(image.Rect(0, 0, 30, 20)))

	// An image post mentioning quinn: the record has the blob, the alt text and the facet.
	if st, body := w.postFiles("/compose", url.Values{"text": {"hello @quinn.test"}, "alt": {"A tiny picture"}, "next": {"/"}},
		map[string][]byte{"images": picture.Bytes()}); st != http.StatusSeeOther {
		t.Fatalf("compose with an image = %d\n%s", st, body)
	}
	_, home := w.get("/")
	if !strings.Contains(home, `alt="A tiny picture" width="30" height="20"`) || !strings.Contains(home, `rel="nofollow">@quinn.test</a>`) {
		t.Errorf("home lacks the image or the mention")
	}
	img := regexp.MustCompile(`src="(http://[^"]+/img/[^"]+)"`).FindStringSubmatch(home)
	if img == nil {
		t.Fatal("no thumbnail URL in the timeline")
	}
	resp, err := http.Get(strings.ReplaceAll(img[1], "&amp;", "&"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/") {
		t.Errorf("GET thumbnail = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// The profile with an avatar, read back through the API.
	w.get("/settings/profile")
	if st, body := w.postFiles("/settings/profile", url.Values{"displayName": {"Pat"}, "description": {"Hello"}},
		map[string][]byte{"avatar": picture.Bytes()}); st != http.StatusSeeOther {
		t.Fatalf("save profile = %d\n%s", st, body)
	}
	status, prof, _ := getJSON(t, "GET", base+"/xrpc/app.bsky.actor.getProfile?actor="+did, "", nil)
	if status != 200 || prof["displayName"] != "Pat" || !strings.Contains(fmt.Sprint(prof["avatar"]), "/img/avatar/") {
		t.Errorf("getProfile after editing = %d %v", status, prof)
	}

	// An app password made on the settings page signs in to the API.
	w.get("/settings")
	st, body := w.post("/settings/app-passwords", url.Values{"name": {"phone"}})
	pw := regexp.MustCompile(`<code class="secret">([a-z2-7-]{19})</code>`).FindStringSubmatch(body)
	if st != http.StatusOK || pw == nil {
		t.Fatalf("create app password = %d, no password shown", st)
	}
	if status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession", `{"identifier":"pat.test","password":"`+pw[1]+`"}`,
		map[string]string{"Content-Type": "application/json"}); status != 200 {
		t.Errorf("createSession with the app password = %d %v", status, out)
	}
	if st, _ := w.post("/settings/app-passwords/revoke", url.Values{"name": {"phone"}}); st != http.StatusSeeOther {
		t.Errorf("revoke = %d", st)
	}
	if status, _, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession", `{"identifier":"pat.test","password":"`+pw[1]+`"}`,
		map[string]string{"Content-Type": "application/json"}); status != 401 {
		t.Errorf("createSession with a revoked app password = %d, want 401", status)
	}

	// A new handle, and a taken one.
	if st, body := w.post("/settings/handle", url.Values{"handle": {"quinn"}}); st != http.StatusBadRequest || !strings.Contains(body, "already taken") {
		t.Errorf("change to a taken handle = %d", st)
	}
	if st, body := w.post("/settings/handle", url.Values{"handle": {"patricia"}}); st != http.StatusSeeOther {
		t.Fatalf("change handle = %d\n%s", st, body)
	}
	if status, out, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.identity.resolveHandle?handle=patricia.test", "", nil); status != 200 || out["did"] != did {
		t.Errorf("resolveHandle(patricia.test) = %d %v", status, out)
	}

	req, _ := http.NewRequest(http.MethodGet, base+"/settings/export", nil)
	resp, err = w.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	car, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/vnd.ipld.car" || len(car) < 200 {
		t.Errorf("export = %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(car))
	}

	// Deletion: a code by email, then the password and the code.
	w.get("/settings")
	if st, _ := w.post("/settings/delete/request", url.Values{}); st != http.StatusSeeOther {
		t.Fatalf("request deletion = %d", st)
	}
	w.get("/settings")
	if st, body := w.post("/settings/delete", url.Values{"password": {"wrong-password"}, "token": {"x"}}); st != http.StatusBadRequest || !strings.Contains(body, "Invalid identifier or password") {
		t.Errorf("delete with a wrong password = %d", st)
	}
	tok := emailToken(t, n, purposeDeleteAccount, did)
	if st, body := w.post("/settings/delete", url.Values{"password": {"password-pat.test"}, "token": {tok}}); st != http.StatusOK || !strings.Contains(body, "Account deleted") {
		t.Fatalf("delete = %d\n%s", st, body)
	}
	if status, _, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession", `{"identifier":"`+did+`","password":"password-pat.test"}`,
		map[string]string{"Content-Type": "application/json"}); status != 401 {
		t.Errorf("createSession after deletion = %d, want 401", status)
	}

	// Quinn deactivates, which needs the password.
	q := newWebClient(t, base)
	q.signIn("quinn.test", "password-quinn.test")
	q.get("/settings")
	if st, _ := q.post("/settings/deactivate", url.Values{"password": {"nope"}}); st != http.StatusUnauthorized {
		t.Errorf("deactivate with a wrong password = %d, want 401", st)
	}
	if st, body := q.post("/settings/deactivate", url.Values{"password": {"password-quinn.test"}}); st != http.StatusOK || !strings.Contains(body, "Account deactivated") {
		t.Fatalf("deactivate = %d\n%s", st, body)
	}
	if status, out, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.sync.getRepoStatus?did="+quinn, "", nil); status != 200 || out["active"] != false {
		t.Errorf("getRepoStatus after deactivation = %d %v", status, out)
	}

	// Signing in again offers to reactivate; that asks for the password once more.
	q = newWebClient(t, base)
	q.get("/signin")
	if st, body := q.post("/signin", url.Values{"identifier": {"quinn.test"}, "password": {"password-quinn.test"}}); st != http.StatusForbidden || !strings.Contains(body, `action="/reactivate"`) {
		t.Fatalf("sign in while deactivated = %d, want 403 with the reactivate form\n%s", st, body)
	}
	if st, _ := q.post("/reactivate", url.Values{"identifier": {"quinn.test"}, "password": {"nope"}}); st != http.StatusUnauthorized {
		t.Errorf("reactivate with a wrong password = %d, want 401", st)
	}
	if status, out, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.sync.getRepoStatus?did="+quinn, "", nil); status != 200 || out["active"] != false {
		t.Errorf("getRepoStatus after a refused reactivation = %d %v", status, out)
	}
	if st, body := q.post("/reactivate", url.Values{"identifier": {"quinn.test"}, "password": {"password-quinn.test"}}); st != http.StatusSeeOther {
		t.Fatalf("reactivate = %d\n%s", st, body)
	}
	if status, out, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.sync.getRepoStatus?did="+quinn, "", nil); status != 200 || out["active"] != true {
		t.Errorf("getRepoStatus after reactivation = %d %v", status, out)
	}
	q.get("/")
	if st, body := q.post("/compose", url.Values{"text": {"back again"}, "next": {"/"}}); st != http.StatusSeeOther {
		t.Errorf("post after reactivation = %d\n%s", st, body)
	}
}
