package node

import (
	"io"
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
