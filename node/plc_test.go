package node

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestNodesShareOneEmbeddedPLC starts node A with its embedded PLC directory on a
// listener and node B pointed at it: B's new account is registered in A's directory and
// served to anyone from there.
func TestNodesShareOneEmbeddedPLC(t *testing.T) {
	t.Parallel()
	a, _ := testNode(t, func(c *Config) { c.PLC.Listen = "127.0.0.1:0" })
	plcURL := "http://" + a.PLCAddr().String()
	_, baseB := testNode(t, func(c *Config) {
		c.PLC.URL = plcURL
		c.Net.AllowPrivateNetwork = true
	})
	sess := createTestAccount(t, baseB, "bee.test")
	did := sess["did"].(string)

	resp, err := http.Get(plcURL + "/" + did)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		ID          string   `json:"id"`
		AlsoKnownAs []string `json:"alsoKnownAs"`
		Service     []struct {
			ServiceEndpoint string `json:"serviceEndpoint"`
		} `json:"service"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s/%s = %d, %v", plcURL, did, resp.StatusCode, err)
	}
	if doc.ID != did || len(doc.AlsoKnownAs) != 1 || doc.AlsoKnownAs[0] != "at://bee.test" ||
		len(doc.Service) != 1 || doc.Service[0].ServiceEndpoint != baseB {
		t.Errorf("A's directory serves %+v for B's account, want id %s, at://bee.test, endpoint %s", doc, did, baseB)
	}
	if sess["didDoc"] == nil {
		t.Error("B's createAccount returned no didDoc (read through A's directory)")
	}

	// Without allow_private_network, B may not reach A's loopback directory.
	_, baseC := testNode(t, func(c *Config) { c.PLC.URL = plcURL })
	status, body, _ := getJSON(t, "POST", baseC+"/xrpc/com.atproto.server.createAccount",
		`{"handle":"cee.test","password":"password-cee"}`, map[string]string{"Content-Type": "application/json"})
	if status == 200 {
		t.Errorf("createAccount through a loopback PLC without allow_private_network = %d %v, want refused", status, body)
	}
}
