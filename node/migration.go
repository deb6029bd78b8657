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

	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/repo"
)

// maxImportSize bounds an importRepo body: far above any real repository (a repo with a
// million records is a few hundred MB), small enough that a bad client cannot fill the disk.
const maxImportSize = 1 << 30

// createMigratingAccount is createAccount for an identity that already exists elsewhere
// (atproto-reference §8.5): the caller proves control of the DID with a service JWT the
// DID's current PDS issued for com.atproto.server.createAccount. The account starts
// deactivated, with a signing key reserved for the new PLC operation; its repository
// arrives by importRepo and it goes live with activateAccount.
func (n *Node) createMigratingAccount(ctx context.Context, r *http.Request, in newAccountInput) (*account, error) {
	did, err := xrpc.ParseDID(in.DID)
	if err != nil {
		return nil, err
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil, &xrpc.Error{Status: http.StatusUnauthorized, Name: "AuthMissing",
			Message: "creating an account for an existing DID needs a service JWT from that DID"}
	}
	sa, err := n.ident.verifyServiceAuth(ctx, token, "com.atproto.server.createAccount")
	if err != nil {
		return nil, err
	}
	if sa.Iss != did {
		return nil, &xrpc.Error{Status: http.StatusUnauthorized, Name: "AuthenticationRequired", Message: "the service JWT was issued by another DID"}
	}
	handle, err := xrpc.ParseHandle(strings.TrimSpace(in.Handle))
	if err != nil {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidHandle", Message: "Input/handle must be a valid handle", Err: err}
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
	hash, err := hashPassword(in.Password)
	if err != nil {
		return nil, err
	}
	if _, err := n.reserveSigningKey(ctx, did); err != nil {
		return nil, err
	}
	now := timestamp(n.now())
	acct := &account{DID: did.String(), Handle: handle.String(), Email: email, PasswordHash: hash, CreatedAt: now, DeactivatedAt: now}
	if err := n.db.Write(ctx, func(tx *sql.Tx) error { return insertAccount(ctx, tx, acct) }); err != nil {
		return nil, err
	}
	n.hosted.add(acct.DID)
	n.log.InfoContext(ctx, "migrating account created, deactivated until activation", "did", acct.DID, "handle", acct.Handle)
	return acct, nil
}

// handleComAtprotoRepoImportRepo loads a repository CAR exported by the account's previous
// PDS, verified against the signing key its DID document names now. It is for a
// deactivated (migrating) account; importing again replaces the earlier import.
func (n *Node) handleComAtprotoRepoImportRepo(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	acct, err := n.currentAccount(ctx)
	if err != nil {
		return err
	}
	if acct.DeactivatedAt == "" {
		return xrpc.InvalidRequest("importRepo replaces the repository, so the account must be deactivated (migrating) first")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/vnd.ipld.car") {
		return xrpc.InvalidRequest("body must be application/vnd.ipld.car, not %q", ct)
	}
	did := syntax.DID(acct.DID)
	ident, err := n.ident.resolver.LookupIdentity(ctx, did.AtIdentifier())
	if err != nil {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "cannot resolve the account's DID document", Err: err}
	}
	verifyKey, err := ident.PublicKey()
	if err != nil {
		return xrpc.InvalidRequest("the account's DID document names no usable signing key")
	}
	signing, err := n.migrationSigningKey(ctx, did)
	if err != nil {
		return err
	}
	body := http.MaxBytesReader(w, r.Body, maxImportSize)
	if exists, err := n.repos.Exists(ctx, did); err != nil {
		return err
	} else if exists {
		if err := n.repos.Delete(ctx, did); err != nil {
			return fmt.Errorf("replace earlier import: %w", err)
		}
	}
	if _, err := n.repos.Import(ctx, did, body, verifyKey, signing); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return err
		}
		if errors.Is(err, repo.ErrInvalidCAR) || errors.Is(err, repo.ErrInvalidCommit) || errors.Is(err, repo.ErrBadSignature) ||
			errors.Is(err, repo.ErrInvalidMST) || errors.Is(err, repo.ErrTooLarge) {
			return xrpc.InvalidRequest("the repository does not verify: %s", err)
		}
		return err
	}
	n.log.InfoContext(ctx, "repository imported", "did", acct.DID)
	w.WriteHeader(http.StatusOK)
	return nil
}

// migrationSigningKey is the key a migrating account's repository is signed with here:
// the one already in its repo after an earlier import, else the one reserved for it.
func (n *Node) migrationSigningKey(ctx context.Context, did syntax.DID) (atcrypto.PrivateKeyExportable, error) {
	if key, err := n.repos.SigningKey(ctx, did); err == nil {
		return key, nil
	} else if !errors.Is(err, repo.ErrRepoNotFound) {
		return nil, err
	}
	key, ok, err := n.takeReservedKey(ctx, did.String())
	if err != nil {
		return nil, err
	}
	if !ok {
		// The reservation expired: a fresh key is as good, the PLC update names it later.
		if key, err = atcrypto.GeneratePrivateKeyK256(); err != nil {
			return nil, err
		}
	}
	return key, nil
}

// checkIdentityPointsHere refuses to activate an account whose DID document does not
// name this PDS and its repository key: activating would announce a repo that every
// consumer then rejects.
func (n *Node) checkIdentityPointsHere(ctx context.Context, did syntax.DID) error {
	key, err := n.repos.SigningKey(ctx, did)
	if errors.Is(err, repo.ErrRepoNotFound) {
		return xrpc.InvalidRequest("the account has no repository here yet: import it with com.atproto.repo.importRepo")
	}
	if err != nil {
		return err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return err
	}
	n.ident.forget(ctx, did)
	ident, err := n.ident.resolver.LookupIdentity(ctx, did.AtIdentifier())
	if err != nil {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "cannot resolve the account's DID document", Err: err}
	}
	if got := ident.PDSEndpoint(); strings.TrimSuffix(got, "/") != n.PublicURL() {
		return xrpc.InvalidRequest("the DID document names %q as PDS, not this server (%s); update it first", got, n.PublicURL())
	}
	docKey, err := ident.PublicKey()
	if err != nil || docKey.DIDKey() != pub.DIDKey() {
		return xrpc.InvalidRequest("the DID document's signing key is not this server's key for the account; update it first")
	}
	return nil
}
