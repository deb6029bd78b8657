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
	n := b.n
	if ok, _, _, _ := n.limiter.allow(strings.ToLower(identifier)+"\x00web", limitCreateSession5m, limitCreateSessionDay); !ok {
		return "", "", web.ErrRateLimited
	}
	if identifier == "" || password == "" || len(password) > maxPasswordLen {
		return "", "", web.ErrBadCredentials
	}
	acct, err := n.accountBy(ctx, identifier)
	if errors.Is(err, errAccountNotFound) {
		return "", "", web.ErrBadCredentials
	}
	if err != nil {
		return "", "", err
	}
	if _, _, err := n.checkLogin(ctx, acct, password); err != nil {
		if errors.Is(err, errBadLogin) {
			return "", "", web.ErrBadCredentials
		}
		return "", "", err
	}
	if !acct.Active() {
		return "", "", fmt.Errorf("%w: account is %s", web.ErrBadCredentials, acct.Status())
	}
	return acct.DID, acct.Handle, nil
}

// write applies one record write for did like the XRPC handlers: the account must be
// active, and the call returns once the AppView has indexed it.
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

func (b webBackend) create(ctx context.Context, did, collection string, record map[string]any) (*repo.CommitEvent, error) {
	raw, err := json.Marshal(record)
	if err != nil {
		return nil, err
	}
	wr, err := parseWrite(repo.ActionCreate, collection, "", raw)
	if err != nil {
		return nil, err
	}
	return b.write(ctx, did, wr)
}

// CreatePost writes an app.bsky.feed.post.
func (b webBackend) CreatePost(ctx context.Context, did, text string, reply *web.ReplyRef) (string, error) {
	rec := map[string]any{"$type": "app.bsky.feed.post", "text": text, "createdAt": timestamp(b.n.now())}
	if reply != nil {
		rec["reply"] = map[string]any{
			"root":   map[string]string{"uri": reply.Root.URI, "cid": reply.Root.CID},
			"parent": map[string]string{"uri": reply.Parent.URI, "cid": reply.Parent.CID},
		}
	}
	ev, err := b.create(ctx, did, "app.bsky.feed.post", rec)
	if err != nil {
		return "", err
	}
	return ev.Results[0].URI.String(), nil
}

// Like writes an app.bsky.feed.like of uri/cid.
func (b webBackend) Like(ctx context.Context, did, uri, cid string) error {
	_, err := b.create(ctx, did, "app.bsky.feed.like", map[string]any{"$type": "app.bsky.feed.like",
		"subject": map[string]string{"uri": uri, "cid": cid}, "createdAt": timestamp(b.n.now())})
	return err
}

// Follow writes an app.bsky.graph.follow of subject.
func (b webBackend) Follow(ctx context.Context, did, subject string) error {
	_, err := b.create(ctx, did, "app.bsky.graph.follow", map[string]any{"$type": "app.bsky.graph.follow",
		"subject": subject, "createdAt": timestamp(b.n.now())})
	return err
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
	return err
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
