package identity

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// Outbound limits. Identity documents and handle files are small; a slow or huge answer
// is an attack or a broken host, not something to wait for.
const (
	// DefaultHTTPTimeout bounds a whole outbound request, body included.
	DefaultHTTPTimeout = 10 * time.Second
	dialTimeout        = 5 * time.Second
	tlsTimeout         = 5 * time.Second
	maxRedirects       = 5
)

// NewHTTPClient returns the client for outbound identity requests: DID documents, handle
// well-known files, PLC operations. timeout bounds each request (0: DefaultHTTPTimeout).
//
// When allowPrivateNetwork is false its dialer refuses every address that is not
// public unicast (loopback, RFC 1918 and unique-local, link-local, CGNAT, unspecified,
// multicast) with ErrPrivateNetwork. The check runs in the dialer's Control hook, after
// DNS resolution and on every redirect, so neither a DNS name pointing at 127.0.0.1
// nor a redirect to one gets through; proxies from the environment are ignored for the
// same reason.
func NewHTTPClient(allowPrivateNetwork bool, timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultHTTPTimeout
	}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	if !allowPrivateNetwork {
		dialer.Control = refusePrivate
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   tlsTimeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			return nil
		},
	}
}

// cgnat is the shared address space of RFC 6598, private in all but name.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// refusePrivate is a net.Dialer Control hook: address is the resolved ip:port about to be
// dialled.
func refusePrivate(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q: %w", ErrPrivateNetwork, address, err)
	}
	if !isPublic(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrPrivateNetwork, ap.Addr())
	}
	return nil
}

// isPublic reports whether addr is a globally routable unicast address.
func isPublic(addr netip.Addr) bool {
	addr = addr.Unmap()
	switch {
	case !addr.IsValid(), addr.IsLoopback(), addr.IsPrivate(), addr.IsUnspecified(),
		addr.IsLinkLocalUnicast(), addr.IsLinkLocalMulticast(), addr.IsInterfaceLocalMulticast(),
		addr.IsMulticast(), cgnat.Contains(addr):
		return false
	}
	return addr.IsGlobalUnicast()
}
