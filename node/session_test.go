package node

import (
	"database/sql"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// seedAccount stores an account directly, for tests of sessions that need no repository.
func seedAccount(t *testing.T, n *Node, did, handle, email, password string) {
	t.Helper()
	hash, err := hashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	err = n.db.Write(t.Context(), func(tx *sql.Tx) error {
		return insertAccount(t.Context(), tx, &account{DID: did, Handle: handle, Email: email, PasswordHash: hash,
			CreatedAt: timestamp(time.Now())})
	})
	if err != nil {
		t.Fatalf("insertAccount(%s) = %v", did, err)
	}
}

func bearer(tok string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
}

func login(t *testing.T, base, identifier, password string) map[string]any {
	t.Helper()
	status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession",
		`{"identifier":"`+identifier+`","password":"`+password+`"}`, map[string]string{"Content-Type": "application/json"})
	if status != 200 {
		t.Fatalf("createSession(%s) = %d %v", identifier, status, body)
	}
	return body
}

func TestSessionLifecycle(t *testing.T) {
	t.Parallel()
	n, base := testNode(t)
	seedAccount(t, n, "did:plc:alice", "alice.test", "alice@example.com", "correct horse")

	for _, id := range []string{"alice.test", "ALICE.test", "@alice.test", "did:plc:alice", "Alice@Example.com"} {
		login(t, base, id, "correct horse")
	}
	status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession",
		`{"identifier":"alice.test","password":"wrong"}`, map[string]string{"Content-Type": "application/json"})
	if status != 401 || body["error"] != "AuthenticationRequired" {
		t.Errorf("createSession with a wrong password = %d %v, want 401 AuthenticationRequired", status, body)
	}

	s := login(t, base, "alice.test", "correct horse")
	access, refresh := s["accessJwt"].(string), s["refreshJwt"].(string)
	if s["did"] != "did:plc:alice" || s["handle"] != "alice.test" || s["active"] != true {
		t.Errorf("createSession body = %v", s)
	}
	status, body, _ = getJSON(t, "GET", base+"/xrpc/com.atproto.server.getSession", "", bearer(access))
	if status != 200 || body["did"] != "did:plc:alice" || body["email"] != "alice@example.com" {
		t.Errorf("getSession = %d %v", status, body)
	}

	// Rotation: the new refresh token works; the old one, within its grace window, yields the
	// same successor.
	status, r1, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(refresh))
	if status != 200 {
		t.Fatalf("refreshSession = %d %v", status, r1)
	}
	status, r1again, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(refresh))
	if status != 200 || r1again["refreshJwt"] == nil {
		t.Fatalf("refreshSession retry in grace = %d %v", status, r1again)
	}
	if sameJTI(t, r1["refreshJwt"].(string), r1again["refreshJwt"].(string)) == false {
		t.Error("a retried refresh within the grace window gave a different successor")
	}
	newRefresh := r1["refreshJwt"].(string)

	// deleteSession with the newest token ends the whole chain, old tokens included.
	status, _, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.deleteSession", "", bearer(newRefresh))
	if status != 200 {
		t.Fatalf("deleteSession = %d", status)
	}
	for name, tok := range map[string]string{"new": newRefresh, "old": refresh} {
		status, body, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(tok))
		if status != 401 || body["error"] != "InvalidToken" {
			t.Errorf("refreshSession with the %s token after deleteSession = %d %v, want 401 InvalidToken", name, status, body)
		}
	}
}

func sameJTI(t *testing.T, a, b string) bool {
	t.Helper()
	payload := func(tok string) string {
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("token %q is not a JWT", tok)
		}
		p, _ := base64.RawURLEncoding.DecodeString(parts[1])
		return string(p)
	}
	jti := func(p string) string {
		_, rest, _ := strings.Cut(p, `"jti":"`)
		id, _, _ := strings.Cut(rest, `"`)
		return id
	}
	return jti(payload(a)) != "" && jti(payload(a)) == jti(payload(b))
}

func TestRefreshReuseAfterGraceRevokesTheChain(t *testing.T) {
	t.Parallel()
	n, base, clock := testNodeClock(t)
	seedAccount(t, n, "did:plc:bob", "bob.test", "", "pw-bob-123")
	s := login(t, base, "bob.test", "pw-bob-123")
	old := s["refreshJwt"].(string)
	_, r1, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(old))
	clock.Advance(refreshGrace + time.Minute)
	status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(old))
	if status != 401 || body["error"] != "InvalidToken" {
		t.Errorf("reuse after grace = %d %v, want 401 InvalidToken", status, body)
	}
	status, _, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(r1["refreshJwt"].(string)))
	if status != 401 {
		t.Errorf("successor after reuse detection = %d, want 401 (chain revoked)", status)
	}
}

func TestExpiredAndForgedTokens(t *testing.T) {
	t.Parallel()
	n, base, clock := testNodeClock(t)
	seedAccount(t, n, "did:plc:carol", "carol.test", "", "pw-carol-123")
	s := login(t, base, "carol.test", "pw-carol-123")
	access, refresh := s["accessJwt"].(string), s["refreshJwt"].(string)

	tampered := access[:len(access)-4] + flip(access[len(access)-4:])
	tests := []struct {
		name       string
		token      string
		wantStatus int
		wantError  string
	}{
		{"no token", "", 401, "AuthMissing"},
		{"garbage", "not-a-jwt", 401, "InvalidToken"},
		{"tampered signature", tampered, 401, "InvalidToken"},
		{"refresh used as access", refresh, 401, "InvalidToken"},
	}
	for _, tt := range tests {
		h := map[string]string{}
		if tt.token != "" {
			h = bearer(tt.token)
		}
		status, body, hdr := getJSON(t, "GET", base+"/xrpc/com.atproto.server.getSession", "", h)
		if status != tt.wantStatus || body["error"] != tt.wantError {
			t.Errorf("%s: getSession = %d %v, want %d %s", tt.name, status, body, tt.wantStatus, tt.wantError)
		}
		if status == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tt.name)
		}
	}
	status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(access))
	if status != 401 || body["error"] != "InvalidToken" {
		t.Errorf("access token used to refresh = %d %v, want 401 InvalidToken", status, body)
	}
	clock.Advance(accessTokenTTL + time.Minute)
	status, body, _ = getJSON(t, "GET", base+"/xrpc/com.atproto.server.getSession", "", bearer(access))
	if status != 400 || body["error"] != "ExpiredToken" {
		t.Errorf("expired access token = %d %v, want 400 ExpiredToken", status, body)
	}
	// The refresh token still works after the access token expired.
	status, _, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(refresh))
	if status != 200 {
		t.Errorf("refresh after access expiry = %d, want 200", status)
	}
}

func flip(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}

func TestAppPasswords(t *testing.T) {
	t.Parallel()
	n, base := testNode(t)
	seedAccount(t, n, "did:plc:dan", "dan.test", "", "pw-dan-123")
	full := login(t, base, "dan.test", "pw-dan-123")["accessJwt"].(string)

	status, created, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAppPassword", `{"name":"phone"}`, bearer(full))
	if status != 200 || !looksLikeAppPassword(created["password"].(string)) {
		t.Fatalf("createAppPassword = %d %v", status, created)
	}
	status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAppPassword", `{"name":"phone"}`, bearer(full))
	if status != 400 {
		t.Errorf("duplicate app password name = %d %v, want 400", status, body)
	}
	appSession := login(t, base, "dan.test", created["password"].(string))
	appAccess := appSession["accessJwt"].(string)

	// App-password sessions read but cannot manage the account.
	if status, _, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.server.getSession", "", bearer(appAccess)); status != 200 {
		t.Errorf("getSession with an app password = %d, want 200", status)
	}
	status, body, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAppPassword", `{"name":"x"}`, bearer(appAccess))
	if status != 400 || body["error"] != "InvalidToken" {
		t.Errorf("createAppPassword with an app password = %d %v, want 400 InvalidToken", status, body)
	}
	status, list, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.server.listAppPasswords", "", bearer(full))
	if status != 200 || len(list["passwords"].([]any)) != 1 || strings.Contains(toJSON(list), created["password"].(string)) {
		t.Errorf("listAppPasswords = %d %v", status, list)
	}
	getJSON(t, "POST", base+"/xrpc/com.atproto.server.revokeAppPassword", `{"name":"phone"}`, bearer(full))
	status, _, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.refreshSession", "", bearer(appSession["refreshJwt"].(string)))
	if status != 401 {
		t.Errorf("refresh of a revoked app password's session = %d, want 401", status)
	}
	status, _, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.createSession",
		`{"identifier":"dan.test","password":"`+created["password"].(string)+`"}`, map[string]string{"Content-Type": "application/json"})
	if status != 401 {
		t.Errorf("login with a revoked app password = %d, want 401", status)
	}
}

func TestInviteCodesNeedAdmin(t *testing.T) {
	t.Parallel()
	n, base := testNode(t)
	seedAccount(t, n, "did:plc:erin", "erin.test", "", "pw-erin-123")
	user := login(t, base, "erin.test", "pw-erin-123")["accessJwt"].(string)
	body := `{"useCount":2,"forAccount":"did:plc:erin"}`
	for name, h := range map[string]map[string]string{
		"none":      {"Content-Type": "application/json"},
		"user":      bearer(user),
		"bad admin": {"Content-Type": "application/json", "Authorization": basic("admin", "nope")},
	} {
		if status, _, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createInviteCode", body, h); status != 401 {
			t.Errorf("createInviteCode as %s = %d, want 401", name, status)
		}
	}
	status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createInviteCode", body,
		map[string]string{"Content-Type": "application/json", "Authorization": basic("admin", "admin-secret")})
	if status != 200 || !strings.HasPrefix(out["code"].(string), "localhost-") {
		t.Fatalf("createInviteCode as admin = %d %v", status, out)
	}
	status, codes, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.server.getAccountInviteCodes", "", bearer(user))
	if status != 200 || len(codes["codes"].([]any)) != 1 {
		t.Errorf("getAccountInviteCodes = %d %v", status, codes)
	}
}

func basic(user, pass string) string {
	req, _ := http.NewRequest("GET", "http://x", nil)
	req.SetBasicAuth(user, pass)
	return req.Header.Get("Authorization")
}

func TestDescribeServer(t *testing.T) {
	t.Parallel()
	_, base := testNode(t, func(c *Config) { c.Accounts.ContactEmail = "ops@example.com" })
	status, body, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.server.describeServer", "", nil)
	if status != 200 || body["did"] != "did:web:localhost" || body["inviteCodeRequired"] != false {
		t.Errorf("describeServer = %d %v", status, body)
	}
	if body["blobUploadLimit"] != float64(100<<20) {
		t.Errorf("blobUploadLimit = %v, want 100 MiB", body["blobUploadLimit"])
	}
	if d := body["availableUserDomains"].([]any); len(d) != 1 || d[0] != ".test" {
		t.Errorf("availableUserDomains = %v, want [.test]", d)
	}
	if body["contact"].(map[string]any)["email"] != "ops@example.com" {
		t.Errorf("contact = %v", body["contact"])
	}
}
