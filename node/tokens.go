package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Session token scopes, as the reference PDS writes them; clients treat tokens as opaque
// but other PDS software and tools read the scope.
const (
	scopeAccess           = "com.atproto.access"
	scopeAppPass          = "com.atproto.appPass"
	scopeAppPassPrivilege = "com.atproto.appPassPrivileged"
	scopeTakendown        = "com.atproto.takendown"
	scopeRefresh          = "com.atproto.refresh"
)

// JWT "typ" headers separate access from refresh tokens, so that neither is accepted as
// the other.
const (
	typAccess  = "at+jwt"
	typRefresh = "refresh+jwt"
)

// Token lifetimes of the reference PDS; the official app refreshes on ExpiredToken.
const (
	accessTokenTTL  = 120 * time.Minute
	refreshTokenTTL = 90 * 24 * time.Hour
	// refreshGrace is how long a rotated refresh token still yields its successor, so a
	// client whose refresh response was lost can retry.
	refreshGrace = 2 * time.Hour
)

var (
	errTokenExpired = errors.New("token has expired")
	errTokenInvalid = errors.New("token is invalid")
)

// sessionClaims are the claims of access and refresh tokens. It implements jwt.Claims
// itself because golang-jwt would write "aud" as an array, where the reference writes a string.
type sessionClaims struct {
	Scope string `json:"scope"`
	Sub   string `json:"sub"`
	Aud   string `json:"aud"`
	JTI   string `json:"jti,omitempty"`
	Iat   int64  `json:"iat"`
	Exp   int64  `json:"exp"`
	// Lxm and Cnf belong to service and DPoP tokens; an access token carrying them is refused.
	Lxm string `json:"lxm,omitempty"`
	Cnf any    `json:"cnf,omitempty"`
}

func (c sessionClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Exp, 0)), nil
}
func (c sessionClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Iat, 0)), nil
}
func (c sessionClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c sessionClaims) GetIssuer() (string, error)              { return "", nil }
func (c sessionClaims) GetSubject() (string, error)             { return c.Sub, nil }
func (c sessionClaims) GetAudience() (jwt.ClaimStrings, error)  { return jwt.ClaimStrings{c.Aud}, nil }

// tokenIssuer signs and checks session tokens with the node's HMAC secret.
type tokenIssuer struct {
	secret     []byte
	serviceDID string
	now        func() time.Time

	// verified remembers the tokens parse accepted, so a client's next requests with the
	// same token skip decoding and the HMAC (a quarter of a small write's handler time).
	// Nothing but expiry can change a verdict: tokens carry no state to revoke.
	mu       sync.Mutex
	verified map[string]verifiedToken
}

// verifiedToken is an entry of tokenIssuer.verified.
type verifiedToken struct {
	typ    string
	claims sessionClaims
}

// maxVerifiedTokens bounds tokenIssuer.verified (about 500 bytes each); when it is full
// it is forgotten.
const maxVerifiedTokens = 4096

func (ti *tokenIssuer) sign(typ string, c sessionClaims) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	tok.Header["typ"] = typ
	s, err := tok.SignedString(ti.secret)
	if err != nil {
		return "", fmt.Errorf("sign %s token: %w", typ, err)
	}
	return s, nil
}

// accessToken mints an access token for did with scope.
func (ti *tokenIssuer) accessToken(did, scope string) (string, error) {
	now := ti.now()
	return ti.sign(typAccess, sessionClaims{Scope: scope, Sub: did, Aud: ti.serviceDID,
		Iat: now.Unix(), Exp: now.Add(accessTokenTTL).Unix()})
}

// refreshToken mints the refresh token with the given id (jti) and expiry.
func (ti *tokenIssuer) refreshToken(did, id string, exp time.Time) (string, error) {
	return ti.sign(typRefresh, sessionClaims{Scope: scopeRefresh, Sub: did, Aud: ti.serviceDID, JTI: id,
		Iat: ti.now().Unix(), Exp: exp.Unix()})
}

// parse checks a token's signature, typ, audience and expiry. It returns errTokenExpired
// for a well-signed but expired token and errTokenInvalid for anything else wrong.
func (ti *tokenIssuer) parse(raw, wantTyp string) (*sessionClaims, error) {
	ti.mu.Lock()
	v, ok := ti.verified[raw]
	ti.mu.Unlock()
	if ok && v.typ == wantTyp {
		if !ti.now().Before(time.Unix(v.claims.Exp, 0)) {
			return nil, errTokenExpired
		}
		return &v.claims, nil
	}
	c, err := ti.verify(raw, wantTyp)
	if err != nil {
		return nil, err
	}
	ti.mu.Lock()
	if ti.verified == nil || len(ti.verified) >= maxVerifiedTokens {
		ti.verified = map[string]verifiedToken{}
	}
	ti.verified[raw] = verifiedToken{typ: wantTyp, claims: *c}
	ti.mu.Unlock()
	return c, nil
}

// verify is parse without the memory of verified tokens.
func (ti *tokenIssuer) verify(raw, wantTyp string) (*sessionClaims, error) {
	var c sessionClaims
	tok, err := jwt.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return ti.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithTimeFunc(ti.now),
		jwt.WithExpirationRequired(),
		jwt.WithAudience(ti.serviceDID))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired) && tok != nil && tokenTyp(tok) == wantTyp && c.Aud == ti.serviceDID:
		return nil, errTokenExpired
	case err != nil:
		return nil, fmt.Errorf("%w: %w", errTokenInvalid, err)
	case tokenTyp(tok) != wantTyp:
		return nil, fmt.Errorf("%w: wrong token type %q", errTokenInvalid, tokenTyp(tok))
	case c.Sub == "" || c.Lxm != "" || c.Cnf != nil:
		return nil, fmt.Errorf("%w: unexpected claims", errTokenInvalid)
	}
	return &c, nil
}

func tokenTyp(tok *jwt.Token) string {
	typ, _ := tok.Header["typ"].(string)
	return typ
}

// newTokenID returns a random identifier for refresh tokens and similar.
func newTokenID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
