package node

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
)

// getWithHost fetches url with the Host header host and returns the status, content type
// and body.
func getWithHost(t *testing.T, url, host string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s) = %v", url, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestWellKnownAtprotoDID(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	_, base := identityTestServer(t, n, &fakeDNS{})
	alice := createTestAccount(t, base, "alice.test")["did"].(string)
	bob := createTestAccount(t, base, "bob.test")
	if status, _, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.deactivateAccount", `{}`, bearer(bob["accessJwt"].(string))); status != 200 {
		t.Fatalf("deactivateAccount(bob) = %d", status)
	}

	tests := []struct {
		name, host string
		wantStatus int
		wantBody   string
	}{
		{"handle", "alice.test", 200, alice},
		{"handle with port and capitals", "Alice.Test:8443", 200, alice},
		{"unknown handle", "carol.test", 404, "User not found"},
		{"deactivated account", "bob.test", 404, "User not found"},
		{"not a handle", "127.0.0.1", 404, "User not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, ct, body := getWithHost(t, base+"/.well-known/atproto-did", tt.host)
			if status != tt.wantStatus || body != tt.wantBody || !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("GET /.well-known/atproto-did (Host %s) = %d %q %q, want %d %q text/plain", tt.host, status, ct, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

func TestWellKnownDIDJSON(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	_, base := identityTestServer(t, n, &fakeDNS{})

	var docs []string
	for range 2 {
		status, ct, body := getWithHost(t, base+"/.well-known/did.json", n.cfg.Hostname)
		if status != 200 || !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("GET /.well-known/did.json = %d %q %s", status, ct, body)
		}
		docs = append(docs, body)
	}
	if docs[0] != docs[1] {
		t.Errorf("the service DID document changed between requests:\n%s\n%s", docs[0], docs[1])
	}
	var doc struct {
		ID                 string `json:"id"`
		VerificationMethod []struct {
			ID                 string `json:"id"`
			PublicKeyMultibase string `json:"publicKeyMultibase"`
		} `json:"verificationMethod"`
		Service []struct {
			ID              string `json:"id"`
			Type            string `json:"type"`
			ServiceEndpoint string `json:"serviceEndpoint"`
		} `json:"service"`
	}
	if err := json.Unmarshal([]byte(docs[0]), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.ID != n.serviceDID() {
		t.Errorf("did.json id = %q, want %q", doc.ID, n.serviceDID())
	}
	if len(doc.VerificationMethod) != 1 || doc.VerificationMethod[0].ID != n.serviceDID()+"#atproto" {
		t.Fatalf("did.json verificationMethod = %+v", doc.VerificationMethod)
	}
	if _, err := atcrypto.ParsePublicMultibase(doc.VerificationMethod[0].PublicKeyMultibase); err != nil {
		t.Errorf("did.json #atproto key does not parse: %v", err)
	}
	services := map[string]string{}
	for _, s := range doc.Service {
		services[s.ID+" "+s.Type] = s.ServiceEndpoint
	}
	for _, want := range []string{"#atproto_pds AtprotoPersonalDataServer", "#bsky_appview BskyAppView"} {
		if services[want] != n.PublicURL() {
			t.Errorf("did.json service %s = %q, want %s", want, services[want], n.PublicURL())
		}
	}
}
