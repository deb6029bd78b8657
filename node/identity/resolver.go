package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Resolver defaults. An hour of caching matches what the reference services do for
// handles; errors are kept briefly so a flapping host is not hammered, and a DID whose
// handle did not verify is retried sooner than a good one.
const (
	DefaultPLCURL          = "https://plc.directory"
	DefaultCacheTTL        = time.Hour
	defaultErrorTTL        = time.Minute
	defaultInvalidTTL      = 5 * time.Minute
	defaultCacheSize       = 100_000
	maxDIDDocumentSize     = 64 << 10
	maxWellKnownHandleSize = 2048
)

// LocalHandles lets the node answer for the handles it hosts without DNS: the resolver
// asks it first. ok is false when the handle is not local.
type LocalHandles interface {
	DIDForHandle(ctx context.Context, handle syntax.Handle) (did syntax.DID, ok bool, err error)
}

// TXTResolver looks up DNS TXT records; *net.Resolver is one, tests pass a fake.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// ResolverOptions configures NewResolver. The zero value resolves against
// https://plc.directory over the public internet only.
type ResolverOptions struct {
	// PLCURL is the PLC directory (default DefaultPLCURL).
	PLCURL string
	// AllowPrivateNetwork lets outbound requests reach loopback and private addresses
	// (tests, a laptop's embedded PLC). Ignored when HTTPClient is set.
	AllowPrivateNetwork bool
	// HTTPClient replaces NewHTTPClient(AllowPrivateNetwork, 0).
	HTTPClient *http.Client
	// DNS replaces the system resolver for _atproto TXT lookups.
	DNS TXTResolver
	// LocalHandles, if set, is consulted before DNS and HTTPS for every handle.
	LocalHandles LocalHandles
	// CacheTTL is how long a resolved identity is trusted (default DefaultCacheTTL).
	CacheTTL time.Duration
	// CacheSize bounds the number of cached identities and handles (default 100000).
	CacheSize int
	// DevHandles verifies a .test handle that is not local by asking the PDS in the DID's
	// own document for /.well-known/atproto-did under that handle: .test names have no
	// DNS, and this lets development nodes on one machine see each other's handles. Only
	// for development (the node sets it with net.allow_private_network): it trusts the PDS.
	DevHandles bool
}

// Resolver resolves DIDs and handles: indigo's identity.CacheDirectory (an LRU with
// expiry that also coalesces concurrent lookups of one identifier) over our own base
// directory, which adds the local-handle hook, did:web on localhost, the stricter DNS
// rule of the spec, and our outbound client. It is safe for concurrent use.
type Resolver struct {
	base  *baseDirectory
	cache *identity.CacheDirectory
	plc   *PLCClient
}

// NewResolver builds a Resolver; it does no I/O.
func NewResolver(opts ResolverOptions) *Resolver {
	hc := opts.HTTPClient
	if hc == nil {
		hc = NewHTTPClient(opts.AllowPrivateNetwork, 0)
	}
	dns := opts.DNS
	if dns == nil {
		// A fresh value, not net.DefaultResolver: no shared mutable state.
		dns = &net.Resolver{}
	}
	plcURL := strings.TrimSuffix(opts.PLCURL, "/")
	if plcURL == "" {
		plcURL = DefaultPLCURL
	}
	ttl := opts.CacheTTL
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	size := opts.CacheSize
	if size <= 0 {
		size = defaultCacheSize
	}
	base := &baseDirectory{plcURL: plcURL, http: hc, dns: dns, local: opts.LocalHandles, devHandles: opts.DevHandles}
	return &Resolver{
		base:  base,
		cache: identity.NewCacheDirectory(base, size, ttl, min(ttl, defaultErrorTTL), min(ttl, defaultInvalidTTL)),
		plc:   NewPLCClient(plcURL, hc),
	}
}

// PLC returns a client for the resolver's PLC directory, sharing its HTTP client.
func (r *Resolver) PLC() *PLCClient { return r.plc }

// LookupIdentity resolves a handle or DID to an identity whose Handle is bidirectionally
// verified (handle.invalid when the DID's handle does not resolve back to it); use
// PublicKey() and PDSEndpoint() on the result. Looking up a handle that does not verify
// is an error. Results, errors included, are cached.
func (r *Resolver) LookupIdentity(ctx context.Context, atid syntax.AtIdentifier) (*identity.Identity, error) {
	ident, err := r.cache.Lookup(ctx, atid)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", atid, err)
	}
	return ident, nil
}

// ResolveHandle returns the DID a handle belongs to, only when the DID's document claims
// the handle back (cached).
func (r *Resolver) ResolveHandle(ctx context.Context, handle syntax.Handle) (syntax.DID, error) {
	ident, err := r.cache.LookupHandle(ctx, handle)
	if err != nil {
		return "", fmt.Errorf("resolve handle %s: %w", handle, err)
	}
	return ident.DID, nil
}

// ResolveDID fetches the DID document as its host serves it, bypassing the cache (for
// resolveDid and refreshIdentity, which want the current document). It checks that the
// document is JSON with the right id.
func (r *Resolver) ResolveDID(ctx context.Context, did syntax.DID) (json.RawMessage, error) {
	b, _, err := r.base.fetchDIDDocument(ctx, did)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Purge forgets what the cache holds for did, after an #identity event or
// refreshIdentity; the next lookup goes to the network.
func (r *Resolver) Purge(ctx context.Context, did syntax.DID) error {
	return r.cache.Purge(ctx, did.AtIdentifier())
}

// PurgeHandle forgets the cached DID of handle, for a handle that moved.
func (r *Resolver) PurgeHandle(ctx context.Context, handle syntax.Handle) error {
	return r.cache.Purge(ctx, handle.AtIdentifier())
}

// baseDirectory is the uncached identity.Directory under the cache.
type baseDirectory struct {
	plcURL     string
	http       *http.Client
	dns        TXTResolver
	local      LocalHandles
	devHandles bool
}

var _ identity.Directory = (*baseDirectory)(nil)

// LookupHandle resolves handle and requires the DID's document to claim it.
func (b *baseDirectory) LookupHandle(ctx context.Context, handle syntax.Handle) (*identity.Identity, error) {
	handle = handle.Normalize()
	did, err := b.resolveHandle(ctx, handle)
	if err != nil {
		return nil, err
	}
	_, doc, err := b.fetchDIDDocument(ctx, did)
	if err != nil {
		return nil, err
	}
	ident := identity.ParseIdentity(doc)
	declared, err := ident.DeclaredHandle()
	if err != nil || declared != handle {
		return nil, fmt.Errorf("%w: %s does not claim %s", ErrHandleMismatch, did, handle)
	}
	ident.Handle = declared
	return &ident, nil
}

// LookupDID resolves did and verifies the handle its document claims; a handle that does
// not resolve back gives handle.invalid, not an error.
func (b *baseDirectory) LookupDID(ctx context.Context, did syntax.DID) (*identity.Identity, error) {
	_, doc, err := b.fetchDIDDocument(ctx, did)
	if err != nil {
		return nil, err
	}
	ident := identity.ParseIdentity(doc)
	ident.Handle = syntax.HandleInvalid
	declared, err := ident.DeclaredHandle()
	if err != nil {
		return &ident, nil
	}
	resolved, err := b.resolveHandle(ctx, declared)
	if err != nil && b.devHandles && declared.TLD() == "test" {
		resolved, err = b.resolveHandleAt(ctx, ident.PDSEndpoint(), declared)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, ctxErr
	}
	if err == nil && resolved == did {
		ident.Handle = declared
	}
	return &ident, nil
}

// Lookup dispatches on the kind of identifier.
func (b *baseDirectory) Lookup(ctx context.Context, atid syntax.AtIdentifier) (*identity.Identity, error) {
	if h, err := atid.AsHandle(); err == nil {
		return b.LookupHandle(ctx, h)
	}
	if did, err := atid.AsDID(); err == nil {
		return b.LookupDID(ctx, did)
	}
	return nil, fmt.Errorf("%w: %q is neither a handle nor a DID", ErrUnsupportedDID, atid)
}

// Purge is a no-op: the base directory caches nothing.
func (b *baseDirectory) Purge(context.Context, syntax.AtIdentifier) error { return nil }

// fetchDIDDocument fetches and parses did's document from the PLC directory or the
// did:web host.
func (b *baseDirectory) fetchDIDDocument(ctx context.Context, did syntax.DID) (json.RawMessage, *identity.DIDDocument, error) {
	var docURL string
	switch did.Method() {
	case "plc":
		docURL = b.plcURL + "/" + did.String()
	case "web":
		u, err := didWebURL(did)
		if err != nil {
			return nil, nil, err
		}
		docURL = u
	default:
		return nil, nil, fmt.Errorf("%w: method %q", ErrUnsupportedDID, did.Method())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, docURL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("resolve %s: %w", did, err)
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "application/did+ld+json, application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("resolve %s: %w", did, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, nil, fmt.Errorf("%w: %s", ErrDIDNotFound, did)
	case resp.StatusCode == http.StatusGone:
		return nil, nil, fmt.Errorf("%w: %s", ErrTombstoned, did)
	case resp.StatusCode != http.StatusOK:
		return nil, nil, fmt.Errorf("resolve %s: status %d", did, resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxDIDDocumentSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("resolve %s: read body: %w", did, err)
	}
	doc, err := parseDIDDocument(did, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("resolve %s: %w", did, err)
	}
	return raw, doc, nil
}

// parseDIDDocument parses an untrusted DID document and checks that it is about did.
func parseDIDDocument(did syntax.DID, raw []byte) (*identity.DIDDocument, error) {
	if len(raw) > maxDIDDocumentSize {
		return nil, fmt.Errorf("%w: DID document larger than %d bytes", ErrInvalidDocument, maxDIDDocumentSize)
	}
	var doc identity.DIDDocument
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDocument, err)
	}
	if doc.DID != did {
		return nil, fmt.Errorf("%w: document id is %q", ErrDIDMismatch, doc.DID)
	}
	return &doc, nil
}

// didWebURL returns where did:web's document lives: https://<host>/.well-known/did.json,
// or http://localhost[:port]/... for local development. Only hostname-level did:web is
// supported (no path segments), and only localhost may carry a port.
func didWebURL(did syntax.DID) (string, error) {
	id := did.Identifier()
	if strings.Contains(id, ":") {
		return "", fmt.Errorf("%w: did:web with a path", ErrUnsupportedDID)
	}
	hostport, err := url.PathUnescape(id)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnsupportedDID, err)
	}
	host, port, hasPort := strings.Cut(hostport, ":")
	if host == "localhost" {
		if hasPort {
			if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
				return "", fmt.Errorf("%w: bad port in %s", ErrUnsupportedDID, did)
			}
		}
		return "http://" + hostport + "/.well-known/did.json", nil
	}
	if hasPort {
		return "", fmt.Errorf("%w: only localhost may have a port", ErrUnsupportedDID)
	}
	h, err := syntax.ParseHandle(host)
	if err != nil || !h.AllowedTLD() {
		return "", fmt.Errorf("%w: %q is not a public hostname", ErrUnsupportedDID, host)
	}
	return "https://" + h.Normalize().String() + "/.well-known/did.json", nil
}
