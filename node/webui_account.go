package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/blobs"
	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/web"
)

// formError turns a refusal the XRPC API would answer with a 4xx into a web.FormError
// carrying the same message, so that the page shows it; anything else stays an error.
func formError(err error) error {
	if err == nil {
		return nil
	}
	var xe *xrpc.Error
	if errors.As(err, &xe) {
		if xe.Status < http.StatusInternalServerError {
			return &web.FormError{Message: xe.Message}
		}
		return err
	}
	for _, e := range xrpcErrors {
		if e.status < http.StatusInternalServerError && errors.Is(err, e.target) {
			return &web.FormError{Message: err.Error()}
		}
	}
	return err
}

// UploadBlob stores a blob for did like uploadBlob, for an active account only.
func (b webBackend) UploadBlob(ctx context.Context, did, mimeType string, body io.Reader) (web.Blob, error) {
	acct, err := b.n.accountByDID(ctx, did)
	if err != nil {
		return web.Blob{}, err
	}
	if !acct.Active() {
		return web.Blob{}, formError(errAccountInactive)
	}
	ref, err := b.n.blobs.Upload(ctx, syntax.DID(did), mimeType, body)
	switch {
	case errors.Is(err, blobs.ErrTooLarge):
		return web.Blob{}, &web.FormError{Message: "The file is larger than this server accepts."}
	case errors.Is(err, blobs.ErrQuotaExceeded):
		return web.Blob{}, &web.FormError{Message: "Your account has no room left for files."}
	case err != nil:
		return web.Blob{}, formError(err)
	}
	return web.Blob{CID: ref.CID.String(), MimeType: ref.MimeType, Size: ref.Size}, nil
}

// ResolveHandle resolves handle with the node's identity resolver (local accounts in
// process, others by DNS or well-known, cached).
func (b webBackend) ResolveHandle(ctx context.Context, handle string) (string, error) {
	h, err := syntax.ParseHandle(handle)
	if err != nil {
		return "", fmt.Errorf("resolve handle: %w", err)
	}
	did, err := b.n.ident.resolver.ResolveHandle(ctx, h.Normalize())
	if err != nil {
		return "", fmt.Errorf("resolve handle %s: %w", h, err)
	}
	return did.String(), nil
}

// callAs runs one of the node's XRPC handlers in process as did, with in as its JSON body,
// and decodes its JSON answer into out. The settings the web UI offers are the account
// rules those handlers hold (rate limits, takedowns, token checks, the PLC update of a
// handle change), and calling them keeps one copy of those rules.
func (b webBackend) callAs(ctx context.Context, did string, h func(http.ResponseWriter, *http.Request) error, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	r, err := http.NewRequestWithContext(withAuth(ctx, &authInfo{DID: did, Scope: scopeAccess}), http.MethodPost, "/", strings.NewReader(string(body)))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	r.Header.Set("Content-Type", "application/json")
	w := &bufferedResponse{header: http.Header{}}
	if err := h(w, r); err != nil {
		return formError(err)
	}
	if out == nil || w.body.Len() == 0 {
		return nil
	}
	if err := json.Unmarshal(w.body.Bytes(), out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// ListAppPasswords lists did's app passwords.
func (b webBackend) ListAppPasswords(ctx context.Context, did string) ([]web.AppPassword, error) {
	var out struct {
		Passwords []appPasswordView `json:"passwords"`
	}
	if err := b.callAs(ctx, did, b.n.handleComAtprotoServerListAppPasswords, struct{}{}, &out); err != nil {
		return nil, fmt.Errorf("list app passwords: %w", err)
	}
	list := make([]web.AppPassword, len(out.Passwords))
	for i, p := range out.Passwords {
		list[i] = web.AppPassword{Name: p.Name, CreatedAt: p.CreatedAt}
	}
	return list, nil
}

// CreateAppPassword makes an unprivileged app password: the web UI offers no privileged
// ones, which can read DMs.
func (b webBackend) CreateAppPassword(ctx context.Context, did, name string) (string, error) {
	var out appPasswordView
	if err := b.callAs(ctx, did, b.n.handleComAtprotoServerCreateAppPassword, map[string]any{"name": name}, &out); err != nil {
		return "", fmt.Errorf("create app password: %w", err)
	}
	return out.Password, nil
}

// RevokeAppPassword revokes the app password name.
func (b webBackend) RevokeAppPassword(ctx context.Context, did, name string) error {
	if err := b.callAs(ctx, did, b.n.handleComAtprotoServerRevokeAppPassword, map[string]any{"name": name}, nil); err != nil {
		return fmt.Errorf("revoke app password: %w", err)
	}
	return nil
}

// UpdateHandle changes did's handle as updateHandle does.
func (b webBackend) UpdateHandle(ctx context.Context, did, handle string) (string, error) {
	if err := b.callAs(ctx, did, b.n.ident.handleComAtprotoIdentityUpdateHandle, map[string]any{"handle": handle}, nil); err != nil {
		return "", fmt.Errorf("update handle: %w", err)
	}
	acct, err := b.n.accountByDID(ctx, did)
	if err != nil {
		return "", err
	}
	return acct.Handle, nil
}

// ExportRepo writes did's repository as getRepo serves it.
func (b webBackend) ExportRepo(ctx context.Context, did string, w io.Writer) error {
	if _, _, err := b.n.servableRepo(ctx, did); err != nil {
		return formError(err)
	}
	return b.n.repos.ExportCAR(ctx, syntax.DID(did), "", w)
}

// DeactivateAccount deactivates did as deactivateAccount does.
func (b webBackend) DeactivateAccount(ctx context.Context, did string) error {
	if err := b.callAs(ctx, did, b.n.handleComAtprotoServerDeactivateAccount, struct{}{}, nil); err != nil {
		return fmt.Errorf("deactivate account: %w", err)
	}
	return nil
}

// RequestAccountDelete issues the deletion code as requestAccountDelete does.
func (b webBackend) RequestAccountDelete(ctx context.Context, did string) error {
	if err := b.callAs(ctx, did, b.n.handleComAtprotoServerRequestAccountDelete, struct{}{}, nil); err != nil {
		return fmt.Errorf("request account deletion: %w", err)
	}
	return nil
}

// DeleteAccount deletes did as deleteAccount does, with its password and code.
func (b webBackend) DeleteAccount(ctx context.Context, did, password, token string) error {
	in := map[string]any{"did": did, "password": password, "token": token}
	if err := b.callAs(ctx, did, b.n.handleComAtprotoServerDeleteAccount, in, nil); err != nil {
		return fmt.Errorf("delete account: %w", err)
	}
	return nil
}
