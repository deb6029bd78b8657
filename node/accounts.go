package node

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"net/http"

	"github.com/aerie-social/aerie/node/sqlite"
	"github.com/aerie-social/aerie/node/xrpc"
)

// errAccountNotFound is returned when no hosted account matches.
var errAccountNotFound = errors.New("account not found")

// account is a row of the account table.
type account struct {
	DID              string
	Handle           string
	Email            string
	EmailConfirmedAt string
	PasswordHash     string
	CreatedAt        string
	DeactivatedAt    string
	DeleteAfter      string
	TakedownRef      string
	InvitesDisabled  bool
}

// Active reports whether the account may write and be served.
func (a *account) Active() bool { return a.DeactivatedAt == "" && a.TakedownRef == "" }

// Status is the account status the protocol names when the account is not active.
func (a *account) Status() string {
	switch {
	case a.TakedownRef != "":
		return "takendown"
	case a.DeactivatedAt != "":
		return "deactivated"
	}
	return ""
}

const accountColumns = `did, handle, coalesce(email, ''), coalesce(email_confirmed_at, ''), password_hash, created_at,
	coalesce(deactivated_at, ''), coalesce(delete_after, ''), coalesce(takedown_ref, ''), invites_disabled`

func scanAccount(row interface{ Scan(...any) error }) (*account, error) {
	var a account
	err := row.Scan(&a.DID, &a.Handle, &a.Email, &a.EmailConfirmedAt, &a.PasswordHash, &a.CreatedAt,
		&a.DeactivatedAt, &a.DeleteAfter, &a.TakedownRef, &a.InvitesDisabled)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errAccountNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read account: %w", err)
	}
	return &a, nil
}

// accountBy looks an account up by DID, handle or email, whichever identifier is.
func (n *Node) accountBy(ctx context.Context, identifier string) (*account, error) {
	id := strings.ToLower(strings.TrimSpace(identifier))
	where := "handle = ?"
	switch {
	case strings.HasPrefix(id, "did:"):
		// DIDs are case-sensitive. Every write names its repo by DID: take the prepared path.
		return n.accountByDID(ctx, strings.TrimSpace(identifier))
	case strings.HasPrefix(id, "@"):
		id = id[1:]
	case strings.Contains(id, "@"):
		where = "email = ?"
	}
	var a *account
	err := n.db.Read(ctx, func(tx *sql.Tx) error {
		var err error
		a, err = scanAccount(tx.QueryRowContext(ctx, "SELECT "+accountColumns+" FROM account WHERE "+where, id))
		return err
	})
	return a, err
}

// accountByDID returns the hosted account did, or errAccountNotFound. It runs on most
// authenticated requests, so it is one prepared point query, whose answer is kept until
// the next write to the service database.
func (n *Node) accountByDID(ctx context.Context, did string) (*account, error) {
	commits := n.db.Commits()
	if a, ok := n.accounts.get(did, commits); ok {
		return a, nil
	}
	var a account
	err := n.db.QueryRow(ctx, "SELECT "+accountColumns+" FROM account WHERE did = ?", []any{did},
		&a.DID, &a.Handle, &a.Email, &a.EmailConfirmedAt, &a.PasswordHash, &a.CreatedAt,
		&a.DeactivatedAt, &a.DeleteAfter, &a.TakedownRef, &a.InvitesDisabled)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errAccountNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read account: %w", err)
	}
	n.accounts.put(&a, commits)
	return &a, nil
}

// hostedDIDs is the set of accounts hosted here, kept in memory for the indexer, which
// asks about the recipient of every like, follow, reply and mention it indexes
// (appview.Config.Hosted). It is loaded at startup and follows account creation and
// deletion; a DID left in it by a creation that failed only keeps some notifications.
type hostedDIDs struct {
	mu   sync.RWMutex
	dids map[string]struct{}
}

// load fills the set with every account hosted here.
func (h *hostedDIDs) load(ctx context.Context, n *Node) error {
	dids := map[string]struct{}{}
	for did, err := range n.localDIDs(ctx) {
		if err != nil {
			return fmt.Errorf("list hosted accounts: %w", err)
		}
		dids[did.String()] = struct{}{}
	}
	h.mu.Lock()
	h.dids = dids
	h.mu.Unlock()
	return nil
}

// add puts did in the set; New has loaded it before any account can be created.
func (h *hostedDIDs) add(did string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dids[did] = struct{}{}
}

func (h *hostedDIDs) remove(did string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.dids, did)
}

// has reports whether did is hosted here.
func (h *hostedDIDs) has(did string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, ok := h.dids[did]
	return ok
}

// accountRows keeps the account rows accountByDID read, each with the service database's
// commit count from before its query: while the count stays the same, the row is current.
// Any write forgets them all, which is rare next to the reads (a session, a handle
// change), and reading the row took 30 µs of the 600 a createRecord costs.
type accountRows struct {
	mu      sync.Mutex
	commits uint64
	rows    map[string]account
}

// get returns a copy of did's row if it was read at commits.
func (c *accountRows) get(did string, commits uint64) (*account, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.commits != commits {
		return nil, false
	}
	a, ok := c.rows[did]
	return &a, ok
}

// put keeps a copy of a, read at commits.
func (c *accountRows) put(a *account, commits uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.commits != commits || c.rows == nil || len(c.rows) >= maxAccountRows {
		if commits < c.commits {
			return // a newer generation is being kept
		}
		c.commits, c.rows = commits, map[string]account{}
	}
	c.rows[a.DID] = *a
}

// maxAccountRows bounds accountRows: about 300 bytes each.
const maxAccountRows = 4096

// serviceSecret returns the named secret, generating and storing size random bytes the
// first time, so a node started with no config keeps its sessions valid across restarts.
func (n *Node) serviceSecret(ctx context.Context, name string, size int) ([]byte, error) {
	fresh := make([]byte, size)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("generate service secret %s: %w", name, err)
	}
	return n.serviceSecretOr(ctx, name, fresh)
}

// serviceSecretOr returns the named secret, storing fresh as its value the first time.
func (n *Node) serviceSecretOr(ctx context.Context, name string, fresh []byte) ([]byte, error) {
	var secret []byte
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, "SELECT value FROM service_secret WHERE name = ?", name).Scan(&secret)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		secret = fresh
		_, err = tx.ExecContext(ctx, "INSERT INTO service_secret (name, value) VALUES (?, ?)", name, secret)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load service secret %s: %w", name, err)
	}
	return secret, nil
}

// now returns the node's clock in UTC; tests replace clock.
func (n *Node) now() time.Time { return n.clock().UTC() }

// timestamp formats t as the protocol's datetime (RFC 3339, milliseconds, Z).
func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// isConflict reports whether err is a uniqueness violation.
func isConflict(err error) bool { return errors.Is(sqlite.MapError(err), sqlite.ErrConflict) }

// insertAccount stores a new account row inside tx, answering a taken handle or email with
// the XRPC errors createAccount documents.
func insertAccount(ctx context.Context, tx *sql.Tx, a *account) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO account (did, handle, email, password_hash, created_at, deactivated_at)
		VALUES (?, ?, nullif(?, ''), ?, ?, nullif(?, ''))`,
		a.DID, a.Handle, a.Email, a.PasswordHash, a.CreatedAt, a.DeactivatedAt)
	if !isConflict(err) {
		return err
	}
	var taken int
	tx.QueryRowContext(ctx, "SELECT count(*) FROM account WHERE handle = ?", a.Handle).Scan(&taken)
	if taken > 0 {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "HandleNotAvailable", Message: "Handle already taken: " + a.Handle}
	}
	if a.Email != "" {
		tx.QueryRowContext(ctx, "SELECT count(*) FROM account WHERE email = ?", a.Email).Scan(&taken)
		if taken > 0 {
			return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "Email already taken: " + a.Email}
		}
	}
	return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "account already exists", Err: err}
}
