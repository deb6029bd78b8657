package node

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/smtp"
	"net/url"
	"strings"
	"time"

	"github.com/aerie-social/aerie/node/xrpc"
)

// emailTokenTTL is how long an emailed token stays valid, as in the reference PDS.
const emailTokenTTL = 15 * time.Minute

// Email token purposes, one outstanding token per account and purpose.
const (
	purposeConfirmEmail  = "confirm_email"
	purposeUpdateEmail   = "update_email"
	purposeResetPassword = "reset_password"
	purposeDeleteAccount = "delete_account"
	purposePLCOperation  = "plc_operation"
)

var (
	errExpiredEmailToken = &xrpc.Error{Status: http.StatusBadRequest, Name: "ExpiredToken", Message: "Token is expired"}
	errInvalidEmailToken = &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidToken", Message: "Token is invalid"}
)

// mailer sends account email through SMTP, or logs it for the operator when no SMTP server
// is configured, so that a node without mail can still confirm emails and reset passwords.
type mailer struct {
	cfg EmailConfig
	log *slog.Logger
}

func (m *mailer) send(ctx context.Context, to, subject, body string) error {
	if m.cfg.SMTPURL.Reveal() == "" {
		m.log.WarnContext(ctx, "no SMTP configured; email for the operator to pass on", "to", to, "subject", subject, "body", body)
		return nil
	}
	u, err := url.Parse(m.cfg.SMTPURL.Reveal())
	if err != nil {
		return fmt.Errorf("parse email.smtp_url: %w", err)
	}
	host := u.Hostname()
	var auth smtp.Auth
	if u.User != nil {
		pass, _ := u.User.Password()
		auth = smtp.PlainAuth("", u.User.Username(), pass, host)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(host, "587")
	}
	msg := "From: " + m.cfg.From + "\r\nTo: " + to + "\r\nSubject: " + subject +
		"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + strings.ReplaceAll(body, "\n", "\r\n")
	// net/smtp has no context; a stuck server is bounded by the request's own deadline.
	if err := smtp.SendMail(addr, auth, m.cfg.From, []string{to}, []byte(msg)); err != nil {
		return fmt.Errorf("send email: %w", err)
	}
	return nil
}

// newEmailToken returns a token shaped XXXXX-XXXXX (base32, upper case) as in the reference.
func newEmailToken() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	var b [10]byte
	rand.Read(b[:])
	var sb strings.Builder
	for i, c := range b {
		if i == 5 {
			sb.WriteByte('-')
		}
		sb.WriteByte(alphabet[int(c)%len(alphabet)])
	}
	return sb.String()
}

// issueEmailToken stores a fresh token for (purpose, did), replacing any earlier one, and
// mails it to address.
func (n *Node) issueEmailToken(ctx context.Context, acct *account, purpose, address, subject string) error {
	token := newEmailToken()
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO email_token (purpose, did, token, requested_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (purpose, did) DO UPDATE SET token = excluded.token, requested_at = excluded.requested_at`,
			purpose, acct.DID, token, timestamp(n.now()))
		return err
	})
	if err != nil {
		return fmt.Errorf("store email token: %w", err)
	}
	body := fmt.Sprintf("Hello %s,\n\nYour code is: %s\n\nIt is valid for %d minutes. If you did not ask for it, ignore this message.\n",
		acct.Handle, token, int(emailTokenTTL.Minutes()))
	return n.mail.send(ctx, address, subject, body)
}

// consumeEmailToken checks token for (purpose, did) inside tx and deletes it. With did
// empty it finds the account by the token itself (password reset) and returns its DID.
func (n *Node) consumeEmailToken(ctx context.Context, tx *sql.Tx, purpose, did, token string) (string, error) {
	token = strings.ToUpper(strings.TrimSpace(token))
	var requested string
	var err error
	if did == "" {
		err = tx.QueryRowContext(ctx, "SELECT did, requested_at FROM email_token WHERE purpose = ? AND token = ?", purpose, token).Scan(&did, &requested)
	} else {
		err = tx.QueryRowContext(ctx, "SELECT requested_at FROM email_token WHERE purpose = ? AND did = ? AND token = ?", purpose, did, token).Scan(&requested)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return "", errInvalidEmailToken
	}
	if err != nil {
		return "", err
	}
	at, err := time.Parse(time.RFC3339, requested)
	if err != nil || n.now().Sub(at) > emailTokenTTL {
		return "", errExpiredEmailToken
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM email_token WHERE purpose = ? AND did = ?", purpose, did); err != nil {
		return "", err
	}
	return did, nil
}

// currentAccount loads the authenticated caller's account.
func (n *Node) currentAccount(ctx context.Context) (*account, error) {
	acct, err := n.accountByDID(ctx, authFrom(ctx).DID)
	if errors.Is(err, errAccountNotFound) {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "AccountNotFound", Message: "account not found", Err: err}
	}
	return acct, err
}

func (n *Node) handleComAtprotoServerRequestEmailConfirmation(w http.ResponseWriter, r *http.Request) error {
	acct, err := n.currentAccount(r.Context())
	if err != nil {
		return err
	}
	if acct.Email == "" {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidEmail", Message: "account has no email address"}
	}
	if err := n.issueEmailToken(r.Context(), acct, purposeConfirmEmail, acct.Email, "Confirm your email"); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (n *Node) handleComAtprotoServerConfirmEmail(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email string `json:"email"`
		Token string `json:"token"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	acct, err := n.currentAccount(ctx)
	if err != nil {
		return err
	}
	if !strings.EqualFold(acct.Email, strings.TrimSpace(in.Email)) {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidEmail", Message: "invalid email"}
	}
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := n.consumeEmailToken(ctx, tx, purposeConfirmEmail, acct.DID, in.Token); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE account SET email_confirmed_at = ? WHERE did = ?", timestamp(n.now()), acct.DID)
		return err
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (n *Node) handleComAtprotoServerRequestEmailUpdate(w http.ResponseWriter, r *http.Request) error {
	acct, err := n.currentAccount(r.Context())
	if err != nil {
		return err
	}
	tokenRequired := acct.EmailConfirmedAt != ""
	if tokenRequired {
		if err := n.issueEmailToken(r.Context(), acct, purposeUpdateEmail, acct.Email, "Update your email"); err != nil {
			return err
		}
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]bool{"tokenRequired": tokenRequired})
	return nil
}

func (n *Node) handleComAtprotoServerUpdateEmail(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email string `json:"email"`
		Token string `json:"token"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	email, err := normalizeEmail(in.Email)
	if err != nil {
		return err
	}
	ctx := r.Context()
	acct, err := n.currentAccount(ctx)
	if err != nil {
		return err
	}
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		if acct.EmailConfirmedAt != "" {
			if in.Token == "" {
				return &xrpc.Error{Status: http.StatusBadRequest, Name: "TokenRequired", Message: "confirmation token required"}
			}
			if _, err := n.consumeEmailToken(ctx, tx, purposeUpdateEmail, acct.DID, in.Token); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, "UPDATE account SET email = ?, email_confirmed_at = NULL WHERE did = ?", email, acct.DID)
		if isConflict(err) {
			return xrpc.InvalidRequest("This email address is already in use, please use a different email")
		}
		return err
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (n *Node) handleComAtprotoServerRequestPasswordReset(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email string `json:"email"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	if err := n.rateLimit(w, n.clientIP(r), limitPasswordReset); err != nil {
		return err
	}
	email, err := normalizeEmail(in.Email)
	if err != nil {
		return err
	}
	acct, err := n.accountBy(r.Context(), email)
	switch {
	case errors.Is(err, errAccountNotFound):
		// Same answer either way, so the endpoint does not reveal who has an account.
	case err != nil:
		return err
	default:
		if err := n.issueEmailToken(r.Context(), acct, purposeResetPassword, acct.Email, "Reset your password"); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (n *Node) handleComAtprotoServerResetPassword(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Token    string `json:"token"`
		Password string `json:"password"`
	}
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	if err := n.rateLimit(w, n.clientIP(r), limitPasswordReset); err != nil {
		return err
	}
	if err := checkNewPassword(in.Password); err != nil {
		return err
	}
	hash, err := hashPassword(in.Password)
	if err != nil {
		return err
	}
	ctx := r.Context()
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		did, err := n.consumeEmailToken(ctx, tx, purposeResetPassword, "", in.Token)
		if err != nil {
			return err
		}
		return setPassword(ctx, tx, did, hash)
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// normalizeEmail checks an address and lower-cases it, as uniqueness is case-insensitive.
func normalizeEmail(raw string) (string, error) {
	addr, err := mail.ParseAddress(strings.TrimSpace(raw))
	if err != nil || addr.Name != "" || len(addr.Address) > 254 {
		return "", &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidEmail", Message: "This email address is not valid"}
	}
	return strings.ToLower(addr.Address), nil
}

// checkNewPassword applies the reference's bounds to a password being set.
func checkNewPassword(p string) error {
	if len(p) < 8 || len(p) > maxPasswordLen {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidPassword", Message: fmt.Sprintf("Password must be 8 to %d characters", maxPasswordLen)}
	}
	return nil
}

// setPassword stores a new password hash and ends every session of the account: a new
// password means the old one may be known to someone else.
func setPassword(ctx context.Context, tx *sql.Tx, did, hash string) error {
	if _, err := tx.ExecContext(ctx, "UPDATE account SET password_hash = ? WHERE did = ?", hash, did); err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM refresh_token WHERE did = ?", did); err != nil {
		return fmt.Errorf("end sessions: %w", err)
	}
	return nil
}
