package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/repo"
	"github.com/aerie-social/aerie/web"
)

// webBackend is the node as the web UI's Backend: the same account checks, rate limits and
// repo writes as the XRPC handlers, without an HTTP round trip.
type webBackend struct{ n *Node }

// Login checks credentials as createSession does, under the same rate limit.
func (b webBackend) Login(ctx context.Context, identifier, password string) (string, string, error) {
	acct, err := b.checkCredentials(ctx, identifier, password)
	if err != nil {
		return "", "", err
	}
	if acct.TakedownRef == "" && acct.DeactivatedAt != "" {
		return "", "", web.ErrDeactivated
	}
	if !acct.Active() {
		return "", "", fmt.Errorf("%w: account is %s", web.ErrBadCredentials, acct.Status())
	}
	return acct.DID, acct.Handle, nil
}

// Reactivate checks credentials as Login does and reactivates a deactivated account as
// activateAccount does.
func (b webBackend) Reactivate(ctx context.Context, identifier, password string) (string, string, error) {
	acct, err := b.checkCredentials(ctx, identifier, password)
	if err != nil {
		return "", "", err
	}
	if err := b.n.activate(ctx, acct); err != nil {
		return "", "", formError(err)
	}
	return acct.DID, acct.Handle, nil
}

// checkCredentials finds the account identifier names and checks password against it,
// under createSession's rate limit.
func (b webBackend) checkCredentials(ctx context.Context, identifier, password string) (*account, error) {
	n := b.n
	if ok, _, _, _ := n.limiter.allow(strings.ToLower(identifier)+"\x00web", limitCreateSession5m, limitCreateSessionDay); !ok {
		return nil, web.ErrRateLimited
	}
	if identifier == "" || password == "" || len(password) > maxPasswordLen {
		return nil, web.ErrBadCredentials
	}
	acct, err := n.accountBy(ctx, identifier)
	if errors.Is(err, errAccountNotFound) {
		return nil, web.ErrBadCredentials
	}
	if err != nil {
		return nil, err
	}
	if _, _, err := n.checkLogin(ctx, acct, password); err != nil {
		if errors.Is(err, errBadLogin) {
			return nil, web.ErrBadCredentials
		}
		return nil, err
	}
	return acct, nil
}

// write applies one record write for did like the XRPC handlers: the account must be
// active, and every AppView read after the call returns shows the write.
func (b webBackend) write(ctx context.Context, did string, w repo.Write) (*repo.CommitEvent, error) {
	acct, err := b.n.accountByDID(ctx, did)
	if err != nil {
		return nil, err
	}
	if !acct.Active() {
		return nil, errAccountInactive
	}
	return b.n.applyWrites(ctx, acct, []repo.Write{w}, nil, repo.ValidateKnown)
}

// CreateRecord writes record under a new TID.
func (b webBackend) CreateRecord(ctx context.Context, did, collection string, record map[string]any) (web.StrongRef, error) {
	ev, err := b.writeRecord(ctx, did, repo.ActionCreate, collection, "", record)
	if err != nil {
		return web.StrongRef{}, formError(err)
	}
	return web.StrongRef{URI: ev.Results[0].URI.String(), CID: ev.Results[0].CID.String()}, nil
}

// PutRecord creates or replaces collection/rkey, as putRecord does: an update, and a
// create when the record is absent.
func (b webBackend) PutRecord(ctx context.Context, did, collection, rkey string, record map[string]any) error {
	_, err := b.writeRecord(ctx, did, repo.ActionUpdate, collection, rkey, record)
	if errors.Is(err, repo.ErrRecordNotFound) {
		_, err = b.writeRecord(ctx, did, repo.ActionCreate, collection, rkey, record)
	}
	return formError(err)
}

func (b webBackend) writeRecord(ctx context.Context, did string, action repo.Action, collection, rkey string, record map[string]any) (*repo.CommitEvent, error) {
	raw, err := json.Marshal(record)
	if err != nil {
		return nil, fmt.Errorf("encode %s record: %w", collection, err)
	}
	wr, err := parseWrite(action, collection, rkey, raw)
	if err != nil {
		return nil, err
	}
	return b.write(ctx, did, wr)
}

// GetRecord reads did's record as JSON.
func (b webBackend) GetRecord(ctx context.Context, did, collection, rkey string) (map[string]any, error) {
	nsid, err := syntax.ParseNSID(collection)
	if err != nil {
		return nil, fmt.Errorf("get record: %w", err)
	}
	key, err := syntax.ParseRecordKey(rkey)
	if err != nil {
		return nil, fmt.Errorf("get record: %w", err)
	}
	_, data, err := b.n.repos.GetRecord(ctx, syntax.DID(did), nsid, key)
	if errors.Is(err, repo.ErrRecordNotFound) {
		return nil, fmt.Errorf("get %s/%s: %w", collection, rkey, web.ErrNoRecord)
	}
	if err != nil {
		return nil, err
	}
	raw, err := repo.RecordJSON(data)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode %s/%s: %w", collection, rkey, err)
	}
	return out, nil
}

// DeleteRecord deletes uri, which must be in did's own repo.
func (b webBackend) DeleteRecord(ctx context.Context, did, uri string) error {
	u, err := syntax.ParseATURI(uri)
	if err != nil {
		return xrpc.InvalidRequest("not an at:// URI")
	}
	if u.Authority().String() != did {
		return errRepoNotOwned
	}
	wr, err := parseWrite(repo.ActionDelete, u.Collection().String(), u.RecordKey().String(), nil)
	if err != nil {
		return err
	}
	_, err = b.write(ctx, did, wr)
	return formError(err)
}

// SignUpOptions offers the node's user domains and its invite rule.
func (b webBackend) SignUpOptions() ([]string, bool) {
	return b.n.cfg.UserDomains(), b.n.cfg.InvitesRequired()
}

// SignUp creates an account exactly as createAccount does, under the same rate limit;
// refusals meant for the person (taken handle, short password, bad invite) become
// web.FormErrors with the XRPC message.
func (b webBackend) SignUp(ctx context.Context, handle, email, password, invite string) (string, string, error) {
	if ok, _, _, _ := b.n.limiter.allow("web-signup", limitCreateAccount); !ok {
		return "", "", web.ErrRateLimited
	}
	acct, err := b.n.createAccount(ctx, newAccountInput{Handle: handle, Email: email, Password: password, InviteCode: invite})
	var xe *xrpc.Error
	if errors.As(err, &xe) && xe.Status < 500 {
		return "", "", &web.FormError{Message: xe.Message}
	}
	if err != nil {
		return "", "", err
	}
	return acct.DID, acct.Handle, nil
}
