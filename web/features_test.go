package web

import (
	"bytes"
	"image"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// postMultipart submits a form with files (field name -> content) as multipart, with
// the last CSRF token unless fields has one.
func (b *browser) postMultipart(path string, fields url.Values, files map[string][][]byte) (int, string, string) {
	b.t.Helper()
	if _, ok := fields["csrf"]; !ok {
		fields.Set("csrf", b.csrf)
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for k, vs := range fields {
		for _, v := range vs {
			mw.WriteField(k, v)
		}
	}
	for k, contents := range files {
		for i, c := range contents {
			w, err := mw.CreateFormFile(k, "file"+string(rune('a'+i))+".png")
			if err != nil {
				b.t.Fatal(err)
			}
			w.Write(c)
		}
	}
	mw.Close()
	resp, err := b.c.Post(b.n.srv.URL+path, mw.FormDataContentType(), &body)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(out)
}

func pngBytes(t *testing.T, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// field returns the value of the first hidden input name after the text marker in body.
func field(t *testing.T, body, marker, name string) string {
	t.Helper()
	i := strings.Index(body, marker)
	if i < 0 {
		t.Fatalf("no %q in page", marker)
	}
	m := regexp.MustCompile(`name="` + name + `" value="([^"]+)"`).FindStringSubmatch(body[i:])
	if m == nil {
		t.Fatalf("no %s after %q", name, marker)
	}
	return m[1]
}

func TestComposeRichTextImagesQuote(t *testing.T) {
	n := newTestNode(t)
	n.account("alice.test")
	bobDID := n.account("bob.test")
	alice, bob := n.browser(), n.browser()
	alice.signIn("alice.test")
	bob.signIn("bob.test")

	text := "hi @bob.test and @nobody.test, see https://example.com/a?b=1."
	st, loc, body := alice.postMultipart("/compose", url.Values{"text": {text}, "alt": {"A grey square", ""}, "next": {"/"}},
		map[string][][]byte{"images": {pngBytes(t, 40, 20)}})
	if st != http.StatusSeeOther || loc != "/" {
		t.Fatalf("compose with an image = %d %q\n%s", st, loc, body)
	}
	_, body = alice.get("/")
	wantContains(t, "timeline", body,
		`<a href="/profile/`+bobDID.String()+`" rel="nofollow">@bob.test</a>`,
		` and @nobody.test, see `,
		`<a href="https://example.com/a?b=1" rel="nofollow">https://example.com/a?b=1</a>.`,
		`alt="A grey square" width="40" height="20"`)

	// Bob quotes it with an image of his own: app.bsky.embed.recordWithMedia.
	_, body = bob.get("/profile/alice.test")
	uri := field(t, body, `action="/repost"`, "uri")
	st, body = bob.get("/compose?quote=" + url.QueryEscape(uri))
	if st != http.StatusOK {
		t.Fatalf("GET /compose?quote = %d", st)
	}
	wantContains(t, "quote page", body, `name="quote_uri" value="`+uri+`"`, `class="quote"`, "hi @bob.test")
	st, _, body = bob.postMultipart("/compose", url.Values{"text": {"look at this"}, "quote_uri": {uri},
		"quote_cid": {field(t, body, `name="quote_uri"`, "quote_cid")}, "alt": {"Mine"}, "next": {"/"}},
		map[string][][]byte{"images": {pngBytes(t, 10, 10)}})
	if st != http.StatusSeeOther {
		t.Fatalf("quote = %d\n%s", st, body)
	}
	_, body = alice.get("/profile/bob.test")
	wantContains(t, "bob's profile", body, "look at this", `alt="Mine"`, `<a class="quote" href="/profile/alice.test/post/`)
	_, body = alice.get("/notifications")
	wantContains(t, "alice's notifications", body, "quoted your post")

	// Refusals keep the text.
	for _, tt := range []struct {
		name  string
		files [][]byte
		want  string
	}{
		{"five images", [][]byte{pngBytes(t, 1, 1), pngBytes(t, 1, 1), pngBytes(t, 1, 1), pngBytes(t, 1, 1), pngBytes(t, 1, 1)}, "at most 4 images"},
		{"not an image", [][]byte{[]byte("<html>hello</html>")}, "is not a JPEG, PNG, GIF or WebP image"},
	} {
		st, _, body := alice.postMultipart("/compose", url.Values{"text": {"keep me"}}, map[string][][]byte{"images": tt.files})
		if st != http.StatusBadRequest || !strings.Contains(body, tt.want) || !strings.Contains(body, ">keep me</textarea>") {
			t.Errorf("%s: POST /compose = %d, want 400 with %q and the text kept", tt.name, st, tt.want)
		}
	}
	st, _, _ = alice.postMultipart("/compose", url.Values{"text": {"big"}}, map[string][][]byte{"images": {make([]byte, maxMultipartBytes)}})
	if st != http.StatusRequestEntityTooLarge {
		t.Errorf("POST /compose with too much = %d, want 413", st)
	}
	if st, _, _ := alice.postMultipart("/compose", url.Values{"csrf": {""}, "text": {"forged"}}, nil); st != http.StatusForbidden {
		t.Errorf("multipart POST /compose without a token = %d, want 403", st)
	}
	if st, _, _ := alice.post("/compose", url.Values{"text": {"  "}}); st != http.StatusBadRequest {
		t.Errorf("empty post = %d, want 400", st)
	}
}

func TestRepostBlockMuteTabs(t *testing.T) {
	n := newTestNode(t)
	aliceDID := n.account("alice.test")
	n.account("bob.test")
	alice, bob := n.browser(), n.browser()
	alice.signIn("alice.test")
	bob.signIn("bob.test")
	ref, err := n.CreatePost(aliceDID.String(), "a post to pass on")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.CreateRecord(ctx(), aliceDID.String(), "app.bsky.feed.post", map[string]any{"text": "my own reply",
		"reply": map[string]any{"root": map[string]any{"uri": ref.URI, "cid": ref.CID}, "parent": map[string]any{"uri": ref.URI, "cid": ref.CID}}}); err != nil {
		t.Fatal(err)
	}

	_, body := bob.get("/profile/alice.test")
	wantContains(t, "alice's profile", body, `aria-label="Repost (0 reposts)"`, ">Quote</a>", `>Mute</button>`, `>Block</button>`,
		`aria-current="page">Posts</a>`, ">Replies</a>", ">Media</a>")
	if strings.Contains(body, ">Likes</a>") || strings.Contains(body, "my own reply") {
		t.Error("another's profile shows a Likes tab, or replies under Posts")
	}
	if st, _, _ := bob.post("/repost", url.Values{"uri": {ref.URI}, "cid": {ref.CID}}); st != http.StatusSeeOther {
		t.Fatalf("repost = %d", st)
	}
	_, body = bob.get("/profile/bob.test")
	wantContains(t, "bob's profile after repost", body, "Reposted by", `aria-label="Repost (1 repost)"`, `class="reposted" aria-pressed="true"`)
	repost := field(t, body, `action="/unrepost"`, "uri")
	if st, _, _ := bob.post("/unrepost", url.Values{"uri": {repost}}); st != http.StatusSeeOther {
		t.Fatalf("unrepost = %d", st)
	}
	_, body = bob.get("/profile/alice.test")
	wantContains(t, "after unrepost", body, `aria-label="Repost (0 reposts)"`)

	_, body = bob.get("/profile/alice.test?tab=replies")
	wantContains(t, "replies tab", body, "my own reply", `aria-current="page">Replies</a>`)
	if st, _ := bob.get("/profile/alice.test?tab=likes"); st != http.StatusNotFound {
		t.Errorf("another's likes tab = %d, want 404", st)
	}
	alice.get("/")
	if st, _, _ := alice.post("/like", url.Values{"uri": {ref.URI}, "cid": {ref.CID}}); st != http.StatusSeeOther {
		t.Fatalf("like = %d", st)
	}
	_, body = alice.get("/profile/alice.test?tab=likes")
	wantContains(t, "own likes tab", body, "a post to pass on", `aria-current="page">Likes</a>`)

	// Mute, then block: the profile says so and hides the posts while blocked.
	bob.post("/mute", url.Values{"subject": {aliceDID.String()}})
	_, body = bob.get("/profile/alice.test")
	wantContains(t, "after mute", body, ">Unmute</button>", `class="tag">Muted<`)
	bob.post("/unmute", url.Values{"subject": {aliceDID.String()}})
	bob.post("/block", url.Values{"subject": {aliceDID.String()}})
	_, body = bob.get("/profile/alice.test")
	wantContains(t, "after block", body, ">Unblock</button>", ">Mute</button>")
	if strings.Contains(body, "a post to pass on") || strings.Contains(body, ">Follow</button>") {
		t.Error("a blocked profile shows posts or a Follow button")
	}
	block := field(t, body, `action="/unblock"`, "uri")
	bob.post("/unblock", url.Values{"uri": {block}})
	_, body = bob.get("/profile/alice.test")
	wantContains(t, "after unblock", body, ">Block</button>", "a post to pass on", ">Follow</button>")
}

func TestEditProfileAndSearch(t *testing.T) {
	n := newTestNode(t)
	n.account("alice.test")
	alice := n.browser()
	alice.signIn("alice.test")
	st, body := alice.get("/settings/profile")
	if st != http.StatusOK {
		t.Fatalf("GET /settings/profile = %d", st)
	}
	wantContains(t, "edit profile", body, `<label for="displayName">Display name</label>`, `<label for="description">Description</label>`,
		`<label for="avatar">Avatar</label>`, `<label for="banner">Banner</label>`, ">Save</button>")
	st, loc, body := alice.postMultipart("/settings/profile", url.Values{"displayName": {"Alice <A>"}, "description": {"Gardener & baker"}},
		map[string][][]byte{"avatar": {pngBytes(t, 64, 64)}})
	if st != http.StatusSeeOther || loc != "/profile/alice.test" {
		t.Fatalf("save profile = %d %q\n%s", st, loc, body)
	}
	_, body = alice.get("/profile/alice.test")
	wantContains(t, "profile", body, "<h1>Alice &lt;A&gt;</h1>", "Gardener &amp; baker", `class="avatar big" src="https://pds.test/img/avatar/`, "Edit profile")
	// Saving again without a file keeps the avatar.
	alice.postMultipart("/settings/profile", url.Values{"displayName": {"Alice"}, "description": {""}}, nil)
	_, body = alice.get("/profile/alice.test")
	wantContains(t, "profile after second save", body, "<h1>Alice</h1>", `class="avatar big" src="https://pds.test/img/avatar/`)
	if strings.Contains(body, "Gardener") {
		t.Error("an emptied description is still shown")
	}
	if st, _, _ := alice.post("/settings/profile", url.Values{"displayName": {strings.Repeat("x", 65)}}); st != http.StatusBadRequest {
		t.Errorf("a 65-character display name = %d, want 400", st)
	}

	n.CreatePost(n.accounts["alice.test"].String(), "tomatoes ripen in August")
	anon := n.browser()
	st, body = anon.get("/search?q=tomatoes")
	if st != http.StatusOK {
		t.Fatalf("GET /search = %d", st)
	}
	wantContains(t, "search results", body, `<label for="q">Search</label>`, `>Search</button>`, "tomatoes ripen in August", `value="tomatoes"`)
	_, body = anon.get("/search?q=alice")
	wantContains(t, "people results", body, `href="/profile/alice.test"`)
	_, body = anon.get("/search")
	if strings.Contains(body, "People") {
		t.Error("the empty search page shows results")
	}
}

func TestSettings(t *testing.T) {
	n := newTestNode(t)
	did := n.account("alice.test")
	alice := n.browser()
	alice.signIn("alice.test")
	st, body := alice.get("/settings")
	if st != http.StatusOK {
		t.Fatalf("GET /settings = %d", st)
	}
	wantContains(t, "settings", body, `<label for="apppw-name">App password name</label>`, ">Create app password</button>",
		`<label for="handle">New handle</label>`, ">Change handle</button>", `href="/settings/export"`, ">Deactivate account</button>",
		">Email me a confirmation code</button>", `<label for="delete-token">Confirmation code</label>`, ">Delete account</button>")

	st, _, body = alice.post("/settings/app-passwords", url.Values{"name": {"My <phone>"}})
	if st != http.StatusOK {
		t.Fatalf("create app password = %d", st)
	}
	wantContains(t, "new app password", body, "abcd-efgh-ijkl-mnop", "My &lt;phone&gt;", `aria-label="Revoke My &lt;phone&gt;"`)
	_, body = alice.get("/settings")
	if strings.Contains(body, "abcd-efgh-ijkl-mnop") {
		t.Error("the app password is shown a second time")
	}
	if st, _, body := alice.post("/settings/app-passwords", url.Values{"name": {"My <phone>"}}); st != http.StatusBadRequest || !strings.Contains(body, "already exists") {
		t.Errorf("duplicate app password = %d", st)
	}
	if st, loc, _ := alice.post("/settings/app-passwords/revoke", url.Values{"name": {"My <phone>"}}); st != http.StatusSeeOther || loc != "/settings?done=revoked" {
		t.Errorf("revoke = %d %q", st, loc)
	}
	_, body = alice.get("/settings?done=revoked")
	wantContains(t, "after revoke", body, "No app passwords yet.", "The app password is revoked.")

	// A new handle: a bare name gets the node's domain, and the session follows.
	if st, loc, body := alice.post("/settings/handle", url.Values{"handle": {"alicia"}}); st != http.StatusSeeOther || loc != "/settings?done=handle" {
		t.Fatalf("change handle = %d %q\n%s", st, loc, body)
	}
	_, body = alice.get("/settings?done=handle")
	wantContains(t, "after handle change", body, `href="/profile/alicia.test"`, "Your handle is changed.")
	if st, _, body := alice.post("/settings/handle", url.Values{"handle": {"bad handle!"}}); st != http.StatusBadRequest || !strings.Contains(body, "valid handle") {
		t.Errorf("invalid handle = %d", st)
	}

	resp, err := alice.c.Get(n.srv.URL + "/settings/export")
	if err != nil {
		t.Fatal(err)
	}
	car, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/vnd.ipld.car" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), `attachment; filename="alicia.test-`) || len(car) < 100 {
		t.Errorf("export = %d %q %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"), len(car))
	}

	if st, _, body := alice.post("/settings/deactivate", url.Values{"password": {"wrong"}}); st != http.StatusUnauthorized || !strings.Contains(body, "Wrong password.") {
		t.Errorf("deactivate with a wrong password = %d", st)
	}
	if st, loc, _ := alice.post("/settings/delete/request", url.Values{}); st != http.StatusSeeOther || loc != "/settings?done=code#delete" {
		t.Errorf("request deletion = %d %q", st, loc)
	}
	if st, _, body := alice.post("/settings/delete", url.Values{"password": {"hunter2"}, "token": {"000000"}}); st != http.StatusBadRequest || !strings.Contains(body, "Token is invalid") {
		t.Errorf("delete with a wrong code = %d", st)
	}
	st, _, body = alice.post("/settings/delete", url.Values{"password": {"hunter2"}, "token": {"123456"}})
	if st != http.StatusOK || !strings.Contains(body, "Account deleted") || strings.Contains(body, "Sign out") {
		t.Errorf("delete = %d, want the signed-out confirmation", st)
	}
	if _, body := alice.get("/"); !strings.Contains(body, ">Sign in</button>") {
		t.Errorf("still signed in as %s after deleting the account", did)
	}
}
