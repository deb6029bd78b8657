package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	indigorepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/coder/websocket"
)

// TestAccountMigratesBetweenNodes moves an account from node A to node B the way the
// migration guide does it (atproto-reference §8.5), over both nodes' XRPC APIs, with
// one PLC directory shared between them.
func TestAccountMigratesBetweenNodes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, baseA := testNode(t, func(c *Config) {
		c.PLC.Listen = "127.0.0.1:0"
		c.Net.AllowPrivateNetwork = true
	})
	plcURL := "http://" + a.PLCAddr().String()
	b, baseB := testNode(t, func(c *Config) {
		c.PLC.URL = plcURL
		c.Net.AllowPrivateNetwork = true
	})

	old := createTestAccount(t, baseA, "mover.test")
	did, oldAccess := old["did"].(string), old["accessJwt"].(string)
	for i := range 3 {
		if status, out, _ := getJSON(t, "POST", baseA+"/xrpc/com.atproto.repo.createRecord",
			fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","rkey":"p%d","record":{"text":"before the move %d","createdAt":"2026-11-25T12:00:00Z"}}`, did, i, i),
			bearer(oldAccess)); status != 200 {
			t.Fatalf("createRecord on A = %d %v", status, out)
		}
	}

	// 1. A service JWT from the old PDS proves control of the DID to the new one.
	status, sa, _ := getJSON(t, "GET", baseA+"/xrpc/com.atproto.server.getServiceAuth?aud="+url.QueryEscape("did:web:localhost")+
		"&lxm=com.atproto.server.createAccount", "", bearer(oldAccess))
	if status != 200 {
		t.Fatalf("getServiceAuth on A = %d %v", status, sa)
	}
	// Without it, nobody can claim the DID on B.
	status, out, _ := getJSON(t, "POST", baseB+"/xrpc/com.atproto.server.createAccount",
		fmt.Sprintf(`{"did":%q,"handle":"mover.test","password":"new-node-password"}`, did), map[string]string{"Content-Type": "application/json"})
	if status != 401 {
		t.Errorf("createAccount for an existing DID without a service JWT = %d %v, want 401", status, out)
	}
	status, created, _ := getJSON(t, "POST", baseB+"/xrpc/com.atproto.server.createAccount",
		fmt.Sprintf(`{"did":%q,"handle":"mover.test","password":"new-node-password"}`, did), bearer(sa["token"].(string)))
	if status != 200 || created["did"] != did || created["active"] != false {
		t.Fatalf("migration createAccount on B = %d %v", status, created)
	}
	newAccess := created["accessJwt"].(string)

	// 2. The repository moves: export from A, import into B.
	resp, err := http.Get(baseA + "/xrpc/com.atproto.sync.getRepo?did=" + did)
	if err != nil {
		t.Fatal(err)
	}
	car, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	req, _ := http.NewRequest("POST", baseB+"/xrpc/com.atproto.repo.importRepo", bytes.NewReader(car))
	req.Header.Set("Content-Type", "application/vnd.ipld.car")
	req.Header.Set("Authorization", "Bearer "+newAccess)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("importRepo on B = %d %s %v", resp.StatusCode, b, err)
	}
	resp.Body.Close()
	// Activation before the identity points at B is refused.
	if status, out, _ := getJSON(t, "POST", baseB+"/xrpc/com.atproto.server.activateAccount", "", bearer(newAccess)); status != 400 {
		t.Errorf("activateAccount before the PLC update = %d %v, want 400", status, out)
	}

	// 3. The identity moves: B recommends credentials, A signs them, B submits.
	status, creds, _ := getJSON(t, "GET", baseB+"/xrpc/com.atproto.identity.getRecommendedDidCredentials", "", bearer(newAccess))
	if status != 200 {
		t.Fatalf("getRecommendedDidCredentials on B = %d %v", status, creds)
	}
	getJSON(t, "POST", baseA+"/xrpc/com.atproto.identity.requestPlcOperationSignature", "", bearer(oldAccess))
	creds["token"] = emailToken(t, a, purposePLCOperation, did)
	status, signed, _ := getJSON(t, "POST", baseA+"/xrpc/com.atproto.identity.signPlcOperation", toJSON(creds), bearer(oldAccess))
	if status != 200 {
		t.Fatalf("signPlcOperation on A = %d %v", status, signed)
	}
	status, out, _ = getJSON(t, "POST", baseB+"/xrpc/com.atproto.identity.submitPlcOperation", toJSON(signed), bearer(newAccess))
	if status != 200 {
		t.Fatalf("submitPlcOperation on B = %d %v", status, out)
	}

	// 4. B goes live, A steps back.
	if status, out, _ := getJSON(t, "POST", baseB+"/xrpc/com.atproto.server.activateAccount", "", bearer(newAccess)); status != 200 {
		t.Fatalf("activateAccount on B = %d %v", status, out)
	}
	if status, out, _ := getJSON(t, "POST", baseA+"/xrpc/com.atproto.server.deactivateAccount", "{}", bearer(oldAccess)); status != 200 {
		t.Fatalf("deactivateAccount on A = %d %v", status, out)
	}

	// The records came along, and a new write on B verifies with the key the DID now names.
	status, list, _ := getJSON(t, "GET", baseB+"/xrpc/com.atproto.repo.listRecords?repo="+did+"&collection=app.bsky.feed.post", "", nil)
	if status != 200 || len(list["records"].([]any)) != 3 {
		t.Errorf("listRecords on B = %d %v, want the 3 posts", status, list)
	}
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(baseB, "http")+"/xrpc/com.atproto.sync.subscribeRepos", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(5 << 20)
	if status, out, _ := getJSON(t, "POST", baseB+"/xrpc/com.atproto.repo.createRecord",
		fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","record":{"text":"after the move","createdAt":"2026-11-25T13:00:00Z"}}`, did),
		bearer(newAccess)); status != 200 {
		t.Fatalf("createRecord on B = %d %v", status, out)
	}
	ev := readFrames(t, ctx, conn, 1)[0]
	if ev.Commit == nil {
		t.Fatalf("first live event on B is %s, want #commit", ev.Kind())
	}
	if _, err := indigorepo.VerifyCommitMessage(ctx, ev.Commit); err != nil {
		t.Errorf("VerifyCommitMessage after migration = %v", err)
	}
	commit, _, err := indigorepo.LoadCommitFromCAR(ctx, bytes.NewReader(ev.Commit.Blocks))
	if err != nil {
		t.Fatal(err)
	}
	if err := commit.VerifySignature(signingKeyOf(t, b, did)); err != nil {
		t.Errorf("commit on B is not signed with B's key for the account: %v", err)
	}
	resp, err = http.Get(plcURL + "/" + did)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Service []struct{ ServiceEndpoint string } `json:"service"`
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if len(doc.Service) != 1 || doc.Service[0].ServiceEndpoint != baseB {
		t.Errorf("PLC document services = %+v, want B (%s)", doc.Service, baseB)
	}
}
