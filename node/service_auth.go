package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/xrpc"
)

// Inter-service auth JWTs (atproto reference §7.6): short-lived ES256K/ES256 tokens signed by
// an account's #atproto repo key. We mint them for our accounts (getServiceAuth) and check
// those other services send us (migration createAccount, uploadBlob from a video service).
// Both sides are written by hand rather than with golang-jwt: the format is three fixed
// JSON shapes, and indigo's signing-method registration for it changes golang-jwt's global
// encoding of "aud" as a side effect of importing it.

// Service token lifetimes, as the reference PDS bounds them.
const (
	// serviceTokenTTL is the lifetime when the caller asks for none.
	serviceTokenTTL = time.Minute
	// maxServiceTokenTTL is the longest lifetime getServiceAuth grants, and so the
	// furthest future expiry we accept: no compliant issuer mints longer, and it bounds
	// how long a jti must be remembered.
	maxServiceTokenTTL = time.Hour
	// maxMethodlessTokenTTL bounds a token without lxm, which is good for any method.
	maxMethodlessTokenTTL = time.Minute
	// maxServiceTokenSize bounds the token text before any decoding: a real one is about
	// 400 bytes.
	maxServiceTokenSize = 4096
	// jtiCacheSize bounds the replay cache. Entries live at most maxServiceTokenTTL, so
	// this allows a sustained ~28 service-authenticated requests per second.
	jtiCacheSize = 100_000
)

// JWT algorithms for the two curves atproto keys use.
const (
	algES256K = "ES256K"
	algES256  = "ES256"
)

// serviceTokenHeader is a service JWT's header.
type serviceTokenHeader struct {
	Typ string `json:"typ,omitempty"`
	Alg string `json:"alg"`
	Kid string `json:"kid,omitempty"`
}

// serviceTokenClaims are a service JWT's claims, in the order the reference PDS writes them.
type serviceTokenClaims struct {
	Iat int64  `json:"iat"`
	Iss string `json:"iss"`
	Aud string `json:"aud"`
	Exp int64  `json:"exp"`
	Lxm string `json:"lxm,omitempty"`
	Jti string `json:"jti"`
}

// serviceAuth is a verified service JWT: who sent it and what for.
type serviceAuth struct {
	// Iss is the issuing account or service, without a #fragment.
	Iss syntax.DID
	// ServiceID is the issuer's #fragment (legacy labelers send "atproto_labeler"), or "".
	ServiceID string
	// Aud is the audience as the token names it: our DID, or our DID#service.
	Aud string
	// Lxm is the method the token is good for.
	Lxm string
	// Exp is when the token expires.
	Exp time.Time
}

// jwtError returns the 401 the reference answers for a bad service JWT, with a name from
// atproto reference §7.2 (BadJwt, JwtExpired, BadJwtAudience, …).
func jwtError(name, msg string, cause error) *xrpc.Error {
	return &xrpc.Error{Status: http.StatusUnauthorized, Name: name, Message: msg, Err: cause}
}

// signServiceToken mints a service JWT from iss for aud, good for lxm (empty: any method)
// until exp, signed by key (the account's repo signing key).
func signServiceToken(key atcrypto.PrivateKey, iss syntax.DID, aud, lxm string, now, exp time.Time) (string, error) {
	var alg string
	switch key.(type) {
	case *atcrypto.PrivateKeyK256:
		alg = algES256K
	case *atcrypto.PrivateKeyP256:
		alg = algES256
	default:
		return "", fmt.Errorf("sign service token: unsupported key type %T", key)
	}
	var jti [16]byte
	rand.Read(jti[:])
	header, err := json.Marshal(serviceTokenHeader{Typ: "JWT", Alg: alg})
	if err != nil {
		return "", fmt.Errorf("sign service token: %w", err)
	}
	claims, err := json.Marshal(serviceTokenClaims{Iat: now.Unix(), Iss: iss.String(), Aud: aud, Exp: exp.Unix(),
		Lxm: lxm, Jti: hex.EncodeToString(jti[:])})
	if err != nil {
		return "", fmt.Errorf("sign service token: %w", err)
	}
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
	sig, err := key.HashAndSign([]byte(input))
	if err != nil {
		return "", fmt.Errorf("sign service token: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// parsedServiceToken is a service JWT split and decoded, its signature not yet checked.
type parsedServiceToken struct {
	header serviceTokenHeader
	claims serviceTokenClaims
	// input is what the signature covers: the first two segments and the dot.
	input string
	sig   []byte
}

// parseServiceToken splits and decodes an untrusted service JWT and checks its shape: three
// unpadded base64url segments, a header of an accepted alg and typ, and claims with iss, aud,
// exp and jti of the right types. Errors are 401 BadJwt or BadJwtType. It never panics.
func parseServiceToken(raw string) (*parsedServiceToken, error) {
	if len(raw) > maxServiceTokenSize {
		return nil, jwtError("BadJwt", "token is too long", nil)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, jwtError("BadJwt", "poorly formatted jwt", nil)
	}
	var segs [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			return nil, jwtError("BadJwt", "poorly formatted jwt", err)
		}
		segs[i] = b
	}
	t := &parsedServiceToken{input: parts[0] + "." + parts[1], sig: segs[2]}
	if err := decodeStrict(segs[0], &t.header); err != nil {
		return nil, jwtError("BadJwt", "poorly formatted jwt header", err)
	}
	// Session, refresh and DPoP tokens share the JWT format; refusing their types keeps one
	// from being replayed as another (reference §7.6).
	switch t.header.Typ {
	case typAccess, typRefresh, "dpop+jwt":
		return nil, jwtError("BadJwtType", "Invalid jwt type", nil)
	}
	if t.header.Alg != algES256K && t.header.Alg != algES256 {
		return nil, jwtError("BadJwt", "unsupported jwt algorithm", nil)
	}
	var claims struct {
		Iat json.Number     `json:"iat"`
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
		Exp json.Number     `json:"exp"`
		Lxm *string         `json:"lxm"`
		Jti string          `json:"jti"`
	}
	if err := decodeStrict(segs[1], &claims); err != nil {
		return nil, jwtError("BadJwt", "poorly formatted jwt payload", err)
	}
	exp, err := unixSeconds(claims.Exp)
	if err != nil {
		return nil, jwtError("BadJwt", "jwt exp must be a number of seconds", err)
	}
	aud, err := singleAudience(claims.Aud)
	if err != nil {
		return nil, jwtError("BadJwtAudience", "jwt audience must be one string", err)
	}
	if claims.Iss == "" {
		return nil, jwtError("BadJwtIss", "jwt has no issuer", nil)
	}
	// Without a jti a replay cannot be told from a fresh token; every current issuer sets one.
	if claims.Jti == "" {
		return nil, jwtError("BadJwt", "jwt has no jti", nil)
	}
	t.claims = serviceTokenClaims{Iss: claims.Iss, Aud: aud, Exp: exp, Jti: claims.Jti}
	if claims.Lxm != nil {
		t.claims.Lxm = *claims.Lxm
	}
	if claims.Iat != "" {
		// iat is informational; a malformed one is still a malformed token.
		if t.claims.Iat, err = unixSeconds(claims.Iat); err != nil {
			return nil, jwtError("BadJwt", "jwt iat must be a number of seconds", err)
		}
	}
	return t, nil
}

// decodeStrict decodes one JSON object and nothing after it.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

// unixSeconds reads a NumericDate: whole seconds, or a fraction that we truncate.
func unixSeconds(n json.Number) (int64, error) {
	if n == "" {
		return 0, errors.New("missing")
	}
	if i, err := n.Int64(); err == nil {
		return i, nil
	}
	f, err := n.Float64()
	if err != nil || f < 0 || f > 1<<53 {
		return 0, fmt.Errorf("bad NumericDate %q", n.String())
	}
	return int64(f), nil
}

// singleAudience reads "aud": a string, or (as generic JWT libraries write it) an array of
// exactly one string.
func singleAudience(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil && s != "" {
		return s, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil && len(list) == 1 && list[0] != "" {
		return list[0], nil
	}
	return "", errors.New("aud is neither a string nor a one-string array")
}

// verifyServiceAuth checks a service JWT sent to this node to call lxm: its shape and type,
// expiry, audience (our service DID, bare or with a #service of our DID document), lexicon
// method, the issuer's signature by the key its DID document names (retried once with a
// fresh document, for a key that just rotated) and that its jti was not used before. Errors
// are 401 XRPC errors with the reference's names.
func (s *identityService) verifyServiceAuth(ctx context.Context, raw string, lxm syntax.NSID) (*serviceAuth, error) {
	t, err := parseServiceToken(raw)
	if err != nil {
		return nil, err
	}
	now := s.n.now()
	exp := time.Unix(t.claims.Exp, 0)
	if !now.Before(exp) {
		return nil, jwtError("JwtExpired", "jwt expired", nil)
	}
	if exp.After(now.Add(maxServiceTokenTTL + time.Minute)) {
		return nil, jwtError("BadJwt", "jwt expires too far in the future", nil)
	}
	if !s.acceptsAudience(t.claims.Aud) {
		return nil, jwtError("BadJwtAudience", "jwt audience does not match service did", nil)
	}
	if t.claims.Lxm != lxm.String() {
		if t.claims.Lxm == "" {
			return nil, jwtError("BadJwtLexiconMethod", `missing jwt lexicon method ("lxm"). must match: `+lxm.String(), nil)
		}
		return nil, jwtError("BadJwtLexiconMethod", `bad jwt lexicon method ("lxm"). must match: `+lxm.String(), nil)
	}
	issRaw, serviceID, _ := strings.Cut(t.claims.Iss, "#")
	iss, err := syntax.ParseDID(issRaw)
	if err != nil {
		return nil, jwtError("BadJwtIss", "jwt issuer is not a DID", err)
	}
	keyID := "atproto"
	if serviceID == "atproto_labeler" {
		// Legacy labelers sign with their labeling key (reference @atproto/xrpc-server).
		keyID = "atproto_label"
	}
	if k := t.header.Kid; k != "" {
		keyID = strings.TrimPrefix(strings.TrimPrefix(k, iss.String()), "#")
	}
	if err := s.checkSignature(ctx, t, iss, keyID, false); err != nil {
		if !errors.Is(err, errBadServiceSignature) {
			return nil, err
		}
		// The issuer may have rotated its key since we cached its document.
		if err := s.resolver.Purge(ctx, iss); err != nil {
			return nil, fmt.Errorf("purge %s: %w", iss, err)
		}
		if err := s.checkSignature(ctx, t, iss, keyID, true); err != nil {
			return nil, err
		}
	}
	// Remembered only once the signature holds, so forged tokens cannot fill the cache.
	if !s.replay.add(iss.String()+"\x00"+t.claims.Jti, exp, now) {
		return nil, jwtError("BadJwt", "jwt replayed", nil)
	}
	return &serviceAuth{Iss: iss, ServiceID: serviceID, Aud: t.claims.Aud, Lxm: t.claims.Lxm, Exp: exp}, nil
}

// errBadServiceSignature marks a signature check that may succeed with a fresh document.
var errBadServiceSignature = errors.New("service jwt signature does not verify")

// checkSignature verifies t's signature with iss's key keyID from its (cached) DID document.
func (s *identityService) checkSignature(ctx context.Context, t *parsedServiceToken, iss syntax.DID, keyID string, retried bool) error {
	ident, err := s.resolver.LookupIdentity(ctx, iss.AtIdentifier())
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return jwtError("BadJwtIss", "could not resolve jwt issuer", err)
	}
	pub, err := ident.GetPublicKey(keyID)
	if err != nil {
		if retried {
			return jwtError("BadJwtIss", "jwt issuer has no key "+keyID, err)
		}
		return errBadServiceSignature
	}
	var keyAlg string
	switch pub.(type) {
	case *atcrypto.PublicKeyK256:
		keyAlg = algES256K
	case *atcrypto.PublicKeyP256:
		keyAlg = algES256
	}
	// The alg must name the key's curve, or a token could choose how its key is read.
	if keyAlg != t.header.Alg || len(t.sig) != 64 {
		return jwtError("BadJwtSignature", "jwt signature does not match jwt issuer", nil)
	}
	// Lenient: other implementations may send high-S signatures, and the jti cache, not
	// signature uniqueness, is what stops replays.
	if err := pub.HashAndVerifyLenient([]byte(t.input), t.sig); err != nil {
		if retried {
			return jwtError("BadJwtSignature", "jwt signature does not match jwt issuer", err)
		}
		return errBadServiceSignature
	}
	return nil
}

// acceptsAudience reports whether aud names this node: its service DID bare (what the
// reference PDS still sends) or followed by one of the services its DID document lists.
func (s *identityService) acceptsAudience(aud string) bool {
	did, svc, hasSvc := strings.Cut(aud, "#")
	if did != s.n.serviceDID() {
		return false
	}
	if !hasSvc {
		return true
	}
	switch svc {
	case "atproto_pds", "bsky_appview", "bsky_notif":
		return true
	}
	return false
}

// jtiCache remembers the jti of every accepted service token until it expires, so that
// a token captured in transit cannot be used twice. It is safe for concurrent use.
type jtiCache struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func newJTICache() *jtiCache { return &jtiCache{seen: map[string]time.Time{}} }

// add records key until exp and reports whether it was new. When the cache is full it
// first drops expired keys; if it is still full the token is refused rather than
// forgetting a live jti, which would let it replay.
func (c *jtiCache) add(key string, exp, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.seen[key]; ok && now.Before(e) {
		return false
	}
	if len(c.seen) >= jtiCacheSize {
		for k, e := range c.seen {
			if !now.Before(e) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= jtiCacheSize {
			return false
		}
	}
	c.seen[key] = exp
	return true
}

// isProtectedMethod reports whether nsid manages the account itself: such methods must be
// called on the PDS directly with a session, so no service token is minted for them
// (atproto reference §8.2).
func isProtectedMethod(nsid string) bool {
	switch nsid {
	case "com.atproto.admin.sendEmail",
		"com.atproto.identity.requestPlcOperationSignature",
		"com.atproto.identity.signPlcOperation",
		"com.atproto.identity.updateHandle",
		"com.atproto.server.activateAccount",
		"com.atproto.server.confirmEmail",
		"com.atproto.server.createAppPassword",
		"com.atproto.server.deactivateAccount",
		"com.atproto.server.getAccountInviteCodes",
		"com.atproto.server.getSession",
		"com.atproto.server.listAppPasswords",
		"com.atproto.server.requestAccountDelete",
		"com.atproto.server.requestEmailConfirmation",
		"com.atproto.server.requestEmailUpdate",
		"com.atproto.server.revokeAppPassword",
		"com.atproto.server.updateEmail":
		return true
	}
	return false
}

// isPrivilegedMethod reports whether a service token for nsid needs a full session or a
// privileged app password: chat, and createAccount (which moves the account elsewhere).
func isPrivilegedMethod(nsid string) bool {
	return strings.HasPrefix(nsid, "chat.bsky.") || nsid == "com.atproto.server.createAccount"
}

// handleComAtprotoServerGetServiceAuth mints a service JWT for the caller (reference §7.6).
// A taken-down account may still mint one for createAccount, to migrate away.
func (s *identityService) handleComAtprotoServerGetServiceAuth(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	a := authFrom(ctx)
	q := r.URL.Query()
	aud := q.Get("aud")
	audDID, svc, hasSvc := strings.Cut(aud, "#")
	if _, err := syntax.ParseDID(audDID); err != nil || (hasSvc && (svc == "" || strings.ContainsAny(svc, "# "))) {
		return xrpc.InvalidRequest("aud must be a DID, optionally with a #service")
	}
	lxm := q.Get("lxm")
	if lxm != "" {
		if _, err := xrpc.ParseNSID(lxm); err != nil {
			return err
		}
	}
	now := s.n.now()
	exp := now.Add(serviceTokenTTL)
	if v := q.Get("exp"); v != "" {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return xrpc.InvalidRequest("exp must be an integer (unix seconds)")
		}
		exp = time.Unix(secs, 0)
		ahead := exp.Sub(now)
		switch {
		case ahead < 0:
			return &xrpc.Error{Status: http.StatusBadRequest, Name: "BadExpiration", Message: "expiration is in past"}
		case ahead > maxServiceTokenTTL:
			return &xrpc.Error{Status: http.StatusBadRequest, Name: "BadExpiration",
				Message: "cannot request a token with an expiration more than an hour in the future"}
		case lxm == "" && ahead > maxMethodlessTokenTTL:
			return &xrpc.Error{Status: http.StatusBadRequest, Name: "BadExpiration",
				Message: "cannot request a method-less token with an expiration more than a minute in the future"}
		}
	}
	privileged := a.Scope == scopeAccess || a.Scope == scopeAppPassPrivilege
	switch {
	case a.Scope == scopeTakendown:
		if lxm != "com.atproto.server.createAccount" {
			return errTakendown
		}
	case isProtectedMethod(lxm):
		return xrpc.InvalidRequest("cannot request a service auth token for the following protected method: %s", lxm)
	case lxm != "" && !privileged && isPrivilegedMethod(lxm):
		return xrpc.InvalidRequest("insufficient access to request a service auth token for the following method: %s", lxm)
	case lxm == "" && !privileged:
		// A method-less token is good for every method, privileged ones included.
		return xrpc.InvalidRequest("insufficient access to request a service auth token without a method")
	}
	did := syntax.DID(a.DID)
	key, err := s.n.repos.SigningKey(ctx, did)
	if err != nil {
		return fmt.Errorf("load signing key of %s: %w", did, err)
	}
	token, err := signServiceToken(key, did, aud, lxm, now, exp)
	if err != nil {
		return err
	}
	xrpc.WriteJSON(w, http.StatusOK, map[string]string{"token": token})
	return nil
}

// withAuthOrTakendown is withAuth(authAccess) that also lets a taken-down account through,
// for the few methods it may still call (getServiceAuth for migration).
func (n *Node) withAuthOrTakendown(h handlerFunc) handlerFunc {
	standard := n.withAuth(authAccess, h)
	return func(w http.ResponseWriter, r *http.Request) error {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if strings.EqualFold(scheme, "Bearer") {
			if claims, err := n.tokens.parse(token, typAccess); err == nil && claims.Scope == scopeTakendown {
				a := &authInfo{DID: claims.Sub, Scope: claims.Scope}
				return h(w, r.WithContext(withAuth(r.Context(), a)))
			}
		}
		return standard(w, r)
	}
}
