package node

import (
	"fmt"
	"net/url"
	"testing"
)

// TestTimelineThroughTheNode: the AppView in the same process sees local writes at once
// (read-after-write) and answers the official app's proxied calls.
func TestTimelineThroughTheNode(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	alice := createTestAccount(t, base, "alice.test")
	bob := createTestAccount(t, base, "bob.test")
	aliceDID, bobDID := alice["did"].(string), bob["did"].(string)
	aliceTok, bobTok := alice["accessJwt"].(string), bob["accessJwt"].(string)

	create := func(tok, did, coll, record string) map[string]any {
		t.Helper()
		status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.createRecord",
			fmt.Sprintf(`{"repo":%q,"collection":%q,"record":%s}`, did, coll, record), bearer(tok))
		if status != 200 {
			t.Fatalf("createRecord %s = %d %v", coll, status, out)
		}
		return out
	}
	create(aliceTok, aliceDID, "app.bsky.graph.follow", fmt.Sprintf(`{"subject":%q,"createdAt":"2026-11-25T12:00:00Z"}`, bobDID))
	post := create(bobTok, bobDID, "app.bsky.feed.post", `{"text":"hello alice","createdAt":"2026-11-25T12:01:00Z"}`)
	create(aliceTok, aliceDID, "app.bsky.feed.like", fmt.Sprintf(`{"subject":{"uri":%q,"cid":%q},"createdAt":"2026-11-25T12:02:00Z"}`, post["uri"], post["cid"]))

	// The app sends atproto-proxy for the Bluesky AppView; this node answers it itself.
	h := bearer(aliceTok)
	h["atproto-proxy"] = "did:web:api.bsky.app#bsky_appview"
	status, tl, _ := getJSON(t, "GET", base+"/xrpc/app.bsky.feed.getTimeline?limit=10", "", h)
	if status != 200 {
		t.Fatalf("getTimeline = %d %v", status, tl)
	}
	feed := tl["feed"].([]any)
	if len(feed) != 1 {
		t.Fatalf("alice's timeline has %d items, want bob's post: %v", len(feed), tl)
	}
	p := feed[0].(map[string]any)["post"].(map[string]any)
	if p["uri"] != post["uri"] || p["likeCount"] != float64(1) || p["author"].(map[string]any)["handle"] != "bob.test" {
		t.Errorf("timeline post = %v", p)
	}
	if v, _ := p["viewer"].(map[string]any); v == nil || v["like"] == nil {
		t.Errorf("viewer state lacks alice's like: %v", p["viewer"])
	}
	status, prof, _ := getJSON(t, "GET", base+"/xrpc/app.bsky.actor.getProfile?actor="+url.QueryEscape("bob.test"), "", bearer(aliceTok))
	if status != 200 || prof["followersCount"] != float64(1) || prof["postsCount"] != float64(1) {
		t.Errorf("getProfile(bob) = %d %v", status, prof)
	}
	status, notes, _ := getJSON(t, "GET", base+"/xrpc/app.bsky.notification.listNotifications", "", bearer(bobTok))
	if status != 200 || len(notes["notifications"].([]any)) != 2 {
		t.Errorf("bob's notifications = %d %v, want a follow and a like", status, notes)
	}
	if status, prefs, _ := getJSON(t, "POST", base+"/xrpc/app.bsky.actor.putPreferences",
		`{"preferences":[{"$type":"app.bsky.actor.defs#adultContentPref","enabled":false}]}`, bearer(aliceTok)); status != 200 {
		t.Fatalf("putPreferences = %d %v", status, prefs)
	}
	status, prefs, _ := getJSON(t, "GET", base+"/xrpc/app.bsky.actor.getPreferences", "", bearer(aliceTok))
	if status != 200 || len(prefs["preferences"].([]any)) != 1 {
		t.Errorf("getPreferences = %d %v", status, prefs)
	}
}

// TestAppStartupCallsAreWellFormed: the calls the official app makes on start that have no
// data here yet answer 200 with the lexicon's required (empty) fields.
func TestAppStartupCallsAreWellFormed(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	tok := createTestAccount(t, base, "app.test")["accessJwt"].(string)
	for _, d := range appStartupDefaults {
		method, body := "GET", ""
		if d.procedure {
			method, body = "POST", `{"serviceDid":"did:web:push.example","token":"t","platform":"web","appId":"x"}`
		}
		status, out, _ := getJSON(t, method, base+"/xrpc/"+d.nsid, body, bearer(tok))
		if status != 200 {
			t.Errorf("%s = %d %v, want 200", d.nsid, status, out)
		}
		for k := range d.body {
			if _, ok := out[k]; !ok {
				t.Errorf("%s: answer lacks required %q: %v", d.nsid, k, out)
			}
		}
	}
}
