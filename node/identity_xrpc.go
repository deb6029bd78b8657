package node

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/go-chi/chi/v5"

	"github.com/aerie-social/aerie/node/identity"
	"github.com/aerie-social/aerie/node/xrpc"
	"github.com/aerie-social/aerie/relay"
)

// embeddedPLCURL is the base URL the resolver uses for the embedded directory when it has
// no listener: requests to it never leave the process (see inProcessTransport).
const embeddedPLCURL = "http://plc.aerie.invalid"

// identityService is the node's identity surface: com.atproto.identity.*, service auth,
// reserved signing keys and the well-known documents. It holds the resolver (with its
// cache), the jti replay cache and the service signing key. It is safe for concurrent use.
type identityService struct {
	n        *Node
	resolver *identity.Resolver
	replay   *jtiCache

	// plcMu serialises identity changes this node makes (handle updates, submitted PLC
	// operations): two racing for one DID would build on the same prev and fork the chain,
	// or leave the account row and the PLC document naming different handles.
	plcMu sync.Mutex

	keyMu      sync.Mutex
	serviceKey *atcrypto.PrivateKeyK256 // loaded on first use
}

// identityOptions replaces what an identityService reaches outside the process; tests
// use it for fake DNS and HTTP. The zero value uses the system resolver and the network.
type identityOptions struct {
	// DNS answers _atproto TXT lookups.
	DNS identity.TXTResolver
	// HTTPClient fetches DID documents and well-known handles.
	HTTPClient *http.Client
}

// newIdentityService builds the identity service of n, whose PLC directory must be open.
// It does no I/O. When n runs the embedded directory, the resolver reads it in process
// instead of over a loopback connection (there may be no listener at all).
func newIdentityService(n *Node, opts identityOptions) *identityService {
	hc := opts.HTTPClient
	if hc == nil {
		hc = identity.NewHTTPClient(n.cfg.Net.AllowPrivateNetwork, 0)
	}
	plcURL := n.cfg.PLCURL()
	if n.plcDir != nil {
		if plcURL == "" {
			plcURL = embeddedPLCURL
		}
		host := ""
		if u, err := url.Parse(plcURL); err == nil {
			host = u.Host
		}
		next := hc.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		c := *hc
		c.Transport = &inProcessTransport{host: host, handler: n.plcDir.Handler(), next: next}
		hc = &c
	}
	return &identityService{
		n:      n,
		replay: newJTICache(),
		resolver: identity.NewResolver(identity.ResolverOptions{
			PLCURL:       plcURL,
			HTTPClient:   hc,
			DNS:          opts.DNS,
			LocalHandles: localHandles{n},
			DevHandles:   n.cfg.Net.AllowPrivateNetwork,
		}),
	}
}

// inProcessTransport answers requests for one host with an in-process handler and sends
// every other request on to next.
type inProcessTransport struct {
	host    string
	handler http.Handler
	next    http.RoundTripper
}

func (t *inProcessTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host {
		return t.next.RoundTrip(req)
	}
	// A server-side request: a body is never nil, and the caller's chi routing state (the
	// request arrives with the context of the XRPC call that made it) must not leak into
	// the directory's router, which would take it for a sub-route.
	in := req.Clone(context.WithValue(req.Context(), chi.RouteCtxKey, (*chi.Context)(nil)))
	if in.Body == nil {
		in.Body = http.NoBody
	}
	in.RequestURI = req.URL.RequestURI()
	rec := &bufferedResponse{header: http.Header{}}
	t.handler.ServeHTTP(rec, in)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", rec.status, http.StatusText(rec.status)),
		StatusCode:    rec.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rec.header,
		Body:          io.NopCloser(bytes.NewReader(rec.body.Bytes())),
		ContentLength: int64(rec.body.Len()),
		Request:       req,
	}, nil
}

// bufferedResponse is the http.ResponseWriter of an in-process request.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// localHandles answers the resolver for handles hosted here, straight from aerie.sqlite:
// our own handles need no DNS, and .test handles have none.
type localHandles struct{ n *Node }

// DIDForHandle returns the DID of the active local account with handle. Deactivated and
// taken-down accounts are not served, as the reference PDS does not resolve them.
func (l localHandles) DIDForHandle(ctx context.Context, handle syntax.Handle) (syntax.DID, bool, error) {
	var did string
	err := l.n.db.Read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT did FROM account WHERE handle = ? AND deactivated_at IS NULL AND takedown_ref IS NULL`,
			handle.Normalize().String()).Scan(&did)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("look up local handle %s: %w", handle, err)
	}
	return syntax.DID(did), true, nil
}

// isUserDomainHandle reports whether h is under one of the node's user domains (or is the
// domain itself): such handles exist only in our account table.
func (n *Node) isUserDomainHandle(h syntax.Handle) bool {
	for _, d := range n.cfg.UserDomains() {
		if strings.HasSuffix(h.String(), d) || h.String() == strings.TrimPrefix(d, ".") {
			return true
		}
	}
	return false
}

// Resolution errors as the identity lexicons name them.
var (
	errHandleNotFound = &xrpc.Error{Status: http.StatusBadRequest, Name: "HandleNotFound", Message: "Unable to resolve handle"}
)

// resolutionError turns a resolver error into the lexicon's error: HandleNotFound,
// DidNotFound, DidDeactivated, or 502 UpstreamFailure when the network failed us.
func resolutionError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	switch {
	case errors.Is(err, identity.ErrHandleNotFound), errors.Is(err, identity.ErrHandleMismatch):
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "HandleNotFound", Message: "Unable to resolve handle", Err: err}
	case errors.Is(err, identity.ErrTombstoned):
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "DidDeactivated", Message: "DID is deactivated", Err: err}
	case errors.Is(err, identity.ErrDIDNotFound):
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "DidNotFound", Message: "DID not found", Err: err}
	case errors.Is(err, identity.ErrInvalidDocument), errors.Is(err, identity.ErrDIDMismatch):
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "DidNotFound", Message: "DID document is invalid", Err: err}
	case errors.Is(err, identity.ErrUnsupportedDID):
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "unsupported DID method", Err: err}
	}
	return &xrpc.Error{Status: http.StatusBadGateway, Name: "UpstreamFailure", Message: "identity resolution failed", Err: err}
}

func (s *identityService) handleComAtprotoIdentityResolveHandle(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	h, err := xrpc.ParseHandle(r.URL.Query().Get("handle"))
	if err != nil {
		return err
	}
	did, ok, err := localHandles{s.n}.DIDForHandle(ctx, h)
	if err != nil {
		return err
	}
	if !ok {
		if s.n.isUserDomainHandle(h) {
			// Handles under our domains live only in our table: no need to ask the network.
			return errHandleNotFound
		}
		if did, err = s.resolver.ResolveHandle(ctx, h); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Whatever went wrong, the handle did not resolve: the lexicon's only error.
			return &xrpc.Error{Status: http.StatusBadRequest, Name: "HandleNotFound", Message: "Unable to resolve handle", Err: err}
		}
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]string{"did": did.String()})
	return nil
}

func (s *identityService) handleComAtprotoIdentityResolveDid(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	did, err := xrpc.ParseDID(r.URL.Query().Get("did"))
	if err != nil {
		return err
	}
	doc, err := s.resolver.ResolveDID(ctx, did)
	if err != nil {
		return resolutionError(ctx, err)
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"didDoc": doc})
	return nil
}

func (s *identityService) handleComAtprotoIdentityResolveIdentity(w http.ResponseWriter, r *http.Request) error {
	id, err := xrpc.ParseATIdentifier(r.URL.Query().Get("identifier"))
	if err != nil {
		return err
	}
	out, err := s.resolveIdentity(r.Context(), id, false)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *identityService) handleComAtprotoIdentityRefreshIdentity(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Identifier string `json:"identifier"`
	}
	if err := decodeJSON(w, r, int64(s.n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	id, err := xrpc.ParseATIdentifier(in.Identifier)
	if err != nil {
		return err
	}
	out, err := s.resolveIdentity(r.Context(), id, true)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, out)
	return nil
}

// identityView is the output of resolveIdentity and refreshIdentity.
type identityView struct {
	DID    string          `json:"did"`
	Handle string          `json:"handle"`
	DIDDoc json.RawMessage `json:"didDoc"`
}

// resolveIdentity returns id's DID, verified handle (handle.invalid when it does not
// resolve back) and current DID document. With fresh it first forgets what the cache holds,
// so both directions are looked up again.
func (s *identityService) resolveIdentity(ctx context.Context, id syntax.AtIdentifier, fresh bool) (*identityView, error) {
	if fresh {
		if err := s.purge(ctx, id); err != nil {
			return nil, err
		}
	}
	ident, err := s.resolver.LookupIdentity(ctx, id)
	if err != nil {
		return nil, resolutionError(ctx, err)
	}
	if fresh && id.IsHandle() {
		// The handle was looked up again, but the DID it names may have come from the cache.
		if err := s.purge(ctx, ident.DID.AtIdentifier()); err != nil {
			return nil, err
		}
		if ident, err = s.resolver.LookupIdentity(ctx, ident.DID.AtIdentifier()); err != nil {
			return nil, resolutionError(ctx, err)
		}
		if h, _ := id.AsHandle(); ident.Handle != h {
			return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "HandleNotFound", Message: "Unable to resolve handle",
				Err: fmt.Errorf("%w: %s", identity.ErrHandleMismatch, h)}
		}
	}
	doc, err := s.resolver.ResolveDID(ctx, ident.DID)
	if err != nil {
		return nil, resolutionError(ctx, err)
	}
	return &identityView{DID: ident.DID.String(), Handle: ident.Handle.String(), DIDDoc: doc}, nil
}

// purge forgets what the resolver cache holds for id.
func (s *identityService) purge(ctx context.Context, id syntax.AtIdentifier) error {
	if h, err := id.AsHandle(); err == nil {
		return s.resolver.PurgeHandle(ctx, h)
	}
	did, err := id.AsDID()
	if err != nil {
		return xrpc.InvalidRequest("identifier must be a handle or a DID")
	}
	return s.resolver.Purge(ctx, did)
}

// forget purges a DID and its handles from the resolver after we changed them, so our own
// answers reflect the change at once. Purging an in-memory cache cannot fail in a way that
// matters, so errors are only logged.
func (s *identityService) forget(ctx context.Context, did syntax.DID, handles ...string) {
	if err := s.resolver.Purge(ctx, did); err != nil {
		s.n.log.WarnContext(ctx, "purge identity cache", "did", did, "err", err)
	}
	for _, h := range handles {
		if handle, err := syntax.ParseHandle(h); err == nil {
			if err := s.resolver.PurgeHandle(ctx, handle); err != nil {
				s.n.log.WarnContext(ctx, "purge handle cache", "did", did, "err", err)
			}
		}
	}
}

// normalizeHandleFor checks a handle did asks for: under our user domains by our rules
// (normalizeUserHandle), elsewhere by proof that the domain names did (DNS TXT or
// HTTPS well-known).
func (s *identityService) normalizeHandleFor(ctx context.Context, raw string, did syntax.DID) (syntax.Handle, error) {
	h, err := xrpc.ParseHandle(strings.TrimSpace(raw))
	if err != nil {
		return "", &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidHandle", Message: "Input/handle must be a valid handle", Err: err}
	}
	if s.n.isUserDomainHandle(h) {
		return s.n.normalizeUserHandle(h.String())
	}
	if !h.AllowedTLD() {
		return "", &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidHandle", Message: "Handle TLD is invalid or disallowed"}
	}
	if err := s.resolver.VerifyHandle(ctx, h, did); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return "", ctxErr
		}
		return "", &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "External handle did not resolve to DID", Err: err}
	}
	return h, nil
}

func (s *identityService) handleComAtprotoIdentityUpdateHandle(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Handle string `json:"handle"`
	}
	if err := decodeJSON(w, r, int64(s.n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	ctx := r.Context()
	did := syntax.DID(authFrom(ctx).DID)
	if err := s.n.rateLimit(w, did.String(), limitUpdateHandle5m, limitUpdateHandleDay); err != nil {
		return err
	}
	acct, err := s.n.currentAccount(ctx)
	if err != nil {
		return err
	}
	if acct.TakedownRef != "" {
		return errTakendown
	}
	handle, err := s.normalizeHandleFor(ctx, in.Handle, did)
	if err != nil {
		return err
	}
	if err := s.setHandle(ctx, did, handle); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// setHandle moves did's account to handle: the account row first (its unique index is what decides
// who gets a handle), then the PLC document's alsoKnownAs (restoring the old row if PLC
// refuses), then an #identity event. Setting the current handle again still brings the PLC
// document in line and re-announces it, which repairs an earlier half-done change.
func (s *identityService) setHandle(ctx context.Context, did syntax.DID, handle syntax.Handle) error {
	s.plcMu.Lock()
	defer s.plcMu.Unlock()
	// Read the handle under the lock: a racing change may have just moved it.
	acct, err := s.n.accountByDID(ctx, did.String())
	if err != nil {
		return err
	}
	old := acct.Handle
	if handle.String() != old {
		err := s.n.db.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "UPDATE account SET handle = ? WHERE did = ?", handle.String(), acct.DID)
			if isConflict(err) {
				return xrpc.InvalidRequest("Handle already taken: %s", handle)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	if did.Method() == "plc" {
		err := s.updatePLC(ctx, did, func(st *identity.State) { st.AlsoKnownAs = withHandle(st.AlsoKnownAs, handle) })
		if err != nil {
			if handle.String() != old {
				restore := context.WithoutCancel(ctx)
				if rerr := s.n.db.Write(restore, func(tx *sql.Tx) error {
					_, err := tx.ExecContext(restore, "UPDATE account SET handle = ? WHERE did = ?", old, acct.DID)
					return err
				}); rerr != nil {
					return errors.Join(err, fmt.Errorf("restore handle of %s: %w", did, rerr))
				}
			}
			return err
		}
	}
	// The change is durable; finish announcing it even if the client went away.
	evCtx := context.WithoutCancel(ctx)
	s.forget(evCtx, did, old, handle.String())
	if err := s.n.emit(evCtx, relay.NewIdentity(did, handle)); err != nil {
		return err
	}
	s.n.log.InfoContext(ctx, "handle updated", "did", did, "handle", handle, "old_handle", old)
	return nil
}

// withHandle returns alsoKnownAs with at://handle first and no other at:// entry: a DID has
// one handle, and the other URIs (not ours to judge) keep their order.
func withHandle(alsoKnownAs []string, handle syntax.Handle) []string {
	out := []string{"at://" + handle.String()}
	for _, aka := range alsoKnownAs {
		if !strings.HasPrefix(aka, "at://") {
			out = append(out, aka)
		}
	}
	return out
}

// plcLog is what building an update needs of the directory beyond documentDirectory; both
// the embedded directory and PLCClient have it.
type plcLog interface {
	LastOp(ctx context.Context, did syntax.DID) (*identity.Operation, error)
}

// signPLCUpdate builds the update of did's current PLC state that change makes, signed by
// the server's rotation key; it is not submitted. It refuses a tombstoned DID, a DID our key
// may not update, and a result the directory would refuse.
func (s *identityService) signPLCUpdate(ctx context.Context, did syntax.DID, change func(*identity.State)) (*identity.Operation, error) {
	pl, ok := s.n.plc.(plcLog)
	if !ok {
		return nil, fmt.Errorf("PLC directory %T cannot read operation logs", s.n.plc)
	}
	last, err := pl.LastOp(ctx, did)
	if err != nil {
		return nil, fmt.Errorf("read last PLC operation of %s: %w", did, err)
	}
	st, ok := last.State(did)
	if !ok {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "Did is tombstoned"}
	}
	prev, err := last.CID()
	if err != nil {
		return nil, fmt.Errorf("CID of last PLC operation of %s: %w", did, err)
	}
	rotation, err := s.n.plcRotationKey(ctx)
	if err != nil {
		return nil, err
	}
	pub, err := rotation.PublicKey()
	if err != nil {
		return nil, err
	}
	if !slices.Contains(last.NextRotationKeys(), pub.DIDKey()) {
		return nil, xrpc.InvalidRequest("this server's rotation key may no longer update %s", did)
	}
	change(&st)
	op, err := identity.NewUpdate(prev, st, rotation)
	if err != nil {
		return nil, fmt.Errorf("sign PLC update of %s: %w", did, err)
	}
	if err := op.Validate(); err != nil {
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "the resulting PLC operation is invalid", Err: err}
	}
	return op, nil
}

// updatePLC signs and submits the update change makes to did's PLC state; it does nothing
// when change leaves the state as it is. The caller holds plcMu.
func (s *identityService) updatePLC(ctx context.Context, did syntax.DID, change func(*identity.State)) error {
	var before, after []byte
	op, err := s.signPLCUpdate(ctx, did, func(st *identity.State) {
		// JSON writes map keys sorted, so equal states encode equally.
		before, _ = json.Marshal(st)
		change(st)
		after, _ = json.Marshal(st)
	})
	if err != nil || bytes.Equal(before, after) {
		return err
	}
	return s.submitPLC(ctx, did, op)
}

// submitPLC posts op for did, answering a refusal by the directory with InvalidRequest and
// its reason; the caller holds plcMu.
func (s *identityService) submitPLC(ctx context.Context, did syntax.DID, op *identity.Operation) error {
	err := s.n.plc.Submit(ctx, did, op)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, identity.ErrOperationRejected), errors.Is(err, identity.ErrInvalidOperation),
		errors.Is(err, identity.ErrInvalidSignature), errors.Is(err, identity.ErrForkedChain),
		errors.Is(err, identity.ErrLateRecovery), errors.Is(err, identity.ErrTombstoned):
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "the PLC directory refused the operation", Err: err}
	}
	return &xrpc.Error{Status: http.StatusBadGateway, Name: "UpstreamFailure", Message: "could not reach the PLC directory", Err: err}
}

// didCredentials is getRecommendedDidCredentials' output, and what submitPlcOperation
// requires an operation to keep.
type didCredentials struct {
	RotationKeys        []string                    `json:"rotationKeys"`
	AlsoKnownAs         []string                    `json:"alsoKnownAs"`
	VerificationMethods map[string]string           `json:"verificationMethods"`
	Services            map[string]identity.Service `json:"services"`
}

// recommendedCredentials returns what acct's DID document should say for this PDS to host it.
func (s *identityService) recommendedCredentials(ctx context.Context, acct *account) (*didCredentials, error) {
	key, err := s.n.repos.SigningKey(ctx, syntax.DID(acct.DID))
	if err != nil {
		return nil, fmt.Errorf("load signing key of %s: %w", acct.DID, err)
	}
	signing, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	rotation, err := s.n.plcRotationKey(ctx)
	if err != nil {
		return nil, err
	}
	rotationPub, err := rotation.PublicKey()
	if err != nil {
		return nil, err
	}
	return &didCredentials{
		RotationKeys:        []string{rotationPub.DIDKey()},
		AlsoKnownAs:         []string{"at://" + acct.Handle},
		VerificationMethods: map[string]string{"atproto": signing.DIDKey()},
		Services: map[string]identity.Service{
			"atproto_pds": {Type: "AtprotoPersonalDataServer", Endpoint: s.n.PublicURL()},
		},
	}, nil
}

func (s *identityService) handleComAtprotoIdentityGetRecommendedDidCredentials(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	acct, err := s.n.currentAccount(ctx)
	if err != nil {
		return err
	}
	creds, err := s.recommendedCredentials(ctx, acct)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, creds)
	return nil
}

func (s *identityService) handleComAtprotoIdentityRequestPlcOperationSignature(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	acct, err := s.n.currentAccount(ctx)
	if err != nil {
		return err
	}
	if acct.Email == "" {
		if s.n.cfg.Email.SMTPURL.Reveal() != "" {
			return xrpc.InvalidRequest("account does not have an email address")
		}
		// Without mail the token goes to the operator's log, as for every email token.
		s.n.log.WarnContext(ctx, "PLC operation signature requested by an account with no email", "did", acct.DID)
	}
	if err := s.n.issueEmailToken(ctx, acct, purposePLCOperation, acct.Email, "Confirm your identity change"); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *identityService) handleComAtprotoIdentitySignPlcOperation(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Token               string                      `json:"token"`
		RotationKeys        []string                    `json:"rotationKeys"`
		AlsoKnownAs         []string                    `json:"alsoKnownAs"`
		VerificationMethods map[string]string           `json:"verificationMethods"`
		Services            map[string]identity.Service `json:"services"`
	}
	if err := decodeJSON(w, r, int64(s.n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	if in.Token == "" {
		return xrpc.InvalidRequest("email confirmation token required to sign PLC operations")
	}
	ctx := r.Context()
	acct, err := s.n.currentAccount(ctx)
	if err != nil {
		return err
	}
	did := syntax.DID(acct.DID)
	if did.Method() != "plc" {
		return xrpc.InvalidRequest("only did:plc identities have PLC operations")
	}
	// Build first, so a request the directory would refuse does not use up the token.
	op, err := s.signPLCUpdate(ctx, did, func(st *identity.State) {
		if in.RotationKeys != nil {
			st.RotationKeys = in.RotationKeys
		}
		if in.AlsoKnownAs != nil {
			st.AlsoKnownAs = in.AlsoKnownAs
		}
		if in.VerificationMethods != nil {
			st.VerificationMethods = in.VerificationMethods
		}
		if in.Services != nil {
			st.Services = in.Services
		}
	})
	if err != nil {
		return err
	}
	err = s.n.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := s.n.consumeEmailToken(ctx, tx, purposePLCOperation, acct.DID, in.Token)
		return err
	})
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]any{"operation": op})
	return nil
}

func (s *identityService) handleComAtprotoIdentitySubmitPlcOperation(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Operation json.RawMessage `json:"operation"`
	}
	if err := decodeJSON(w, r, int64(s.n.cfg.HTTP.MaxBody), &in); err != nil {
		return err
	}
	op, err := identity.ParseOperation(in.Operation)
	if err != nil {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "Invalid operation", Err: err}
	}
	if op.Type != identity.TypeOperation {
		return xrpc.InvalidRequest("Invalid operation: only %s operations may be submitted here", identity.TypeOperation)
	}
	if err := op.Validate(); err != nil {
		return &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "Invalid operation", Err: err}
	}
	ctx := r.Context()
	acct, err := s.n.currentAccount(ctx)
	if err != nil {
		return err
	}
	did := syntax.DID(acct.DID)
	if did.Method() != "plc" {
		return xrpc.InvalidRequest("only did:plc identities have PLC operations")
	}
	want, err := s.recommendedCredentials(ctx, acct)
	if err != nil {
		return err
	}
	// The operation must leave this PDS able to host the account and to update it again.
	pds := op.Services["atproto_pds"]
	switch {
	case !slices.Contains(op.RotationKeys, want.RotationKeys[0]):
		return xrpc.InvalidRequest("Rotation keys do not include server's rotation key")
	case pds.Type != "AtprotoPersonalDataServer":
		return xrpc.InvalidRequest("Incorrect type on atproto_pds service")
	case pds.Endpoint != want.Services["atproto_pds"].Endpoint:
		return xrpc.InvalidRequest("Incorrect endpoint on atproto_pds service")
	case op.VerificationMethods["atproto"] != want.VerificationMethods["atproto"]:
		return xrpc.InvalidRequest("Incorrect signing key")
	case len(op.AlsoKnownAs) == 0 || op.AlsoKnownAs[0] != want.AlsoKnownAs[0]:
		return xrpc.InvalidRequest("Incorrect handle in alsoKnownAs")
	}
	s.plcMu.Lock()
	err = s.submitPLC(ctx, did, op)
	s.plcMu.Unlock()
	if err != nil {
		return err
	}
	evCtx := context.WithoutCancel(ctx)
	s.forget(evCtx, did, acct.Handle)
	if err := s.n.emit(evCtx, relay.NewIdentity(did, syntax.Handle(acct.Handle))); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// reservedKeyTTL is how long an unclaimed reserved signing key is kept. A migration takes
// minutes to days; a month covers a slow one while bounding what an anonymous caller of
// reserveSigningKey can make us store.
const reservedKeyTTL = 30 * 24 * time.Hour

// limitReserveSigningKey bounds anonymous key reservations per IP.
var limitReserveSigningKey = limit{"reserve-signing-key", 100, 5 * time.Minute}

// handleComAtprotoServerReserveSigningKey reserves a fresh repo signing key for an account
// about to migrate here (atproto reference §8.4): the PLC operation naming it is signed
// before the account exists. Reserving again for the same DID returns the same key.
func (s *identityService) handleComAtprotoServerReserveSigningKey(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		DID string `json:"did"`
	}
	// The input is optional and clients send none at all.
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, int64(s.n.cfg.HTTP.MaxBody), &in); err != nil {
			return err
		}
	}
	if err := s.n.rateLimit(w, s.n.clientIP(r), limitReserveSigningKey); err != nil {
		return err
	}
	var did syntax.DID
	if in.DID != "" {
		var err error
		if did, err = xrpc.ParseDID(in.DID); err != nil {
			return err
		}
	}
	keyDID, err := s.n.reserveSigningKey(r.Context(), did)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]string{"signingKey": keyDID})
	return nil
}

// reserveSigningKey stores a new K-256 key reserved for did (may be empty) and returns its
// did:key; if did already has one, that one. Reservations older than reservedKeyTTL go.
func (n *Node) reserveSigningKey(ctx context.Context, did syntax.DID) (string, error) {
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return "", fmt.Errorf("generate reserved key: %w", err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		return "", err
	}
	keyDID := pub.DIDKey()
	now := n.now()
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM reserved_key WHERE created_at < ?", timestamp(now.Add(-reservedKeyTTL))); err != nil {
			return err
		}
		if did != "" {
			var existing string
			err := tx.QueryRowContext(ctx, "SELECT key_did FROM reserved_key WHERE did = ?", did.String()).Scan(&existing)
			if err == nil {
				keyDID = existing
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO reserved_key (key_did, did, private_key, created_at) VALUES (?, nullif(?, ''), ?, ?)",
			keyDID, did.String(), key.Bytes(), timestamp(now))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("reserve signing key: %w", err)
	}
	return keyDID, nil
}

// takeReservedKey removes and returns the key reserved under id, which is the DID it was
// reserved for or the key's own did:key; ok is false when there is none. Migration's
// createAccount uses it so the repo is signed by the key the new PLC operation names.
func (n *Node) takeReservedKey(ctx context.Context, id string) (key *atcrypto.PrivateKeyK256, ok bool, err error) {
	var raw []byte
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		var keyDID string
		err := tx.QueryRowContext(ctx, "SELECT key_did, private_key FROM reserved_key WHERE did = ? OR key_did = ?", id, id).Scan(&keyDID, &raw)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM reserved_key WHERE key_did = ?", keyDID)
		return err
	})
	if err != nil || raw == nil {
		return nil, false, err
	}
	if key, err = atcrypto.ParsePrivateBytesK256(raw); err != nil {
		return nil, false, fmt.Errorf("parse reserved key: %w", err)
	}
	return key, true, nil
}
