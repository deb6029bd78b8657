package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// Cookie names. Over https they take the __Host- prefix, which the browser only accepts
// with Secure, Path=/ and no Domain, so a sibling subdomain cannot plant them.
const (
	sessionCookie = "aerie_session"
	csrfCookie    = "aerie_csrf"
)

// session is the signed content of the session cookie.
type session struct {
	DID    string `json:"d"`
	Handle string `json:"h"`
	// Exp is when the session ends, in Unix seconds.
	Exp int64 `json:"e"`
}

// state is what a request carries about its browser: the session (nil when signed out)
// and the CSRF nonce.
type state struct {
	sess   *session
	nonce  string
	secure bool
}

type stateKey struct{}

func withState(ctx context.Context, st *state) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

func stateFrom(ctx context.Context) *state {
	st, _ := ctx.Value(stateKey{}).(*state)
	if st == nil {
		return &state{}
	}
	return st
}

// isSecure reports whether cookies must be Secure for r.
func (s *Server) isSecure(r *http.Request) bool {
	return s.secure || r.TLS != nil
}

func cookieName(base string, secure bool) string {
	if secure {
		return "__Host-" + base
	}
	return base
}

// readState reads the session and CSRF cookies of r, setting a new CSRF nonce cookie on w
// when the browser has none.
func (s *Server) readState(w http.ResponseWriter, r *http.Request) *state {
	st := &state{secure: s.isSecure(r)}
	if c, err := r.Cookie(cookieName(sessionCookie, st.secure)); err == nil {
		st.sess = s.verifySession(c.Value)
	}
	if c, err := r.Cookie(cookieName(csrfCookie, st.secure)); err == nil && validNonce(c.Value) {
		st.nonce = c.Value
	} else {
		s.newNonce(w, st)
	}
	return st
}

// newNonce gives the browser a new CSRF nonce: on first visit and at each sign-in and
// sign-out, so a token seen before cannot be replayed across them.
func (s *Server) newNonce(w http.ResponseWriter, st *state) {
	st.nonce = randomToken()
	http.SetCookie(w, s.cookie(cookieName(csrfCookie, st.secure), st.nonce, 0, st.secure))
}

func (s *Server) cookie(name, value string, maxAge int, secure bool) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode}
}

// nonceBytes is the entropy of a CSRF nonce.
const nonceBytes = 18

func randomToken() string {
	b := make([]byte, nonceBytes)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

func validNonce(v string) bool {
	b, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil && len(b) == nonceBytes
}

func (s *Server) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, s.cfg.CookieKey)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// csrfToken is the token the forms of st's pages carry: bound to the browser's nonce and
// to the signed-in account, so a token minted for one cannot be used with another.
func (s *Server) csrfToken(st *state) string {
	did := ""
	if st.sess != nil {
		did = st.sess.DID
	}
	return base64.RawURLEncoding.EncodeToString(s.mac("csrf", st.nonce, did))
}

func (s *Server) validCSRF(st *state, token string) bool {
	if st.nonce == "" || token == "" {
		return false
	}
	return hmac.Equal([]byte(token), []byte(s.csrfToken(st)))
}

// signIn sets the session cookie for the account and a new CSRF nonce.
func (s *Server) signIn(w http.ResponseWriter, st *state, did, handle string) {
	sess := &session{DID: did, Handle: handle, Exp: s.now().Add(s.cfg.SessionTTL).Unix()}
	payload, _ := json.Marshal(sess) // cannot fail: strings and an int
	p := base64.RawURLEncoding.EncodeToString(payload)
	sig := base64.RawURLEncoding.EncodeToString(s.mac("session", p))
	http.SetCookie(w, s.cookie(cookieName(sessionCookie, st.secure), p+"."+sig, int(s.cfg.SessionTTL/time.Second), st.secure))
	st.sess = sess
	s.newNonce(w, st)
}

// signOut clears the session cookie and sets a new CSRF nonce.
func (s *Server) signOut(w http.ResponseWriter, st *state) {
	http.SetCookie(w, s.cookie(cookieName(sessionCookie, st.secure), "", -1, st.secure))
	st.sess = nil
	s.newNonce(w, st)
}

// verifySession returns the session in a cookie value, or nil when the signature is
// wrong or the session has expired.
func (s *Server) verifySession(v string) *session {
	p, sig, ok := strings.Cut(v, ".")
	if !ok {
		return nil
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac("session", p)) {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return nil
	}
	var sess session
	if err := json.Unmarshal(raw, &sess); err != nil || sess.DID == "" || s.now().Unix() >= sess.Exp {
		return nil
	}
	return &sess
}
