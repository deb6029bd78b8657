package node

import (
	"context"
	"database/sql"
	"errors"
	"net/http"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/relay"
)

// accountView is com.atproto.admin.defs#accountView.
type accountView struct {
	DID              string `json:"did"`
	Handle           string `json:"handle"`
	Email            string `json:"email,omitempty"`
	IndexedAt        string `json:"indexedAt"`
	InvitesDisabled  bool   `json:"invitesDisabled"`
	EmailConfirmedAt string `json:"emailConfirmedAt,omitempty"`
	DeactivatedAt    string `json:"deactivatedAt,omitempty"`
}

func viewOf(a *account) accountView {
	return accountView{DID: a.DID, Handle: a.Handle, Email: a.Email, IndexedAt: a.CreatedAt,
		InvitesDisabled: a.InvitesDisabled, EmailConfirmedAt: a.EmailConfirmedAt, DeactivatedAt: a.DeactivatedAt}
}

var errAccountNotFoundXRPC = &xrpc.Error{Status: http.StatusBadRequest, Name: "AccountNotFound", Message: "Account not found"}

// adminAccount loads the account named by a DID parameter for an admin call.
func (n *Node) adminAccount(ctx context.Context, did string) (*account, error) {
	if _, err := xrpc.ParseDID(did); err != nil {
		return nil, xrpc.InvalidRequest("did must be a DID")
	}
	a, err := n.accountByDID(ctx, did)
	if errors.Is(err, errAccountNotFound) {
		return nil, errAccountNotFoundXRPC
	}
	return a, err
}

func (n *Node) handleComAtprotoAdminGetAccountInfo(w http.ResponseWriter, r *http.Request) error {
	a, err := n.adminAccount(r.Context(), r.URL.Query().Get("did"))
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, viewOf(a))
	return nil
}

func (n *Node) handleComAtprotoAdminGetAccountInfos(w http.ResponseWriter, r *http.Request) error {
	infos := []accountView{}
	for _, did := range r.URL.Query()["dids"] {
		a, err := n.accountByDID(r.Context(), did)
		if errors.Is(err, errAccountNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		infos = append(infos, viewOf(a))
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"infos": infos})
	return nil
}

// handleComAtprotoAdminSearchAccounts lists accounts by DID order, optionally those whose
// email starts with the email parameter; `aerie account list` pages through it.
func (n *Node) handleComAtprotoAdminSearchAccounts(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 50, 1, 100)
	if err != nil {
		return xrpc.InvalidRequest("limit: %s", err)
	}
	var accts []accountView
	err = n.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT "+accountColumns+` FROM account
			WHERE did > ? AND (? = '' OR email LIKE ? || '%') ORDER BY did LIMIT ?`,
			q.Get("cursor"), q.Get("email"), q.Get("email"), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			a, err := scanAccount(rows)
			if err != nil {
				return err
			}
			accts = append(accts, viewOf(a))
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	out := map[string]any{"accounts": append([]accountView{}, accts...)}
	if len(accts) == limit {
		out["cursor"] = accts[len(accts)-1].DID
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

// subjectStatus is the admin view of an account's moderation state.
type statusAttr struct {
	Applied bool   `json:"applied"`
	Ref     string `json:"ref,omitempty"`
}

func (n *Node) subjectStatusOf(a *account) map[string]any {
	return map[string]any{
		"subject":     map[string]string{"$type": "com.atproto.admin.defs#repoRef", "did": a.DID},
		"takedown":    statusAttr{Applied: a.TakedownRef != "", Ref: a.TakedownRef},
		"deactivated": statusAttr{Applied: a.DeactivatedAt != ""},
	}
}

func (n *Node) handleComAtprotoAdminGetSubjectStatus(w http.ResponseWriter, r *http.Request) error {
	a, err := n.adminAccount(r.Context(), r.URL.Query().Get("did"))
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, n.subjectStatusOf(a))
	return nil
}

// handleComAtprotoAdminUpdateSubjectStatus applies or lifts a takedown or a deactivation of
// a hosted account, and tells the network with #account.
func (n *Node) handleComAtprotoAdminUpdateSubjectStatus(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Subject struct {
			DID string `json:"did"`
		} `json:"subject"`
		Takedown    *statusAttr `json:"takedown"`
		Deactivated *statusAttr `json:"deactivated"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	a, err := n.adminAccount(ctx, in.Subject.DID)
	if err != nil {
		return err
	}
	now := timestamp(n.now())
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		if t := in.Takedown; t != nil {
			ref := ""
			if t.Applied {
				ref = t.Ref
				if ref == "" {
					ref = "admin-" + now
				}
			}
			if _, err := tx.ExecContext(ctx, "UPDATE account SET takedown_ref = nullif(?, '') WHERE did = ?", ref, a.DID); err != nil {
				return err
			}
			if t.Applied {
				// A takedown ends every session; the account cannot refresh back in.
				if _, err := tx.ExecContext(ctx, "DELETE FROM refresh_token WHERE did = ?", a.DID); err != nil {
					return err
				}
			}
		}
		if d := in.Deactivated; d != nil {
			value := ""
			if d.Applied {
				value = now
			}
			if _, err := tx.ExecContext(ctx, "UPDATE account SET deactivated_at = CASE WHEN ? = '' THEN NULL ELSE coalesce(deactivated_at, ?) END WHERE did = ?",
				value, value, a.DID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if a, err = n.accountByDID(ctx, a.DID); err != nil {
		return err
	}
	if err := n.emit(ctx, relay.NewAccount(syntax.DID(a.DID), a.Active(), a.Status())); err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, n.subjectStatusOf(a))
	return nil
}

func (n *Node) handleComAtprotoAdminDeleteAccount(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		DID string `json:"did"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	a, err := n.adminAccount(r.Context(), in.DID)
	if err != nil {
		return err
	}
	if err := n.deleteAccount(r.Context(), a.DID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (n *Node) handleComAtprotoAdminUpdateAccountPassword(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		DID      string `json:"did"`
		Password string `json:"password"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	a, err := n.adminAccount(ctx, in.DID)
	if err != nil {
		return err
	}
	if err := checkNewPassword(in.Password); err != nil {
		return err
	}
	hash, err := hashPassword(in.Password)
	if err != nil {
		return err
	}
	err = n.db.Write(ctx, func(tx *sql.Tx) error { return setPassword(ctx, tx, a.DID, hash) })
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (n *Node) handleComAtprotoAdminUpdateAccountEmail(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Account string `json:"account"`
		Email   string `json:"email"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	a, err := n.accountBy(ctx, in.Account)
	if errors.Is(err, errAccountNotFound) {
		return errAccountNotFoundXRPC
	}
	if err != nil {
		return err
	}
	email, err := normalizeEmail(in.Email)
	if err != nil {
		return err
	}
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE account SET email = ?, email_confirmed_at = NULL WHERE did = ?", email, a.DID)
		if isConflict(err) {
			return xrpc.InvalidRequest("email already in use")
		}
		return err
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// adminRoutes registers the com.atproto.admin methods Aerie serves; all take admin basic auth.
func (n *Node) adminRoutes(x *xrpcMux) {
	x.query("com.atproto.admin.getAccountInfo", n.withAuth(authAdmin, n.handleComAtprotoAdminGetAccountInfo))
	x.query("com.atproto.admin.getAccountInfos", n.withAuth(authAdmin, n.handleComAtprotoAdminGetAccountInfos))
	x.query("com.atproto.admin.searchAccounts", n.withAuth(authAdmin, n.handleComAtprotoAdminSearchAccounts))
	x.query("com.atproto.admin.getSubjectStatus", n.withAuth(authAdmin, n.handleComAtprotoAdminGetSubjectStatus))
	x.procedure("com.atproto.admin.updateSubjectStatus", n.withAuth(authAdmin, n.handleComAtprotoAdminUpdateSubjectStatus))
	x.procedure("com.atproto.admin.deleteAccount", n.withAuth(authAdmin, n.handleComAtprotoAdminDeleteAccount))
	x.procedure("com.atproto.admin.updateAccountPassword", n.withAuth(authAdmin, n.handleComAtprotoAdminUpdateAccountPassword))
	x.procedure("com.atproto.admin.updateAccountEmail", n.withAuth(authAdmin, n.handleComAtprotoAdminUpdateAccountEmail))
}
