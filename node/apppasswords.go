package node

import (
	"crypto/rand"
	"database/sql"
	"net/http"
	"strings"

	"github.com/aerie-social/aerie/node/xrpc"
)

// appPasswordAlphabet is lower-case base32 without look-alike characters' ambiguity, as
// app passwords are typed by people into other apps.
const appPasswordAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

// newAppPassword returns a password shaped xxxx-xxxx-xxxx-xxxx like the reference PDS's.
func newAppPassword() string {
	var b [16]byte
	rand.Read(b[:])
	var sb strings.Builder
	for i, c := range b {
		if i > 0 && i%4 == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(appPasswordAlphabet[int(c)%len(appPasswordAlphabet)])
	}
	return sb.String()
}

func looksLikeAppPassword(p string) bool {
	if len(p) != 19 {
		return false
	}
	for i := range len(p) {
		if i%5 == 4 {
			if p[i] != '-' {
				return false
			}
		} else if !strings.ContainsRune(appPasswordAlphabet, rune(p[i])) {
			return false
		}
	}
	return true
}

// maxAppPasswords bounds login work: each app password costs one scrypt per failed login.
const maxAppPasswords = 50

type appPasswordView struct {
	Name       string `json:"name"`
	Password   string `json:"password,omitempty"`
	CreatedAt  string `json:"createdAt"`
	Privileged bool   `json:"privileged"`
}

func (n *Node) handleComAtprotoServerCreateAppPassword(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name       string `json:"name"`
		Privileged bool   `json:"privileged"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	in.Name = strings.TrimSpace(in.Name)
	if in.Name == "" || len(in.Name) > 100 {
		return xrpc.InvalidRequest("name must be 1 to 100 characters")
	}
	ctx := r.Context()
	did := authFrom(ctx).DID
	password := newAppPassword()
	hash, err := hashPassword(password)
	if err != nil {
		return err
	}
	view := appPasswordView{Name: in.Name, Password: password, CreatedAt: timestamp(n.now()), Privileged: in.Privileged}
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		var count int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM app_password WHERE did = ?", did).Scan(&count); err != nil {
			return err
		}
		if count >= maxAppPasswords {
			return xrpc.InvalidRequest("too many app passwords (at most %d); revoke one first", maxAppPasswords)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO app_password (did, name, password_hash, privileged, created_at) VALUES (?, ?, ?, ?, ?)`,
			did, in.Name, hash, in.Privileged, view.CreatedAt)
		if isConflict(err) {
			return &xrpc.Error{Status: http.StatusBadRequest, Name: "DuplicateAppPassword", Message: "an app password with this name already exists"}
		}
		return err
	})
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, view)
	return nil
}

func (n *Node) handleComAtprotoServerListAppPasswords(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	passwords := []appPasswordView{}
	err := n.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT name, created_at, privileged FROM app_password WHERE did = ? ORDER BY created_at DESC", authFrom(ctx).DID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var v appPasswordView
			if err := rows.Scan(&v.Name, &v.CreatedAt, &v.Privileged); err != nil {
				return err
			}
			passwords = append(passwords, v)
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"passwords": passwords})
	return nil
}

func (n *Node) handleComAtprotoServerRevokeAppPassword(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	did := authFrom(ctx).DID
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM app_password WHERE did = ? AND name = ?", did, in.Name); err != nil {
			return err
		}
		// Sessions opened with the password end with it.
		_, err := tx.ExecContext(ctx, "DELETE FROM refresh_token WHERE did = ? AND app_password_name = ?", did, in.Name)
		return err
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
