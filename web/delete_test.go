package web

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestDeletePost checks the delete button: only on one's own posts, only one's own posts
// deleted, and a delete from the post's own page lands on the profile.
func TestDeletePost(t *testing.T) {
	n := newTestNode(t)
	n.account("alice.test")
	n.account("bob.test")
	alice, bob := n.browser(), n.browser()
	alice.signIn("alice.test")
	bob.signIn("bob.test")

	if st, _, body := bob.post("/compose", url.Values{"text": {"soon gone"}, "next": {"/"}}); st != http.StatusSeeOther {
		t.Fatalf("compose = %d\n%s", st, body)
	}
	_, body := bob.get("/profile/bob.test")
	link := regexp.MustCompile(`href="(/profile/bob.test/post/[^"]+)"`).FindStringSubmatch(body)
	if link == nil {
		t.Fatalf("no post link on bob's profile:\n%s", body)
	}
	_, thread := bob.get(link[1])
	uri := regexp.MustCompile(`action="/delete"[^>]*>.*?name="uri" value="([^"]+)"`).FindStringSubmatch(thread)
	if uri == nil {
		t.Fatalf("no delete form on bob's own post:\n%s", thread)
	}
	if _, other := alice.get(link[1]); strings.Contains(other, `action="/delete"`) {
		t.Error("alice sees a delete button on bob's post")
	}
	if st, _, _ := alice.post("/delete", url.Values{"uri": {uri[1]}}); st != http.StatusBadRequest {
		t.Errorf("alice deleting bob's post = %d, want 400", st)
	}
	if _, body := bob.get(link[1]); !strings.Contains(body, "soon gone") {
		t.Fatal("bob's post is gone after alice's refused delete")
	}

	st, loc, _ := bob.post("/delete", url.Values{"uri": {uri[1]}, "next": {link[1]}})
	if st != http.StatusSeeOther || loc != "/profile/bob.test" {
		t.Fatalf("delete from the post's page = %d %q, want a redirect to /profile/bob.test", st, loc)
	}
	if _, body := bob.get("/profile/bob.test"); strings.Contains(body, "soon gone") {
		t.Error("the deleted post is still on bob's profile")
	}
}
