package node

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestDIDWebAccount: a person who hosts did:web on their own domain reserves a key, puts it
// and this PDS in their did.json, and signs up with that DID.
func TestDIDWebAccount(t *testing.T) {
	t.Parallel()
	n, base := testNode(t, func(c *Config) { c.Net.AllowPrivateNetwork = true })
	var doc atomic.Value
	doc.Store([]byte(`{}`))
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/did.json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc.Load().([]byte))
	}))
	defer site.Close()
	port := site.URL[strings.LastIndex(site.URL, ":")+1:]
	did := "did:web:localhost%3A" + port
	publish := func(keyDID, endpoint string) {
		d, _ := json.Marshal(map[string]any{
			"@context":    []string{"https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"},
			"id":          did,
			"alsoKnownAs": []string{"at://webby.test"},
			"verificationMethod": []map[string]string{{"id": did + "#atproto", "type": "Multikey", "controller": did,
				"publicKeyMultibase": strings.TrimPrefix(keyDID, "did:key:")}},
			"service": []map[string]string{{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": endpoint}},
		})
		doc.Store(d)
	}
	signup := fmt.Sprintf(`{"did":%q,"handle":"webby.test","password":"web-password"}`, did)
	h := map[string]string{"Content-Type": "application/json"}

	if status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAccount", signup, h); status != 400 {
		t.Errorf("createAccount before reserving a key = %d %v, want 400", status, out)
	}
	status, res, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.reserveSigningKey", `{"did":"`+did+`"}`, h)
	if status != 200 {
		t.Fatalf("reserveSigningKey = %d %v", status, res)
	}
	keyDID := res["signingKey"].(string)

	publish(keyDID, "https://elsewhere.example")
	if status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAccount", signup, h); status != 400 || out["error"] != "IncompatibleDidDoc" {
		t.Errorf("createAccount with a document naming another PDS = %d %v, want IncompatibleDidDoc", status, out)
	}
	publish(keyDID, n.PublicURL())
	status, sess, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAccount", signup, h)
	if status != 200 || sess["did"] != did || sess["active"] != true {
		t.Fatalf("createAccount for did:web = %d %v", status, sess)
	}
	if status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.createRecord",
		fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","record":{"text":"from my own domain","createdAt":"2026-11-25T12:00:00Z"}}`, did),
		bearer(sess["accessJwt"].(string))); status != 200 {
		t.Fatalf("createRecord = %d %v", status, out)
	}
	pub := signingKeyOf(t, n, did)
	if pub.DIDKey() != keyDID {
		t.Errorf("repo signing key %s, want the reserved %s", pub.DIDKey(), keyDID)
	}
}
