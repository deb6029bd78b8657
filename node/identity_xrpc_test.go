package node

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/coder/websocket"

	"github.com/aerie-social/aerie/node/identity"
)

// fakeDNS answers _atproto TXT lookups from a map the test fills; anything else is NXDOMAIN.
type fakeDNS struct {
	mu      sync.Mutex
	records map[string][]string
}

func (d *fakeDNS) set(name string, records ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.records == nil {
		d.records = map[string][]string{}
	}
	d.records[name] = records
}

func (d *fakeDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if rs, ok := d.records[name]; ok {
		return rs, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// noNetwork is the outbound transport of identity tests: nothing outside the process.
type noNetwork struct{}

func (noNetwork) RoundTrip(req *http.Request) (*http.Response, error) {
	return nil, errors.New("tests do not reach the network: " + req.URL.String())
}

// identityTestServer serves n's routes over real HTTP with an identity service whose DNS is
// dns and which has no network; the embedded PLC directory is still read in process.
func identityTestServer(t *testing.T, n *Node, dns *fakeDNS) (*identityService, string) {
	t.Helper()
	ids := newIdentityService(n, identityOptions{DNS: dns, HTTPClient: &http.Client{Transport: noNetwork{}, Timeout: 10 * time.Second}})
	srv := httptest.NewServer(n.routesWith(ids))
	t.Cleanup(srv.Close)
	return ids, srv.URL
}

// plcDocument reads did's DID document from the node's PLC directory.
func plcDocument(t *testing.T, n *Node, did string) identity.Document {
	t.Helper()
	raw, err := n.plc.Document(t.Context(), syntax.DID(did))
	if err != nil {
		t.Fatalf("plc.Document(%s) = %v", did, err)
	}
	var doc identity.Document
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// waitIdentity reads the firehose until an #identity event for did with handle arrives.
func waitIdentity(t *testing.T, ctx context.Context, conn *websocket.Conn, did, handle string) {
	t.Helper()
	for {
		ev := readFrames(t, ctx, conn, 1)[0]
		if ev.Identity != nil && ev.Identity.Did == did && ev.Identity.Handle != nil && *ev.Identity.Handle == handle {
			return
		}
	}
}

// firehose dials base's subscribeRepos from the start of the log.
func firehose(t *testing.T, ctx context.Context, base string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	if err != nil {
		t.Fatalf("dial firehose: %v", err)
	}
	conn.SetReadLimit(5 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

func TestResolveHandle(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	dns := &fakeDNS{}
	_, base := identityTestServer(t, n, dns)
	alice := createTestAccount(t, base, "alice.test")["did"].(string)
	// An external handle whose DNS names alice, though her document does not claim it back.
	dns.set("_atproto.claims-alice.example.com", "did="+alice)

	tests := []struct {
		name       string
		handle     string
		wantStatus int
		want       string // did, or error name
	}{
		{"local", "alice.test", 200, alice},
		{"local, other case", "ALICE.Test", 200, alice},
		{"unknown under our domain", "nobody.test", 400, "HandleNotFound"},
		{"unknown external", "nobody.example.com", 400, "HandleNotFound"},
		{"external not claimed back", "claims-alice.example.com", 400, "HandleNotFound"},
		{"invalid", "not a handle", 400, "InvalidRequest"},
		{"missing", "", 400, "InvalidRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, body, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.identity.resolveHandle?handle="+url.QueryEscape(tt.handle), "", nil)
			got := body["did"]
			if status != 200 {
				got = body["error"]
			}
			if status != tt.wantStatus || got != tt.want {
				t.Errorf("resolveHandle(%q) = %d %v, want %d %s", tt.handle, status, body, tt.wantStatus, tt.want)
			}
		})
	}
}

func TestResolveDidAndIdentity(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	_, base := identityTestServer(t, n, &fakeDNS{})
	alice := createTestAccount(t, base, "alice.test")["did"].(string)

	status, body, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.identity.resolveDid?did="+alice, "", nil)
	doc, _ := body["didDoc"].(map[string]any)
	if status != 200 || doc["id"] != alice {
		t.Errorf("resolveDid(%s) = %d %v", alice, status, body)
	}
	status, body, _ = getJSON(t, "GET", base+"/xrpc/com.atproto.identity.resolveDid?did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "", nil)
	if status != 400 || body["error"] != "DidNotFound" {
		t.Errorf("resolveDid(unknown) = %d %v, want 400 DidNotFound", status, body)
	}
	status, body, _ = getJSON(t, "GET", base+"/xrpc/com.atproto.identity.resolveDid?did=did:key:zQ3shunBKsXixLxKtC5qeSG9E4J5RkGN57im31pcTzbNQnm5w", "", nil)
	if status != 400 || body["error"] != "InvalidRequest" {
		t.Errorf("resolveDid(did:key) = %d %v, want 400 InvalidRequest", status, body)
	}

	for _, id := range []string{"alice.test", alice} {
		for _, call := range []struct{ method, path, body string }{
			{"GET", "/xrpc/com.atproto.identity.resolveIdentity?identifier=" + id, ""},
			{"POST", "/xrpc/com.atproto.identity.refreshIdentity", `{"identifier":"` + id + `"}`},
		} {
			status, body, _ := getJSON(t, call.method, base+call.path, call.body, map[string]string{"Content-Type": "application/json"})
			doc, _ := body["didDoc"].(map[string]any)
			if status != 200 || body["did"] != alice || body["handle"] != "alice.test" || doc["id"] != alice {
				t.Errorf("%s %s (%s) = %d %v", call.method, call.path, id, status, body)
			}
		}
	}
	status, body, _ = getJSON(t, "GET", base+"/xrpc/com.atproto.identity.resolveIdentity?identifier=nobody.test", "", nil)
	if status != 400 || body["error"] != "HandleNotFound" {
		t.Errorf("resolveIdentity(nobody.test) = %d %v, want 400 HandleNotFound", status, body)
	}
}

func TestUpdateHandle(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	dns := &fakeDNS{}
	_, base := identityTestServer(t, n, dns)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	alice := createTestAccount(t, base, "alice.test")
	did, access := alice["did"].(string), alice["accessJwt"].(string)
	createTestAccount(t, base, "bob.test")
	conn := firehose(t, ctx, base)

	update := func(handle string) (int, map[string]any) {
		status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.identity.updateHandle", `{"handle":"`+handle+`"}`, bearer(access))
		return status, body
	}
	checkHandle := func(handle string) {
		t.Helper()
		if doc := plcDocument(t, n, did); len(doc.AlsoKnownAs) != 1 || doc.AlsoKnownAs[0] != "at://"+handle {
			t.Errorf("PLC alsoKnownAs = %v, want [at://%s]", doc.AlsoKnownAs, handle)
		}
		acct, err := n.accountByDID(ctx, did)
		if err != nil || acct.Handle != handle {
			t.Errorf("account handle = %v, %v; want %s", acct, err, handle)
		}
		status, body, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.identity.resolveHandle?handle="+handle, "", nil)
		if status != 200 || body["did"] != did {
			t.Errorf("resolveHandle(%s) = %d %v, want %s", handle, status, body, did)
		}
	}

	// To another handle under our domain: PLC, account row, firehose, resolution.
	if status, body := update("Alice2.test"); status != 200 {
		t.Fatalf("updateHandle(alice2.test) = %d %v", status, body)
	}
	checkHandle("alice2.test")
	waitIdentity(t, ctx, conn, did, "alice2.test")
	status, body, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.identity.resolveHandle?handle=alice.test", "", nil)
	if status != 400 || body["error"] != "HandleNotFound" {
		t.Errorf("resolveHandle(old handle) = %d %v, want 400 HandleNotFound", status, body)
	}

	refused := []struct {
		name, handle, wantError string
	}{
		{"taken", "bob.test", "InvalidRequest"},
		{"too short under our domain", "ab.test", "InvalidHandle"},
		{"nested under our domain", "a.b.test", "InvalidHandle"},
		{"external without proof", "alice.example.com", "InvalidRequest"},
		{"external proving another DID", "bob.example.com", "InvalidRequest"},
		{"disallowed TLD", "alice.local", "InvalidHandle"},
		{"invalid", "-alice-", "InvalidHandle"},
	}
	dns.set("_atproto.bob.example.com", "did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
	for _, tt := range refused {
		if status, body := update(tt.handle); status != 400 || body["error"] != tt.wantError {
			t.Errorf("updateHandle(%s) [%s] = %d %v, want 400 %s", tt.handle, tt.name, status, body, tt.wantError)
		}
	}
	checkHandle("alice2.test") // nothing refused changed anything

	// A domain that proves itself by DNS TXT.
	dns.set("_atproto.alice.example.com", "did="+did)
	if status, body := update("alice.example.com"); status != 200 {
		t.Fatalf("updateHandle(alice.example.com) with DNS proof = %d %v", status, body)
	}
	checkHandle("alice.example.com")
	waitIdentity(t, ctx, conn, did, "alice.example.com")
	status, body, _ = getJSON(t, "GET", base+"/xrpc/com.atproto.identity.resolveIdentity?identifier="+did, "", nil)
	if status != 200 || body["handle"] != "alice.example.com" {
		t.Errorf("resolveIdentity after update = %d %v, want handle alice.example.com", status, body)
	}

	// The same handle again is accepted and announced again.
	if status, body := update("alice.example.com"); status != 200 {
		t.Errorf("updateHandle(current handle) = %d %v", status, body)
	}
	waitIdentity(t, ctx, conn, did, "alice.example.com")
}

func TestUpdateHandleAuthAndRateLimit(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	_, base := identityTestServer(t, n, &fakeDNS{})
	alice := createTestAccount(t, base, "alice.test")
	_, appPass, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAppPassword", `{"name":"phone"}`, bearer(alice["accessJwt"].(string)))
	appAccess := login(t, base, "alice.test", appPass["password"].(string))["accessJwt"].(string)

	status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.identity.updateHandle", `{"handle":"alice2.test"}`, nil)
	if status != 401 {
		t.Errorf("updateHandle without a token = %d %v, want 401", status, body)
	}
	status, body, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.identity.updateHandle", `{"handle":"alice2.test"}`, bearer(appAccess))
	if status != 400 || body["error"] != "InvalidToken" {
		t.Errorf("updateHandle with an unprivileged app password = %d %v, want 400 InvalidToken", status, body)
	}
	var last int
	for range limitUpdateHandle5m.Max + 1 {
		last, _, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.identity.updateHandle", `{"handle":"alice.test"}`, bearer(alice["accessJwt"].(string)))
	}
	if last != http.StatusTooManyRequests {
		t.Errorf("updateHandle call %d in 5 minutes = %d, want 429", limitUpdateHandle5m.Max+1, last)
	}
}

func TestPLCOperationFlow(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	_, base := identityTestServer(t, n, &fakeDNS{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	alice := createTestAccount(t, base, "alice.test")
	did, access := alice["did"].(string), alice["accessJwt"].(string)
	conn := firehose(t, ctx, base)

	status, creds, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.identity.getRecommendedDidCredentials", "", bearer(access))
	st, err := n.plcDir.State(ctx, syntax.DID(did))
	if err != nil {
		t.Fatal(err)
	}
	if status != 200 || toJSON(creds["rotationKeys"]) != toJSON(st.RotationKeys) ||
		toJSON(creds["verificationMethods"]) != toJSON(st.VerificationMethods) ||
		toJSON(creds["alsoKnownAs"]) != `["at://alice.test"]` ||
		!strings.Contains(toJSON(creds["services"]), n.PublicURL()) {
		t.Errorf("getRecommendedDidCredentials = %d %v, want the current PLC state %+v", status, creds, st)
	}

	sign := func(body string) (int, map[string]any) {
		if status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.identity.requestPlcOperationSignature", "", bearer(access)); status != 200 {
			t.Fatalf("requestPlcOperationSignature = %d %v", status, body)
		}
		token := emailToken(t, n, purposePLCOperation, did)
		status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.identity.signPlcOperation",
			strings.Replace(body, "TOKEN", token, 1), bearer(access))
		return status, out
	}
	submit := func(op any) (int, map[string]any) {
		status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.identity.submitPlcOperation",
			`{"operation":`+toJSON(op)+`}`, bearer(access))
		return status, out
	}

	// The user adds a recovery key of their own, ahead of the server's.
	userKey, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	userPub, _ := userKey.PublicKey()
	rotation := []string{userPub.DIDKey(), st.RotationKeys[0]}
	status, out := sign(`{"token":"TOKEN","rotationKeys":` + toJSON(rotation) + `}`)
	if status != 200 {
		t.Fatalf("signPlcOperation = %d %v", status, out)
	}
	op, err := identity.ParseOperation([]byte(toJSON(out["operation"])))
	if err != nil {
		t.Fatalf("ParseOperation(signed op) = %v", err)
	}
	if i, err := op.VerifySignature(st.RotationKeys); err != nil || i != 0 {
		t.Errorf("signed op VerifySignature = %d, %v; want signed by the server key", i, err)
	}
	if !slices.Equal(op.RotationKeys, rotation) || !slices.Equal(op.AlsoKnownAs, st.AlsoKnownAs) {
		t.Errorf("signed op = %+v, want rotation keys %v and the rest unchanged", op, rotation)
	}
	// Signing does not submit.
	if now, _ := n.plcDir.State(ctx, syntax.DID(did)); !slices.Equal(now.RotationKeys, st.RotationKeys) {
		t.Errorf("PLC state changed before submitPlcOperation: %v", now.RotationKeys)
	}
	if status, out := submit(out["operation"]); status != 200 {
		t.Fatalf("submitPlcOperation = %d %v", status, out)
	}
	if now, _ := n.plcDir.State(ctx, syntax.DID(did)); !slices.Equal(now.RotationKeys, rotation) {
		t.Errorf("PLC rotation keys after submit = %v, want %v", now.RotationKeys, rotation)
	}
	waitIdentity(t, ctx, conn, did, "alice.test")

	// The token is single-use, and required.
	status, out, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.identity.signPlcOperation", `{"token":"AAAAA-BBBBB"}`, bearer(access))
	if status != 400 || out["error"] != "InvalidToken" {
		t.Errorf("signPlcOperation with a wrong token = %d %v, want 400 InvalidToken", status, out)
	}
	status, out, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.identity.signPlcOperation", `{}`, bearer(access))
	if status != 400 || out["error"] != "InvalidRequest" {
		t.Errorf("signPlcOperation without a token = %d %v, want 400 InvalidRequest", status, out)
	}

	// Operations that would take the account away from this PDS are signed (they are the
	// old PDS's half of a migration) but not submitted here.
	refused := []struct {
		name, body, wantMessage string
	}{
		{"drops our rotation key", `{"token":"TOKEN","rotationKeys":["` + userPub.DIDKey() + `"]}`, "Rotation keys do not include server's rotation key"},
		{"other endpoint", `{"token":"TOKEN","services":{"atproto_pds":{"type":"AtprotoPersonalDataServer","endpoint":"https://elsewhere.example.com"}}}`, "Incorrect endpoint on atproto_pds service"},
		{"other signing key", `{"token":"TOKEN","verificationMethods":{"atproto":"` + userPub.DIDKey() + `"}}`, "Incorrect signing key"},
		{"other handle", `{"token":"TOKEN","alsoKnownAs":["at://someone.test"]}`, "Incorrect handle in alsoKnownAs"},
	}
	for _, tt := range refused {
		status, out := sign(tt.body)
		if status != 200 {
			t.Fatalf("signPlcOperation [%s] = %d %v", tt.name, status, out)
		}
		status, out = submit(out["operation"])
		if status != 400 || out["message"] != tt.wantMessage {
			t.Errorf("submitPlcOperation [%s] = %d %v, want 400 %q", tt.name, status, out, tt.wantMessage)
		}
	}
	status, out = submit(map[string]any{"type": "plc_tombstone", "prev": op.Prev, "sig": op.Sig})
	if status != 400 || out["error"] != "InvalidRequest" {
		t.Errorf("submitPlcOperation(tombstone) = %d %v, want 400 InvalidRequest", status, out)
	}
	status, out = submit("not an operation")
	if status != 400 || out["error"] != "InvalidRequest" {
		t.Errorf("submitPlcOperation(garbage) = %d %v, want 400 InvalidRequest", status, out)
	}
	// A stale operation (its prev is no longer the head) is refused by the directory.
	stale := map[string]any{}
	json.Unmarshal([]byte(toJSON(op)), &stale)
	if status, out := submit(stale); status != 400 || out["error"] != "InvalidRequest" {
		t.Errorf("submitPlcOperation(replayed op) = %d %v, want 400 InvalidRequest", status, out)
	}
}

func TestReserveSigningKey(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	_, base := identityTestServer(t, n, &fakeDNS{})

	status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.reserveSigningKey", "", nil)
	anon, _ := body["signingKey"].(string)
	if _, err := atcrypto.ParsePublicDIDKey(anon); status != 200 || err != nil {
		t.Fatalf("reserveSigningKey() = %d %v (%v)", status, body, err)
	}
	const did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	var keys []string
	for range 2 {
		status, body, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.reserveSigningKey", `{"did":"`+did+`"}`,
			map[string]string{"Content-Type": "application/json"})
		if status != 200 {
			t.Fatalf("reserveSigningKey(%s) = %d %v", did, status, body)
		}
		keys = append(keys, body["signingKey"].(string))
	}
	if keys[0] != keys[1] || keys[0] == anon {
		t.Errorf("reserveSigningKey(%s) twice = %v, want the same key, not %s", did, keys, anon)
	}
	status, body, _ = getJSON(t, "POST", base+"/xrpc/com.atproto.server.reserveSigningKey", `{"did":"nope"}`, map[string]string{"Content-Type": "application/json"})
	if status != 400 {
		t.Errorf("reserveSigningKey(bad did) = %d %v, want 400", status, body)
	}

	for _, tt := range []struct{ id, want string }{{did, keys[0]}, {anon, anon}} {
		key, ok, err := n.takeReservedKey(t.Context(), tt.id)
		if err != nil || !ok {
			t.Fatalf("takeReservedKey(%s) = %v, %v", tt.id, ok, err)
		}
		if pub, _ := key.PublicKey(); pub.DIDKey() != tt.want {
			t.Errorf("takeReservedKey(%s) key = %s, want %s", tt.id, pub.DIDKey(), tt.want)
		}
		if _, ok, err := n.takeReservedKey(t.Context(), tt.id); ok || err != nil {
			t.Errorf("takeReservedKey(%s) again = %v, %v; want none", tt.id, ok, err)
		}
	}
}

func TestWithHandle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"empty", nil, []string{"at://new.test"}},
		{"replaces the old handle", []string{"at://old.test"}, []string{"at://new.test"}},
		{"keeps other URIs in order", []string{"https://a.example", "at://old.test", "https://b.example"},
			[]string{"at://new.test", "https://a.example", "https://b.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := withHandle(tt.in, "new.test"); !slices.Equal(got, tt.want) {
				t.Errorf("withHandle(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
