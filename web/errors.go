package web

import "errors"

// Errors a Backend returns for the web UI to show a specific message.
var (
	// ErrBadCredentials is returned by Backend.Login when the identifier or password is
	// wrong, or the account cannot sign in.
	ErrBadCredentials = errors.New("wrong handle or password")
	// ErrRateLimited is returned by Backend.Login when the sign-in rate limit (shared with
	// com.atproto.server.createSession) is exhausted.
	ErrRateLimited = errors.New("too many attempts")
	// ErrDeactivated is returned by Backend.Login for the right credentials of an account
	// its owner deactivated: the sign-in page then offers Backend.Reactivate.
	ErrDeactivated = errors.New("account is deactivated")
)

// FormError is a refusal the person filling in a form can act on (a taken handle, a short
// password, a wrong invite code); its Message is shown on the form.
type FormError struct{ Message string }

// Error returns the message.
func (e *FormError) Error() string { return e.Message }

// ErrNoRecord is returned by Backend.GetRecord when the account has no such record.
var ErrNoRecord = errors.New("no such record")
