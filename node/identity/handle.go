package identity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// VerifyHandle checks, without the cache, that handle currently resolves to did: through
// the local hook, DNS TXT _atproto.<handle> = "did=<did>", or
// https://<handle>/.well-known/atproto-did. It returns ErrHandleMismatch when the handle
// names another DID and ErrHandleNotFound when it names none. It does not look at did's
// document: the caller is about to change it.
func (r *Resolver) VerifyHandle(ctx context.Context, handle syntax.Handle, did syntax.DID) error {
	got, err := r.base.resolveHandle(ctx, handle.Normalize())
	if err != nil {
		return fmt.Errorf("verify handle %s: %w", handle, err)
	}
	if got != did {
		return fmt.Errorf("verify handle %s: %w: it names %s, not %s", handle, ErrHandleMismatch, got, did)
	}
	return nil
}

// resolveHandle resolves a normalised handle forwards only: local hook, then DNS, then
// HTTPS. DNS wins when both answer (spec: "prefer DNS on conflict"), so HTTPS is only
// asked when DNS has no answer. Reserved TLDs and .test (development names with no
// public DNS) resolve only through the local hook.
func (b *baseDirectory) resolveHandle(ctx context.Context, handle syntax.Handle) (syntax.DID, error) {
	if b.local != nil {
		did, ok, err := b.local.DIDForHandle(ctx, handle)
		if err != nil {
			return "", fmt.Errorf("resolve local handle %s: %w", handle, err)
		}
		if ok {
			return did, nil
		}
	}
	if !handle.AllowedTLD() || handle.TLD() == "test" {
		return "", fmt.Errorf("%w: %s is not a public name", ErrHandleNotFound, handle)
	}
	did, dnsErr := b.resolveHandleDNS(ctx, handle)
	if dnsErr == nil {
		return did, nil
	}
	did, httpErr := b.resolveHandleWellKnown(ctx, handle)
	if httpErr == nil {
		return did, nil
	}
	if errors.Is(dnsErr, ErrHandleNotFound) && errors.Is(httpErr, ErrHandleNotFound) {
		return "", fmt.Errorf("%w: %s", ErrHandleNotFound, handle)
	}
	return "", fmt.Errorf("resolve handle %s: dns: %w; https: %w", handle, dnsErr, httpErr)
}

// resolveHandleDNS reads TXT _atproto.<handle>. Exactly one distinct DID among the
// "did=" records is an answer; none is ErrHandleNotFound; several is an error, since we
// cannot tell which the owner meant.
func (b *baseDirectory) resolveHandleDNS(ctx context.Context, handle syntax.Handle) (syntax.DID, error) {
	records, err := b.dns.LookupTXT(ctx, "_atproto."+handle.String())
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return "", fmt.Errorf("%w: no TXT record", ErrHandleNotFound)
		}
		return "", fmt.Errorf("look up TXT: %w", err)
	}
	return didFromTXT(records)
}

// didFromTXT picks the DID out of _atproto TXT record values.
func didFromTXT(records []string) (syntax.DID, error) {
	var found string
	for _, rec := range records {
		v, ok := strings.CutPrefix(rec, "did=")
		if !ok {
			continue
		}
		if found != "" && v != found {
			return "", fmt.Errorf("TXT records name several DIDs")
		}
		found = v
	}
	if found == "" {
		return "", fmt.Errorf("%w: no did= TXT record", ErrHandleNotFound)
	}
	did, err := syntax.ParseDID(found)
	if err != nil {
		return "", fmt.Errorf("TXT record: %w", err)
	}
	return did, nil
}

// resolveHandleWellKnown fetches https://<handle>/.well-known/atproto-did: a 200 whose
// body, trimmed, is a DID. The content type is not checked (spec).
func (b *baseDirectory) resolveHandleWellKnown(ctx context.Context, handle syntax.Handle) (syntax.DID, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+handle.String()+"/.well-known/atproto-did", nil)
	if err != nil {
		return "", fmt.Errorf("fetch well-known: %w", err)
	}
	return b.fetchWellKnown(req)
}

// resolveHandleAt asks the server at base (a PDS URL) for handle's well-known DID, naming
// the handle as the request's host (DevHandles).
func (b *baseDirectory) resolveHandleAt(ctx context.Context, base string, handle syntax.Handle) (syntax.DID, error) {
	if base == "" {
		return "", fmt.Errorf("%w: no PDS to ask for %s", ErrHandleNotFound, handle)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/.well-known/atproto-did", nil)
	if err != nil {
		return "", fmt.Errorf("fetch well-known: %w", err)
	}
	req.Host = handle.String()
	return b.fetchWellKnown(req)
}

// fetchWellKnown does a prepared /.well-known/atproto-did request.
func (b *baseDirectory) fetchWellKnown(req *http.Request) (syntax.DID, error) {
	req.Header.Set("User-Agent", userAgent)
	resp, err := b.http.Do(req)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return "", fmt.Errorf("%w: no such host", ErrHandleNotFound)
		}
		return "", fmt.Errorf("fetch well-known: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return "", fmt.Errorf("%w: well-known answered 404", ErrHandleNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch well-known: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWellKnownHandleSize+1))
	if err != nil {
		return "", fmt.Errorf("fetch well-known: %w", err)
	}
	if len(body) > maxWellKnownHandleSize {
		return "", fmt.Errorf("fetch well-known: body larger than %d bytes", maxWellKnownHandleSize)
	}
	did, err := syntax.ParseDID(strings.TrimSpace(string(body)))
	if err != nil {
		return "", fmt.Errorf("well-known body: %w", err)
	}
	return did, nil
}
