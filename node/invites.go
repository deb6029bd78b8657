package node

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"net/http"
	"strings"

	"github.com/aerie-social/aerie/node/xrpc"
)

// newInviteCode returns a code shaped like the reference PDS's: <host-with-dashes>-xxxxx-xxxxx.
func (n *Node) newInviteCode() string {
	var b [10]byte
	rand.Read(b[:])
	var sb strings.Builder
	sb.WriteString(strings.ReplaceAll(n.cfg.Hostname, ".", "-"))
	for i, c := range b {
		if i%5 == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(appPasswordAlphabet[int(c)%len(appPasswordAlphabet)])
	}
	return sb.String()
}

// createInviteCodes stores count codes of uses each for every account in forAccounts
// ("admin" when none), created by createdBy.
func (n *Node) createInviteCodes(ctx context.Context, count, uses int, forAccounts []string, createdBy string) (map[string][]string, error) {
	if count < 1 || count > 1000 || uses < 1 {
		return nil, xrpc.InvalidRequest("codeCount must be 1 to 1000 and useCount at least 1")
	}
	if len(forAccounts) == 0 {
		forAccounts = []string{"admin"}
	}
	out := map[string][]string{}
	now := timestamp(n.now())
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		for _, acct := range forAccounts {
			for range count {
				code := n.newInviteCode()
				if _, err := tx.ExecContext(ctx, `INSERT INTO invite_code (code, available, for_account, created_by, created_at) VALUES (?, ?, ?, ?, ?)`,
					code, uses, acct, createdBy, now); err != nil {
					return fmt.Errorf("store invite code: %w", err)
				}
				out[acct] = append(out[acct], code)
			}
		}
		return nil
	})
	return out, err
}

func (n *Node) handleComAtprotoServerCreateInviteCode(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		UseCount   int    `json:"useCount"`
		ForAccount string `json:"forAccount"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	var accounts []string
	if in.ForAccount != "" {
		accounts = []string{in.ForAccount}
	}
	codes, err := n.createInviteCodes(r.Context(), 1, in.UseCount, accounts, "admin")
	if err != nil {
		return err
	}
	for _, c := range codes {
		xrpc.WriteJSON(w, http.StatusOK, map[string]string{"code": c[0]})
	}
	return nil
}

func (n *Node) handleComAtprotoServerCreateInviteCodes(w http.ResponseWriter, r *http.Request) error {
	in := struct {
		CodeCount   int      `json:"codeCount"`
		UseCount    int      `json:"useCount"`
		ForAccounts []string `json:"forAccounts"`
	}{CodeCount: 1}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	codes, err := n.createInviteCodes(r.Context(), in.CodeCount, in.UseCount, in.ForAccounts, "admin")
	if err != nil {
		return err
	}
	type accountCodes struct {
		Account string   `json:"account"`
		Codes   []string `json:"codes"`
	}
	out := []accountCodes{}
	for acct, c := range codes {
		out = append(out, accountCodes{acct, c})
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"codes": out})
	return nil
}

type inviteCodeUse struct {
	UsedBy string `json:"usedBy"`
	UsedAt string `json:"usedAt"`
}

type inviteCodeView struct {
	Code       string          `json:"code"`
	Available  int             `json:"available"`
	Disabled   bool            `json:"disabled"`
	ForAccount string          `json:"forAccount"`
	CreatedBy  string          `json:"createdBy"`
	CreatedAt  string          `json:"createdAt"`
	Uses       []inviteCodeUse `json:"uses"`
}

func (n *Node) handleComAtprotoServerGetAccountInviteCodes(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	includeUsed := r.URL.Query().Get("includeUsed") != "false"
	codes := []inviteCodeView{}
	err := n.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT code, available, disabled, for_account, created_by, created_at
			FROM invite_code WHERE for_account = ? ORDER BY created_at DESC`, authFrom(ctx).DID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v := inviteCodeView{Uses: []inviteCodeUse{}}
			if err := rows.Scan(&v.Code, &v.Available, &v.Disabled, &v.ForAccount, &v.CreatedBy, &v.CreatedAt); err != nil {
				return err
			}
			codes = append(codes, v)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for i := range codes {
			uses, err := tx.QueryContext(ctx, "SELECT used_by, used_at FROM invite_code_use WHERE code = ? ORDER BY used_at", codes[i].Code)
			if err != nil {
				return err
			}
			for uses.Next() {
				var u inviteCodeUse
				if err := uses.Scan(&u.UsedBy, &u.UsedAt); err != nil {
					uses.Close()
					return err
				}
				codes[i].Uses = append(codes[i].Uses, u)
			}
			uses.Close()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !includeUsed {
		kept := codes[:0]
		for _, c := range codes {
			if c.Available > len(c.Uses) {
				kept = append(kept, c)
			}
		}
		codes = kept
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"codes": codes})
	return nil
}

// useInviteCode records that did used code inside the account-creation transaction, or
// returns InvalidInviteCode.
func useInviteCode(ctx context.Context, tx *sql.Tx, code, did, now string) error {
	var available, used int
	var disabled bool
	err := tx.QueryRowContext(ctx, `SELECT available, disabled, (SELECT count(*) FROM invite_code_use WHERE code = ?)
		FROM invite_code WHERE code = ?`, code, code).Scan(&available, &disabled, &used)
	if err == sql.ErrNoRows || (err == nil && (disabled || used >= available)) {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidInviteCode", Message: "Provided invite code not available"}
	}
	if err != nil {
		return fmt.Errorf("check invite code: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO invite_code_use (code, used_by, used_at) VALUES (?, ?, ?)", code, did, now); err != nil {
		return fmt.Errorf("use invite code: %w", err)
	}
	return nil
}

func (n *Node) handleComAtprotoServerDescribeServer(w http.ResponseWriter, r *http.Request) error {
	out := map[string]any{
		"did":                  n.serviceDID(),
		"availableUserDomains": n.cfg.UserDomains(),
		"inviteCodeRequired":   n.cfg.InvitesRequired(),
		"blobUploadLimit":      n.blobs.Config().MaxSize,
	}
	links := map[string]string{}
	if u := n.cfg.Accounts.PrivacyPolicyURL; u != "" {
		links["privacyPolicy"] = u
	}
	if u := n.cfg.Accounts.TermsOfServiceURL; u != "" {
		links["termsOfService"] = u
	}
	if len(links) > 0 {
		out["links"] = links
	}
	if e := n.cfg.Accounts.ContactEmail; e != "" {
		out["contact"] = map[string]string{"email": e}
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}
