// Package interop gives tests the vendored AT Protocol interop test vectors.
//
// The vectors live in testdata/ beside this file (a byte-for-byte copy of
// bluesky-social/atproto-interop-tests; provenance and licence in
// testdata/README.md) and are embedded into the package, so tests of any
// package can read them whatever their working directory is, and a fresh
// clone needs nothing outside the module.
//
// Paths are slash-separated and relative to testdata/, for example
// "syntax/handle_syntax_valid.txt". A vector that cannot be read or decoded
// fails the calling test: it never skips, because a silently skipped
// conformance test looks exactly like a passing one.
//
// Only tests should import this package. Everything in it is read-only and
// safe for concurrent use by parallel tests.
package interop
