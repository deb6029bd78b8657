package node

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestBadInputIsRefusedAndWritesNothing sends malformed requests to the repo write and
// sync endpoints: each gets a 4xx XRPC error with a message, and the repo is unchanged.
func TestBadInputIsRefusedAndWritesNothing(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	sess := createTestAccount(t, base, "careful.test")
	did, access := sess["did"].(string), sess["accessJwt"].(string)
	_, before, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.sync.getLatestCommit?did="+did, "", nil)

	post := `{"text":"ok","createdAt":"2026-11-25T12:00:00Z"}`
	huge := `{"text":"` + strings.Repeat("x", 3<<20) + `","createdAt":"2026-11-25T12:00:00Z"}`
	tests := []struct {
		name, method, nsid, body string
		auth                     bool
		wantStatus               int
		wantError                string
	}{
		{"malformed JSON", "POST", "com.atproto.repo.createRecord", `{"repo":`, true, 400, "InvalidRequest"},
		{"wrong type for collection", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":5,"record":{}}`, true, 400, "InvalidRequest"},
		{"record not an object", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","record":"hi"}`, true, 400, "InvalidRequest"},
		{"float in record", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","record":{"text":"a","createdAt":"2026-11-25T12:00:00Z","n":1.5}}`, true, 400, "InvalidRequest"},
		{"lexicon violation", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","record":{"text":` + fmt.Sprintf("%q", strings.Repeat("é", 400)) + `,"createdAt":"2026-11-25T12:00:00Z"}}`, true, 400, "InvalidRequest"},
		{"type mismatch", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","record":{"$type":"app.bsky.feed.like"}}`, true, 400, "InvalidRequest"},
		{"oversize body", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","record":` + huge + `}`, true, 413, "PayloadTooLarge"},
		{"path traversal in rkey", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","rkey":"../../etc","record":` + post + `}`, true, 400, "InvalidRequest"},
		{"slash in rkey", "POST", "com.atproto.repo.putRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","rkey":"a/b","record":` + post + `}`, true, 400, "InvalidRequest"},
		{"bad collection", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"../x","record":` + post + `}`, true, 400, "InvalidRequest"},
		{"bad swapCommit", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","swapCommit":"nope","record":` + post + `}`, true, 400, "InvalidRequest"},
		{"stale swapCommit", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","swapCommit":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm","record":` + post + `}`, true, 400, "InvalidSwap"},
		{"update missing record", "POST", "com.atproto.repo.applyWrites", `{"repo":"` + did + `","writes":[{"$type":"com.atproto.repo.applyWrites#update","collection":"app.bsky.feed.post","rkey":"none","value":` + post + `}]}`, true, 400, "RecordNotFound"},
		{"batch with one bad write", "POST", "com.atproto.repo.applyWrites", `{"repo":"` + did + `","writes":[{"$type":"com.atproto.repo.applyWrites#create","collection":"app.bsky.feed.post","rkey":"good","value":` + post + `},{"$type":"com.atproto.repo.applyWrites#create","collection":"app.bsky.feed.post","rkey":"bad","value":{"text":1}}]}`, true, 400, "InvalidRequest"},
		{"unknown write type", "POST", "com.atproto.repo.applyWrites", `{"repo":"` + did + `","writes":[{"$type":"x","collection":"app.bsky.feed.post"}]}`, true, 400, "InvalidRequest"},
		{"unauthenticated write", "POST", "com.atproto.repo.createRecord", `{"repo":"` + did + `","collection":"app.bsky.feed.post","record":` + post + `}`, false, 401, "AuthMissing"},
		{"unknown repo", "POST", "com.atproto.repo.createRecord", `{"repo":"did:plc:nobodyhereatall","collection":"app.bsky.feed.post","record":` + post + `}`, true, 400, "RepoNotFound"},
		{"getRecord bad rkey", "GET", "com.atproto.repo.getRecord?repo=" + did + "&collection=app.bsky.feed.post&rkey=..", "", false, 400, "InvalidRequest"},
		{"getRecord missing", "GET", "com.atproto.repo.getRecord?repo=" + did + "&collection=app.bsky.feed.post&rkey=nothere", "", false, 400, "RecordNotFound"},
		{"listRecords bad limit", "GET", "com.atproto.repo.listRecords?repo=" + did + "&collection=app.bsky.feed.post&limit=1000", "", false, 400, "InvalidRequest"},
		{"getRepo bad since", "GET", "com.atproto.sync.getRepo?did=" + did + "&since=yesterday", "", false, 400, "InvalidRequest"},
		{"getBlocks bad cid", "GET", "com.atproto.sync.getBlocks?did=" + did + "&cids=xyz", "", false, 400, "InvalidRequest"},
		{"subscribeRepos bad cursor", "GET", "com.atproto.sync.subscribeRepos?cursor=abc", "", false, 400, "InvalidRequest"},
	}
	for _, tt := range tests {
		h := map[string]string{"Content-Type": "application/json"}
		if tt.auth {
			h = bearer(access)
		}
		status, out, _ := getJSON(t, tt.method, base+"/xrpc/"+tt.nsid, tt.body, h)
		if status != tt.wantStatus || out["error"] != tt.wantError || out["message"] == "" {
			t.Errorf("%s: %d %v, want %d %s with a message", tt.name, status, out, tt.wantStatus, tt.wantError)
		}
	}
	_, after, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.sync.getLatestCommit?did="+did, "", nil)
	if before["rev"] != after["rev"] {
		t.Errorf("repo changed from %v to %v though every write was refused", before, after)
	}
	resp, err := http.Get(base + "/xrpc/com.atproto.repo.getRecord?repo=" + did + "&collection=app.bsky.feed.post&rkey=good")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("the good half of a refused batch was written (getRecord = %d)", resp.StatusCode)
	}
}
