package node

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAuthorizationMatrix calls every endpoint that writes to an account or reads private
// account state, as every kind of caller, and checks that only the right one gets through:
// no token can act for another account.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	_, base, clock := testNodeClock(t)
	a := createTestAccount(t, base, "owner.test")
	b := createTestAccount(t, base, "other.test")
	aDID := a["did"].(string)
	_, appPass, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAppPassword", `{"name":"matrix"}`, bearer(a["accessJwt"].(string)))
	appAccess := login(t, base, "owner.test", appPass["password"].(string))["accessJwt"].(string)
	// An access token of A that is expired by the time it is used.
	expiring := login(t, base, "owner.test", "password-owner.test")["accessJwt"].(string)
	access := a["accessJwt"].(string)
	tampered := access[:len(access)-3] + flip(access[len(access)-3:])

	callers := []struct {
		name   string
		header map[string]string
	}{
		{"none", map[string]string{"Content-Type": "application/json"}},
		{"owner", bearer(access)},
		{"other account", bearer(b["accessJwt"].(string))},
		{"owner app password", bearer(appAccess)},
		{"owner expired", bearer(expiring)},
		{"owner tampered", bearer(tampered)},
		{"owner refresh as access", bearer(a["refreshJwt"].(string))},
		{"admin", map[string]string{"Content-Type": "application/json", "Authorization": basic("admin", "admin-secret")}},
	}
	record := `{"text":"matrix","createdAt":"2026-11-25T12:00:00Z"}`
	endpoints := []struct {
		name    string
		method  string
		nsid    string
		body    func(i int) string
		allowed map[string]bool
	}{
		{"createRecord", "POST", "com.atproto.repo.createRecord", func(i int) string {
			return fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","rkey":"m%d","record":%s}`, aDID, i, record)
		}, map[string]bool{"owner": true, "owner app password": true}},
		{"putRecord", "POST", "com.atproto.repo.putRecord", func(i int) string {
			return fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.actor.profile","rkey":"self","record":{"displayName":"m%d"}}`, aDID, i)
		}, map[string]bool{"owner": true, "owner app password": true}},
		{"applyWrites", "POST", "com.atproto.repo.applyWrites", func(i int) string {
			return fmt.Sprintf(`{"repo":%q,"writes":[{"$type":"com.atproto.repo.applyWrites#create","collection":"app.bsky.feed.post","rkey":"w%d","value":%s}]}`, aDID, i, record)
		}, map[string]bool{"owner": true, "owner app password": true}},
		{"deleteRecord", "POST", "com.atproto.repo.deleteRecord", func(i int) string {
			return fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","rkey":"w%d"}`, aDID, i)
		}, map[string]bool{"owner": true, "owner app password": true}},
		{"createAppPassword", "POST", "com.atproto.server.createAppPassword", func(i int) string {
			return fmt.Sprintf(`{"name":"m%d"}`, i)
		}, map[string]bool{"owner": true, "other account": true}},
		{"listAppPasswords", "GET", "com.atproto.server.listAppPasswords", nil,
			map[string]bool{"owner": true, "other account": true, "owner app password": true}},
		{"getSession", "GET", "com.atproto.server.getSession", nil,
			map[string]bool{"owner": true, "other account": true, "owner app password": true}},
		{"admin updateSubjectStatus", "POST", "com.atproto.admin.updateSubjectStatus", func(int) string {
			return fmt.Sprintf(`{"subject":{"$type":"com.atproto.admin.defs#repoRef","did":%q},"deactivated":{"applied":false}}`, aDID)
		}, map[string]bool{"admin": true}},
		{"admin getAccountInfo", "GET", "com.atproto.admin.getAccountInfo?did=" + aDID, nil, map[string]bool{"admin": true}},
		{"createInviteCode", "POST", "com.atproto.server.createInviteCode", func(int) string { return `{"useCount":1}` },
			map[string]bool{"admin": true}},
	}
	clock.Advance(accessTokenTTL + time.Minute) // expires every access token minted so far...
	// ...so mint fresh ones for the callers that must be valid, keeping "owner expired" stale.
	access = login(t, base, "owner.test", "password-owner.test")["accessJwt"].(string)
	callers[1].header = bearer(access)
	callers[2].header = bearer(login(t, base, "other.test", "password-other.test")["accessJwt"].(string))
	callers[3].header = bearer(login(t, base, "owner.test", appPass["password"].(string))["accessJwt"].(string))

	for i, ep := range endpoints {
		for j, c := range callers {
			body := ""
			if ep.body != nil {
				body = ep.body(i*100 + j)
			}
			status, out, _ := getJSON(t, ep.method, base+"/xrpc/"+ep.nsid, body, c.header)
			ok := status == 200
			if ok != ep.allowed[c.name] {
				t.Errorf("%s as %s = %d %v, allowed = %v", ep.name, c.name, status, out, ep.allowed[c.name])
				continue
			}
			if !ok && (status < 400 || status >= 500 || out["error"] == nil) {
				t.Errorf("%s as %s = %d %v, want a 4xx XRPC error", ep.name, c.name, status, out)
			}
			if c.name == "owner expired" && !ok && out["error"] != "ExpiredToken" && !strings.HasPrefix(ep.nsid, "com.atproto.admin") && ep.nsid != "com.atproto.server.createInviteCode" {
				t.Errorf("%s with an expired token = %v, want ExpiredToken", ep.name, out)
			}
		}
	}
	// B's writes never reached A's repo: A holds only what A wrote.
	_, list, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.repo.listRecords?repo="+aDID+"&collection=app.bsky.feed.post&limit=100", "", nil)
	for _, rec := range list["records"].([]any) {
		uri := rec.(map[string]any)["uri"].(string)
		rkey := uri[strings.LastIndex(uri, "/")+1:]
		// rkeys end in i*100+j, j the caller's index: 1 is the owner, 3 the owner's app password.
		num, _ := strconv.Atoi(strings.TrimLeft(rkey, "mw"))
		if j := num % 100; j != 1 && j != 3 {
			t.Errorf("A's repo holds %s, written by a caller other than A", uri)
		}
	}
}
