package node

import "context"

type reqIDKey struct{}

// withRequestID returns ctx carrying the request's ID for logs.
func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, reqIDKey{}, id)
}

// requestID returns the request ID set by the request-ID middleware, or "".
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(reqIDKey{}).(string)
	return id
}

type authKey struct{}

// withAuth returns ctx carrying the request's authenticated caller.
func withAuth(ctx context.Context, a *authInfo) context.Context {
	return context.WithValue(ctx, authKey{}, a)
}

// authFrom returns the authenticated caller, or nil for an anonymous request.
func authFrom(ctx context.Context) *authInfo {
	a, _ := ctx.Value(authKey{}).(*authInfo)
	return a
}
