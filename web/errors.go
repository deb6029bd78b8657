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
)
