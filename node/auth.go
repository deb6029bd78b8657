package node

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/aerie-social/aerie/node/xrpc"
)

// authInfo is the authenticated caller of a request.
type authInfo struct {
	// DID is the account acting; empty for the admin.
	DID string
	// Scope is the session token's scope.
	Scope string
	// RefreshID is the jti of the refresh token used, for refreshSession and deleteSession.
	RefreshID string
	// Admin is true for HTTP basic auth with the admin password.
	Admin bool
}

// authLevel is what a handler requires of its caller.
type authLevel int

const (
	// authOptional reads a token when one is present and rejects a bad one.
	authOptional authLevel = iota
	// authAccess takes any access token, app passwords included.
	authAccess
	// authPrivileged takes full access or a privileged app password.
	authPrivileged
	// authFull takes only a full (password) session: account management.
	authFull
	// authRefresh takes a refresh token.
	authRefresh
	// authAdmin takes HTTP basic auth as admin.
	authAdmin
)

var (
	errAuthMissing = &xrpc.Error{Status: http.StatusUnauthorized, Name: "AuthMissing", Message: "Authentication Required"}
	errBadScope    = &xrpc.Error{Status: http.StatusBadRequest, Name: "InvalidToken", Message: "Bad token scope"}
	errAdminOff    = &xrpc.Error{Status: http.StatusUnauthorized, Name: "AuthenticationRequired", Message: "the admin API is disabled on this server (no admin_password)"}
	errBadAdmin    = &xrpc.Error{Status: http.StatusUnauthorized, Name: "AuthenticationRequired", Message: "Invalid admin credentials"}
	errTakendown   = &xrpc.Error{Status: http.StatusUnauthorized, Name: "AccountTakedown", Message: "Account has been taken down"}
)

// withAuth wraps h so that it runs only for a caller that meets level; the caller is in
// the request context (authFrom).
func (n *Node) withAuth(level authLevel, h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		a, err := n.authenticate(r, level)
		if err != nil {
			var xe *xrpc.Error
			if errors.As(err, &xe) && xe.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+n.serviceDID()+`"`)
			}
			return err
		}
		return h(w, r.WithContext(withAuth(r.Context(), a)))
	}
}

func (n *Node) authenticate(r *http.Request, level authLevel) (*authInfo, error) {
	header := r.Header.Get("Authorization")
	if level == authAdmin {
		return n.authenticateAdmin(r)
	}
	scheme, token, _ := strings.Cut(header, " ")
	if header == "" {
		if level == authOptional {
			return nil, nil
		}
		return nil, errAuthMissing
	}
	if strings.EqualFold(scheme, "Basic") && level == authOptional {
		// The admin may read what only owners may (e.g. deactivated repos).
		return n.authenticateAdmin(r)
	}
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, &xrpc.Error{Status: http.StatusUnauthorized, Name: "InvalidToken", Message: "Authorization must be a Bearer token"}
	}
	wantTyp := typAccess
	if level == authRefresh {
		wantTyp = typRefresh
	}
	claims, err := n.tokens.parse(token, wantTyp)
	switch {
	case errors.Is(err, errTokenExpired):
		return nil, &xrpc.Error{Status: http.StatusBadRequest, Name: "ExpiredToken", Message: "Token has expired", Err: err}
	case err != nil:
		return nil, &xrpc.Error{Status: http.StatusUnauthorized, Name: "InvalidToken", Message: "Token could not be verified", Err: err}
	}
	a := &authInfo{DID: claims.Sub, Scope: claims.Scope}
	switch level {
	case authRefresh:
		if claims.Scope != scopeRefresh || claims.JTI == "" {
			return nil, errBadScope
		}
		a.RefreshID = claims.JTI
		return a, nil
	case authFull:
		if claims.Scope != scopeAccess {
			return nil, errBadScope
		}
	case authPrivileged:
		if claims.Scope != scopeAccess && claims.Scope != scopeAppPassPrivilege {
			return nil, errBadScope
		}
	default:
		switch claims.Scope {
		case scopeAccess, scopeAppPass, scopeAppPassPrivilege:
		case scopeTakendown:
			return nil, errTakendown
		default:
			return nil, errBadScope
		}
	}
	return a, nil
}

func (n *Node) authenticateAdmin(r *http.Request) (*authInfo, error) {
	want := n.cfg.AdminPassword.Reveal()
	if want == "" {
		return nil, errAdminOff
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return nil, errAuthMissing
	}
	// Compare both in constant time so neither reveals a prefix match.
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte("admin"))
	passOK := subtle.ConstantTimeCompare([]byte(pass), []byte(want))
	if userOK&passOK != 1 {
		return nil, errBadAdmin
	}
	return &authInfo{Admin: true}, nil
}
