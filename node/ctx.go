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
