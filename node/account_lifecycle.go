package node

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/relay"
)

// emit sequences an identity or account event; the caller has already made the change
// durable, so a failure here is logged by the caller's error path and repaired at startup.
func (n *Node) emit(ctx context.Context, ev *relay.Event) error {
	if _, err := n.seq.Submit(ctx, ev); err != nil {
		return fmt.Errorf("sequence %s event: %w", ev.Kind(), err)
	}
	return nil
}

func (n *Node) handleComAtprotoServerDeactivateAccount(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		DeleteAfter string `json:"deleteAfter"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	if in.DeleteAfter != "" {
		if _, err := xrpc.ParseDatetime(in.DeleteAfter); err != nil {
			return xrpc.InvalidRequest("deleteAfter must be a datetime")
		}
	}
	ctx := r.Context()
	did := authFrom(ctx).DID
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE account SET deactivated_at = coalesce(deactivated_at, ?), delete_after = nullif(?, '') WHERE did = ?`,
			timestamp(n.now()), in.DeleteAfter, did)
		return err
	})
	if err != nil {
		return err
	}
	if err := n.emit(ctx, relay.NewAccount(syntax.DID(did), false, "deactivated")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (n *Node) handleComAtprotoServerActivateAccount(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	acct, err := n.currentAccount(ctx)
	if err != nil {
		return err
	}
	if err := n.activate(ctx, acct); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// activate makes a deactivated (or migrated-in) account active and tells the network.
func (n *Node) activate(ctx context.Context, acct *account) error {
	if acct.TakedownRef != "" {
		return errTakendown
	}
	if err := n.checkIdentityPointsHere(ctx, syntax.DID(acct.DID)); err != nil {
		return err
	}
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE account SET deactivated_at = NULL, delete_after = NULL WHERE did = ?`, acct.DID)
		return err
	})
	if err != nil {
		return err
	}
	return n.announceAccount(ctx, acct)
}

// announceAccount emits what consumers need after an account (re)appears here: #account
// active, #identity with its handle, and #sync with the current commit (reference §6.5).
func (n *Node) announceAccount(ctx context.Context, acct *account) error {
	did := syntax.DID(acct.DID)
	if err := n.emit(ctx, relay.NewAccount(did, true, "")); err != nil {
		return err
	}
	if err := n.emit(ctx, relay.NewIdentity(did, syntax.Handle(acct.Handle))); err != nil {
		return err
	}
	return n.emitSync(ctx, did)
}

// emitSync emits #sync with did's current commit.
func (n *Node) emitSync(ctx context.Context, did syntax.DID) error {
	commit, rev, block, err := n.repos.HeadBlock(ctx, did)
	if err != nil {
		return err
	}
	ev, err := relay.NewSync(did, rev, commit, block)
	if err != nil {
		return err
	}
	return n.emit(ctx, ev)
}

func (n *Node) handleComAtprotoServerRequestAccountDelete(w http.ResponseWriter, r *http.Request) error {
	acct, err := n.currentAccount(r.Context())
	if err != nil {
		return err
	}
	if acct.Email == "" {
		// Without an address the token goes to the operator's log only.
		n.log.WarnContext(r.Context(), "account deletion requested by an account with no email", "did", acct.DID)
	}
	if err := n.issueEmailToken(r.Context(), acct, purposeDeleteAccount, acct.Email, "Delete your account"); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (n *Node) handleComAtprotoServerDeleteAccount(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		DID      string `json:"did"`
		Password string `json:"password"`
		Token    string `json:"token"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	acct, err := n.accountByDID(ctx, in.DID)
	if errors.Is(err, errAccountNotFound) {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "AccountNotFound", Message: "account not found"}
	}
	if err != nil {
		return err
	}
	ok, err := verifyPassword(in.Password, acct.PasswordHash)
	if err != nil {
		return err
	}
	if !ok {
		return errBadLogin
	}
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := n.consumeEmailToken(ctx, tx, purposeDeleteAccount, acct.DID, in.Token)
		return err
	})
	if err != nil {
		return err
	}
	if err := n.deleteAccount(ctx, acct.DID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// deleteAccount removes an account for good: its row (and with it tokens, app passwords
// and email tokens), its repository and key, and tells the network.
func (n *Node) deleteAccount(ctx context.Context, did string) error {
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM account WHERE did = ?", did)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete account %s: %w", did, err)
	}
	n.hosted.remove(did)
	if err := n.repos.Delete(ctx, syntax.DID(did)); err != nil {
		return fmt.Errorf("delete repo %s: %w", did, err)
	}
	if _, err := n.blobs.DeleteAccount(ctx, syntax.DID(did)); err != nil {
		return fmt.Errorf("delete blobs of %s: %w", did, err)
	}
	return n.emit(ctx, relay.NewAccount(syntax.DID(did), false, "deleted"))
}

func (n *Node) handleComAtprotoServerCheckAccountStatus(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	acct, err := n.currentAccount(ctx)
	if err != nil {
		return err
	}
	did := syntax.DID(acct.DID)
	stats, err := n.repos.Stats(ctx, did)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{
		"activated":          acct.Active(),
		"validDid":           n.didDocument(ctx, acct.DID) != nil,
		"repoCommit":         stats.Commit.String(),
		"repoRev":            stats.Rev.String(),
		"repoBlocks":         stats.Blocks,
		"indexedRecords":     stats.Records,
		"privateStateValues": stats.Preferences,
		"expectedBlobs":      stats.Blobs,
		"importedBlobs":      n.importedBlobs(ctx, did),
	})
	return nil
}

// importedBlobs counts the account's blobs present in blob storage.
func (n *Node) importedBlobs(ctx context.Context, did syntax.DID) int64 {
	u, err := n.blobs.Usage(ctx, did)
	if err != nil {
		n.log.WarnContext(ctx, "read blob usage", "did", did, "err", err)
		return 0
	}
	return u.Count
}
