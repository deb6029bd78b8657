package node

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/identity"
	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/relay"
)

// Bounds on the name part of a handle under one of our user domains, as the reference
// PDS applies them.
const (
	minHandleName = 3
	maxHandleName = 18
)

// normalizeUserHandle checks a requested handle under one of the node's user domains and
// returns it lower-cased.
func (n *Node) normalizeUserHandle(raw string) (syntax.Handle, error) {
	h, err := xrpc.ParseHandle(strings.TrimSpace(raw))
	if err != nil {
		return "", &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidHandle", Message: "Input/handle must be a valid handle", Err: err}
	}
	for _, domain := range n.cfg.UserDomains() {
		name, ok := strings.CutSuffix(h.String(), domain)
		if !ok {
			continue
		}
		switch {
		case strings.Contains(name, "."):
			return "", &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidHandle", Message: "Invalid characters in handle"}
		case len(name) < minHandleName:
			return "", &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidHandle", Message: "Handle too short"}
		case len(name) > maxHandleName:
			return "", &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidHandle", Message: "Handle too long"}
		}
		return h, nil
	}
	return "", &xrpc.Error{Status: http.StatusBadRequest, Name: "UnsupportedDomain",
		Message: "Not a supported handle domain; sign up under " + strings.Join(n.cfg.UserDomains(), " or ")}
}

// newAccountInput is com.atproto.server.createAccount's input.
type newAccountInput struct {
	Handle      string `json:"handle"`
	Email       string `json:"email"`
	Password    string `json:"password"`
	InviteCode  string `json:"inviteCode"`
	DID         string `json:"did"`
	RecoveryKey string `json:"recoveryKey"`
	// byAdmin is set when the admin creates the account, which needs no invite.
	byAdmin bool
}

func (n *Node) handleComAtprotoServerCreateAccount(w http.ResponseWriter, r *http.Request) error {
	var in newAccountInput
	if err := decodeJSON(w, r, int64(n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	if err := n.rateLimit(w, n.clientIP(r), limitCreateAccount); err != nil {
		return err
	}
	if strings.HasPrefix(r.Header.Get("Authorization"), "Basic ") {
		if _, err := n.authenticateAdmin(r); err != nil {
			return err
		}
		in.byAdmin = true
	}
	if in.DID != "" {
		create := n.createMigratingAccount
		if strings.HasPrefix(in.DID, "did:web:") && !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			create = func(ctx context.Context, _ *http.Request, in newAccountInput) (*account, error) {
				return n.createWebAccount(ctx, in)
			}
		}
		acct, err := create(r.Context(), r, in)
		if err != nil {
			return err
		}
		out, err := n.newSession(r.Context(), acct, scopeAccess, "")
		if err != nil {
			return err
		}
		xrpc.WriteJSON(w, http.StatusOK, out)
		return nil
	}
	acct, err := n.createAccount(r.Context(), in)
	if err != nil {
		return err
	}
	out, err := n.newSession(r.Context(), acct, scopeAccess, "")
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

// createAccount makes a new account with a fresh did:plc: signing key, PLC genesis
// operation, empty repository, account row, and the creation events (#identity, #account,
// #commit, #sync). Used by the XRPC handler and the CLI.
func (n *Node) createAccount(ctx context.Context, in newAccountInput) (*account, error) {
	handle, err := n.normalizeUserHandle(in.Handle)
	if err != nil {
		return nil, err
	}
	var email string
	if in.Email != "" {
		if email, err = normalizeEmail(in.Email); err != nil {
			return nil, err
		}
	}
	if err := checkNewPassword(in.Password); err != nil {
		return nil, err
	}
	needInvite := n.cfg.InvitesRequired() && !in.byAdmin
	if needInvite && in.InviteCode == "" {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidInviteCode", Message: "No invite code provided"}
	}
	var recovery atcrypto.PublicKey
	if in.RecoveryKey != "" {
		if recovery, err = atcrypto.ParsePublicDIDKey(in.RecoveryKey); err != nil {
			return nil, xrpc.InvalidRequest("recoveryKey must be a did:key")
		}
	}
	// Refuse a taken handle or email before any PLC work; the insert re-checks under its lock.
	if _, err := n.accountBy(ctx, handle.String()); err == nil {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "HandleNotAvailable", Message: "Handle already taken: " + handle.String()}
	} else if !errors.Is(err, errAccountNotFound) {
		return nil, err
	}
	hash, err := hashPassword(in.Password)
	if err != nil {
		return nil, err
	}

	signing, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	signingPub, err := signing.PublicKey()
	if err != nil {
		return nil, err
	}
	rotation, err := n.plcRotationKey(ctx)
	if err != nil {
		return nil, err
	}
	rotationPub, err := rotation.PublicKey()
	if err != nil {
		return nil, err
	}
	rotationKeys := []atcrypto.PublicKey{rotationPub}
	if recovery != nil {
		// The user's own key ranks first, so they can override this server.
		rotationKeys = []atcrypto.PublicKey{recovery, rotationPub}
	}
	st := identity.AccountState(handle, n.PublicURL(), signingPub, rotationKeys...)
	op, did, err := identity.NewGenesis(st, rotation)
	if err != nil {
		return nil, fmt.Errorf("sign PLC genesis: %w", err)
	}

	acct := &account{DID: did.String(), Handle: handle.String(), Email: email, PasswordHash: hash, CreatedAt: timestamp(n.now())}
	invite := ""
	if needInvite {
		invite = strings.TrimSpace(in.InviteCode)
	}
	if err := n.establishAccount(ctx, acct, signing, invite, func() error {
		if err := n.plc.Submit(ctx, did, op); err != nil {
			return &xrpc.Error{Status: http.StatusBadGateway, Name: "UpstreamFailure", Message: "the PLC directory refused the new DID", Err: err}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	n.log.InfoContext(ctx, "account created", "did", acct.DID, "handle", acct.Handle)
	return acct, nil
}

// establishAccount makes a new account exist: its empty repository signed with key, then
// register (publishing the identity, e.g. the PLC genesis), then the account row (using
// the invite code when one is needed), then the creation events #identity, #account,
// #commit and #sync. A failure before the row removes the repository again; a crash leaves
// at worst an orphan repository folder, which no account names.
func (n *Node) establishAccount(ctx context.Context, acct *account, key atcrypto.PrivateKeyExportable, invite string, register func() error) error {
	did := syntax.DID(acct.DID)
	commit, err := n.repos.Create(ctx, did, key)
	if err != nil {
		return fmt.Errorf("create repo: %w", err)
	}
	if err := register(); err != nil {
		n.repos.Delete(context.WithoutCancel(ctx), did)
		return err
	}
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		if invite != "" {
			if err := useInviteCode(ctx, tx, invite, acct.DID, acct.CreatedAt); err != nil {
				return err
			}
		}
		return insertAccount(ctx, tx, acct)
	})
	if err != nil {
		n.repos.Delete(context.WithoutCancel(ctx), did)
		return err
	}
	n.hosted.add(acct.DID)
	// The account exists from here on; events tell the network.
	evCtx := context.WithoutCancel(ctx)
	if err := n.emit(evCtx, relay.NewIdentity(did, syntax.Handle(acct.Handle))); err != nil {
		return err
	}
	if err := n.emit(evCtx, relay.NewAccount(did, true, "")); err != nil {
		return err
	}
	if _, err := n.sequenceCommit(evCtx, commit); err != nil {
		return err
	}
	return n.emitSync(evCtx, did)
}
