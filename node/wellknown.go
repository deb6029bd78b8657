package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"

	"github.com/aerie-social/aerie/node/identity"
	"github.com/aerie-social/aerie/node/xrpc"
)

// serviceSigningKey returns the node's service signing key, the #atproto key of its
// did:web document: generated on first use and kept in aerie.sqlite, so the document is
// stable across restarts. A failed load is retried on the next call.
func (s *identityService) serviceSigningKey(ctx context.Context) (*atcrypto.PrivateKeyK256, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if s.serviceKey != nil {
		return s.serviceKey, nil
	}
	fresh, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, fmt.Errorf("generate service signing key: %w", err)
	}
	raw, err := s.n.serviceSecretOr(ctx, "service_signing_k256", fresh.Bytes())
	if err != nil {
		return nil, err
	}
	key, err := atcrypto.ParsePrivateBytesK256(raw)
	if err != nil {
		return nil, fmt.Errorf("parse stored service signing key: %w", err)
	}
	s.serviceKey = key
	return key, nil
}

// handleWellKnownAtprotoDID answers https://<handle>/.well-known/atproto-did for the
// handles hosted here, by the Host header (atproto reference §4.4, §13): the DID as plain
// text, or 404 "User not found".
func (s *identityService) handleWellKnownAtprotoDID(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	notFound := func() {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("User not found"))
	}
	handle, err := xrpc.ParseHandle(strings.TrimSuffix(host, "."))
	if err != nil {
		notFound()
		return
	}
	did, ok, err := localHandles{s.n}.DIDForHandle(r.Context(), handle)
	if err != nil {
		writeError(w, r, s.n.log, err)
		return
	}
	if !ok {
		notFound()
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(did.String()))
}

// handleWellKnownDIDJSON serves the node's service DID document, did:web:<hostname>, which
// names its signing key and the PDS, AppView and notification endpoints (reference §13).
func (s *identityService) handleWellKnownDIDJSON(w http.ResponseWriter, r *http.Request) {
	key, err := s.serviceSigningKey(r.Context())
	if err != nil {
		writeError(w, r, s.n.log, err)
		return
	}
	pub, err := key.PublicKey()
	if err != nil {
		writeError(w, r, s.n.log, err)
		return
	}
	doc, err := identity.ServiceDIDDocument(s.n.cfg.Hostname, s.n.PublicURL(), pub)
	if err != nil {
		writeError(w, r, s.n.log, fmt.Errorf("render service DID document: %w", err))
		return
	}
	xrpc.WriteJSON(w, http.StatusOK, doc)
}
