package node

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aerie-social/aerie/node/xrpc"
)

var errBadLogin = &xrpc.Error{Status: http.StatusUnauthorized, Name: "AuthenticationRequired", Message: "Invalid identifier or password"}

// sessionOutput is the shape createSession, refreshSession and createAccount share.
type sessionOutput struct {
	AccessJwt       string         `json:"accessJwt"`
	RefreshJwt      string         `json:"refreshJwt"`
	Handle          string         `json:"handle"`
	DID             string         `json:"did"`
	DIDDoc          map[string]any `json:"didDoc,omitempty"`
	Email           string         `json:"email,omitempty"`
	EmailConfirmed  bool           `json:"emailConfirmed"`
	EmailAuthFactor bool           `json:"emailAuthFactor"`
	Active          bool           `json:"active"`
	Status          string         `json:"status,omitempty"`
}

// newSession stores a refresh token for acct and mints both tokens. appPassword names the
// app password used to log in, or is empty for a full session.
func (n *Node) newSession(ctx context.Context, acct *account, scope, appPassword string) (*sessionOutput, error) {
	id := newTokenID()
	exp := n.now().Add(refreshTokenTTL)
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO refresh_token (id, did, app_password_name, expires_at) VALUES (?, ?, nullif(?, ''), ?)`,
			id, acct.DID, appPassword, timestamp(exp))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store refresh token: %w", err)
	}
	return n.sessionTokens(ctx, acct, scope, id, exp)
}

func (n *Node) sessionTokens(ctx context.Context, acct *account, scope, refreshID string, refreshExp time.Time) (*sessionOutput, error) {
	access, err := n.tokens.accessToken(acct.DID, scope)
	if err != nil {
		return nil, err
	}
	refresh, err := n.tokens.refreshToken(acct.DID, refreshID, refreshExp)
	if err != nil {
		return nil, err
	}
	out := n.sessionInfo(ctx, acct)
	out.AccessJwt, out.RefreshJwt = access, refresh
	return out, nil
}

// sessionInfo is getSession's answer for acct.
func (n *Node) sessionInfo(ctx context.Context, acct *account) *sessionOutput {
	return &sessionOutput{
		Handle:         acct.Handle,
		DID:            acct.DID,
		DIDDoc:         n.didDocument(ctx, acct.DID),
		Email:          acct.Email,
		EmailConfirmed: acct.EmailConfirmedAt != "",
		Active:         acct.Active(),
		Status:         acct.Status(),
	}
}

func (n *Node) handleComAtprotoServerCreateSession(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Identifier     string `json:"identifier"`
		Password       string `json:"password"`
		AllowTakendown bool   `json:"allowTakendown"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	if in.Identifier == "" || in.Password == "" {
		return xrpc.InvalidRequest("identifier and password are required")
	}
	key := strings.ToLower(in.Identifier) + "\x00" + n.clientIP(r)
	if err := n.rateLimit(w, key, limitCreateSession5m, limitCreateSessionDay); err != nil {
		return err
	}
	if len(in.Password) > maxPasswordLen {
		return errBadLogin
	}
	ctx := r.Context()
	acct, err := n.accountBy(ctx, in.Identifier)
	if errors.Is(err, errAccountNotFound) {
		return errBadLogin
	}
	if err != nil {
		return err
	}
	scope, appPassword, err := n.checkLogin(ctx, acct, in.Password)
	if err != nil {
		return err
	}
	if acct.TakedownRef != "" {
		if !in.AllowTakendown {
			return errTakendown
		}
		scope = scopeTakendown
	}
	out, err := n.newSession(ctx, acct, scope, appPassword)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

// checkLogin checks password against the account password and then its app passwords,
// returning the session scope and the app password's name (empty for a full login).
func (n *Node) checkLogin(ctx context.Context, acct *account, password string) (scope, appPassword string, err error) {
	ok, err := verifyPassword(password, acct.PasswordHash)
	if err != nil {
		return "", "", err
	}
	if ok {
		return scopeAccess, "", nil
	}
	// App passwords have a fixed shape; skip the scrypt work for anything else.
	if !looksLikeAppPassword(password) {
		return "", "", errBadLogin
	}
	type appPass struct {
		name, hash string
		privileged bool
	}
	var candidates []appPass
	err = n.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT name, password_hash, privileged FROM app_password WHERE did = ?", acct.DID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p appPass
			if err := rows.Scan(&p.name, &p.hash, &p.privileged); err != nil {
				return err
			}
			candidates = append(candidates, p)
		}
		return rows.Err()
	})
	if err != nil {
		return "", "", fmt.Errorf("read app passwords: %w", err)
	}
	for _, p := range candidates {
		if ok, err := verifyPassword(password, p.hash); err == nil && ok {
			if p.privileged {
				return scopeAppPassPrivilege, p.name, nil
			}
			return scopeAppPass, p.name, nil
		}
	}
	return "", "", errBadLogin
}

func (n *Node) handleComAtprotoServerGetSession(w http.ResponseWriter, r *http.Request) error {
	acct, err := n.accountByDID(r.Context(), authFrom(r.Context()).DID)
	if errors.Is(err, errAccountNotFound) {
		return &xrpc.Error{Status: http.StatusUnauthorized, Name: "InvalidToken", Message: "account no longer exists", Err: err}
	}
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, n.sessionInfo(r.Context(), acct))
	return nil
}

var errRefreshRevoked = &xrpc.Error{Status: http.StatusUnauthorized, Name: "InvalidToken", Message: "Token has been revoked"}

// handleComAtprotoServerRefreshSession rotates the refresh token. A token already rotated
// within refreshGrace yields the same successor (a retry after a lost response); reuse after
// that is treated as theft and revokes the successor chain.
func (n *Node) handleComAtprotoServerRefreshSession(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	a := authFrom(ctx)
	now := n.now()
	var (
		nextID      string
		nextExp     time.Time
		appPassword string
		privileged  bool
		revoked     bool
	)
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		var did, expires string
		var next, app sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT did, expires_at, next_id, app_password_name FROM refresh_token WHERE id = ?`,
			a.RefreshID).Scan(&did, &expires, &next, &app)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && did != a.DID) {
			return errRefreshRevoked
		}
		if err != nil {
			return err
		}
		appPassword = app.String
		if appPassword != "" {
			err := tx.QueryRowContext(ctx, "SELECT privileged FROM app_password WHERE did = ? AND name = ?", did, appPassword).Scan(&privileged)
			if errors.Is(err, sql.ErrNoRows) {
				return errRefreshRevoked
			}
			if err != nil {
				return err
			}
		}
		if next.Valid {
			if expires < timestamp(now) {
				// Commit the revocation, then refuse: returning an error would roll it back.
				revoked = true
				if err := revokeChain(ctx, tx, next.String); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, "DELETE FROM refresh_token WHERE id = ?", a.RefreshID)
				return err
			}
			nextID = next.String
			var nextExpires string
			if err := tx.QueryRowContext(ctx, "SELECT expires_at FROM refresh_token WHERE id = ?", nextID).Scan(&nextExpires); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					return errRefreshRevoked
				}
				return err
			}
			nextExp, err = time.Parse(time.RFC3339, nextExpires)
			return err
		}
		if expires < timestamp(now) {
			return errRefreshRevoked
		}
		nextID, nextExp = newTokenID(), now.Add(refreshTokenTTL)
		if _, err := tx.ExecContext(ctx, `INSERT INTO refresh_token (id, did, app_password_name, expires_at) VALUES (?, ?, ?, ?)`,
			nextID, did, app, timestamp(nextExp)); err != nil {
			return err
		}
		// The old token now lives only for the grace window.
		_, err = tx.ExecContext(ctx, `UPDATE refresh_token SET next_id = ?, expires_at = ? WHERE id = ?`,
			nextID, timestamp(now.Add(refreshGrace)), a.RefreshID)
		return err
	})
	if err != nil {
		return err
	}
	if revoked {
		n.log.WarnContext(ctx, "refresh token reused after rotation; session revoked", "did", a.DID, "req_id", requestID(ctx))
		return errRefreshRevoked
	}
	acct, err := n.accountByDID(ctx, a.DID)
	if err != nil {
		return err
	}
	scope := scopeAccess
	switch {
	case acct.TakedownRef != "":
		return errTakendown
	case appPassword != "" && privileged:
		scope = scopeAppPassPrivilege
	case appPassword != "":
		scope = scopeAppPass
	}
	out, err := n.sessionTokens(ctx, acct, scope, nextID, nextExp)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

// revokeChain deletes a refresh token and every token it was rotated into.
func revokeChain(ctx context.Context, tx *sql.Tx, id string) error {
	for id != "" {
		var next sql.NullString
		err := tx.QueryRowContext(ctx, "DELETE FROM refresh_token WHERE id = ? RETURNING next_id", id).Scan(&next)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("revoke refresh token: %w", err)
		}
		id = next.String
	}
	return nil
}

func (n *Node) handleComAtprotoServerDeleteSession(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	a := authFrom(ctx)
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		// Revoke the whole chain: the token used may already have a successor in its grace window.
		var first = a.RefreshID
		for {
			var prev string
			err := tx.QueryRowContext(ctx, "SELECT id FROM refresh_token WHERE next_id = ?", first).Scan(&prev)
			if errors.Is(err, sql.ErrNoRows) {
				break
			}
			if err != nil {
				return err
			}
			first = prev
		}
		return revokeChain(ctx, tx, first)
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
