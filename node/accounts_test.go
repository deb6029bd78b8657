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
