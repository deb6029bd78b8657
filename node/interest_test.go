package node

import (
	"fmt"
	"path"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// TestInterestSweepDropsUnfollowed checks that the interest set follows local users'
// follows both ways: a follow makes the crawler take every commit of a remote account, and
// once the follow is deleted the next sweep stops that, unless the account was followed
// again after the sweep began.
func TestInterestSweepDropsUnfollowed(t *testing.T) {
	t.Parallel()
	a, baseA := testNode(t, func(c *Config) {
		c.PLC.Listen = "127.0.0.1:0"
		c.Net.AllowPrivateNetwork = true
	})
	_, baseB := testNode(t, func(c *Config) {
		c.PLC.URL = "http://" + a.PLCAddr().String()
		c.Net.AllowPrivateNetwork = true
	})
	alice := createTestAccount(t, baseA, "alice.test")
	bob := createTestAccount(t, baseB, "bob.test")
	aliceDID, aliceJWT := alice["did"].(string), alice["accessJwt"].(string)
	bobDID := syntax.DID(bob["did"].(string))

	followURI, _ := createRecord(t, baseA, aliceJWT, aliceDID, "app.bsky.graph.follow",
		fmt.Sprintf(`{"subject":%q,"createdAt":"2026-11-25T10:01:00Z"}`, bobDID))
	eventually(t, "A following bob", 20*time.Second, func() bool { return a.crawler.Tracked(bobDID) })

	// While the follow exists a sweep keeps bob.
	a.sweepInterest(t.Context())
	if !a.crawler.Tracked(bobDID) {
		t.Fatal("a sweep dropped bob while alice follows him")
	}
	if a.crawler.Unwant(bobDID, time.Time{}) {
		t.Fatal("Unwant dropped bob, followed after the sweep it was given began")
	}

	status, out, _ := getJSON(t, "POST", baseA+"/xrpc/com.atproto.repo.deleteRecord",
		fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.graph.follow","rkey":%q}`, aliceDID, path.Base(followURI)), bearer(aliceJWT))
	if status != 200 {
		t.Fatalf("deleteRecord follow = %d %v", status, out)
	}
	// A sweep drops nothing while a local repo awaits its reindex, as a new account's does
	// after its #sync until the reindex loop's next pass: run that pass now.
	a.reindexMarked(t.Context())
	a.sweepInterest(t.Context())
	if a.crawler.Tracked(bobDID) {
		t.Fatal("bob is still followed in full after alice unfollowed him and a sweep ran")
	}

	// Following again brings him back.
	createRecord(t, baseA, aliceJWT, aliceDID, "app.bsky.graph.follow",
		fmt.Sprintf(`{"subject":%q,"createdAt":"2026-11-25T10:05:00Z"}`, bobDID))
	eventually(t, "A following bob again", 20*time.Second, func() bool { return a.crawler.Tracked(bobDID) })
}
