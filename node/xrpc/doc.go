// Package xrpc holds XRPC wire helpers: the error body, query parameters and
// the outbound client.
//
// It is a leaf under node/ and imports no Aerie component. Its syntax
// parsers (ParseHandle, ParseDID, …) are where untrusted identifiers from
// query parameters and request bodies become typed values from indigo's
// atproto/syntax: they agree with every vendored interop vector (see
// node/interop), adding our own checks where indigo alone does not. Every
// function in the package is safe for concurrent use.
package xrpc
