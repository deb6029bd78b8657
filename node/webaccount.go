package node

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/xrpc"
)

// createWebAccount creates an account for a did:web identity its owner hosts on their own
// domain. Publishing the DID document is the proof of control: it must already name this
// PDS as #atproto_pds and, as its #atproto key, the key this node reserved for the DID
// (com.atproto.server.reserveSigningKey {did}). The account is active at once, with an
// empty repository signed by that key.
func (n *Node) createWebAccount(ctx context.Context, in newAccountInput) (*account, error) {
	did, err := xrpc.ParseDID(in.DID)
	if err != nil || did.Method() != "web" {
		return nil, xrpc.InvalidRequest("did must be a did:web")
	}
	needInvite := n.cfg.InvitesRequired() && !in.byAdmin
	if needInvite && in.InviteCode == "" {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidInviteCode", Message: "No invite code provided"}
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
	key, err := n.reservedKeyFor(ctx, did)
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	n.ident.forget(ctx, did)
	ident, err := n.ident.resolver.LookupIdentity(ctx, did.AtIdentifier())
	if err != nil {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "UnresolvableDid", Message: "cannot fetch the did:web document", Err: err}
	}
	if got := strings.TrimSuffix(ident.PDSEndpoint(), "/"); got != n.PublicURL() {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "IncompatibleDidDoc",
			Message: "the DID document must name " + n.PublicURL() + " as #atproto_pds, not " + got}
	}
	if docKey, err := ident.PublicKey(); err != nil || docKey.DIDKey() != pub.DIDKey() {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "IncompatibleDidDoc",
			Message: "the DID document's #atproto key must be " + pub.DIDKey() + ", the key reserved for it here"}
	}
	handle, err := n.normalizeUserHandle(in.Handle)
	if err != nil {
		// A handle outside our domains must be proven both ways, as the resolver did.
		h, perr := xrpc.ParseHandle(strings.TrimSpace(in.Handle))
		if perr != nil || ident.Handle != h {
			return nil, err
		}
		handle = h
	}
	hash, err := hashPassword(in.Password)
	if err != nil {
		return nil, err
	}
	acct := &account{DID: did.String(), Handle: handle.String(), Email: email, PasswordHash: hash, CreatedAt: timestamp(n.now())}
	invite := ""
	if needInvite {
		invite = strings.TrimSpace(in.InviteCode)
	}
	err = n.establishAccount(ctx, acct, key, invite, func() error {
		_, _, err := n.takeReservedKey(ctx, did.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	n.log.InfoContext(ctx, "did:web account created", "did", acct.DID, "handle", acct.Handle)
	return acct, nil
}

// reservedKeyFor returns the key reserved for did without consuming it, so a request
// refused for a wrong DID document can be retried after the owner fixes it.
func (n *Node) reservedKeyFor(ctx context.Context, did syntax.DID) (*atcrypto.PrivateKeyK256, error) {
	var raw []byte
	err := n.db.Read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, "SELECT private_key FROM reserved_key WHERE did = ?", did.String()).Scan(&raw)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, xrpc.InvalidRequest("no signing key is reserved for %s: call com.atproto.server.reserveSigningKey with this did, then publish that key in its DID document", did)
	}
	if err != nil {
		return nil, err
	}
	return atcrypto.ParsePrivateBytesK256(raw)
}
