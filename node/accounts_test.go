package node

import (
	"context"
	"database/sql"
	"testing"
)

// TestAccountRowsFollowWrites checks that accountByDID, which keeps the rows it read,
// answers with a write's result as soon as the write has returned.
func TestAccountRowsFollowWrites(t *testing.T) {
	t.Parallel()
	n, base := testNode(t)
	did := createTestAccount(t, base, "kept.test")["did"].(string)
	ctx := context.Background()
	for range 2 { // the second read is served from memory
		a, err := n.accountByDID(ctx, did)
		if err != nil || a.TakedownRef != "" {
			t.Fatalf("accountByDID = %+v, %v", a, err)
		}
	}
	n.accounts.mu.Lock()
	kept := n.accounts.rows[did].DID == did
	n.accounts.mu.Unlock()
	if !kept {
		t.Fatal("the row read is not kept")
	}
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE account SET takedown_ref = 'ref-1' WHERE did = ?", did)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := n.accountByDID(ctx, did); err != nil || a.TakedownRef != "ref-1" {
		t.Errorf("accountByDID after a takedown = %+v, %v; want takedown_ref ref-1", a, err)
	}
	// A caller changing its copy changes nothing kept.
	a, _ := n.accountByDID(ctx, did)
	a.TakedownRef = ""
	if a, _ := n.accountByDID(ctx, did); a.TakedownRef != "ref-1" {
		t.Errorf("a caller's change reached the kept row")
	}
}

// TestHostedDIDsFollowAccounts checks the hosted set the indexer asks before keeping a
// notification: it has an account from its creation, after a restart, and not after its
// deletion.
func TestHostedDIDsFollowAccounts(t *testing.T) {
	t.Parallel()
	n, base := testNode(t)
	did := createTestAccount(t, base, "hosted.test")["did"].(string)
	if !n.hosted.has(did) {
		t.Fatal("a new account is not in the hosted set")
	}
	if n.hosted.has("did:plc:elsewhere0000000000000000") {
		t.Fatal("an account hosted elsewhere is in the hosted set")
	}
	ctx := context.Background()
	var reloaded hostedDIDs
	if err := reloaded.load(ctx, n); err != nil {
		t.Fatal(err)
	}
	if !reloaded.has(did) {
		t.Error("the hosted set loaded at startup lacks the account")
	}
	if err := n.deleteAccount(ctx, did); err != nil {
		t.Fatal(err)
	}
	if n.hosted.has(did) {
		t.Error("a deleted account is still in the hosted set")
	}
}
