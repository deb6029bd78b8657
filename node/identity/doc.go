// Package identity resolves DIDs and handles (PLC, did:web, DNS, well-known) with a cache,
// signs and checks PLC operations, and runs the embedded PLC directory.
//
// It is a leaf under node/: it imports node/sqlite and node/xrpc and no Aerie component.
// The pieces, each in its own file:
//
//   - operation.go: PLC operations (genesis, update, tombstone, the legacy "create"), their
//     DAG-CBOR signing bytes, CIDs, signatures and the DID a genesis operation names.
//   - chain.go: the rules for appending an operation to a DID's history, including the
//     72-hour recovery rule by which a higher-priority rotation key nullifies recent ops,
//     and VerifyAuditLog, which replays a whole /log/audit.
//   - directory.go: Directory, the embedded PLC directory over plc.sqlite, and its
//     http.Handler speaking the PLC HTTP API; the node owns the listener.
//   - client.go: PLCClient, for our directory or https://plc.directory.
//   - httpclient.go: NewHTTPClient, the outbound client that refuses private addresses
//     unless allowed.
//   - resolver.go, handle.go: Resolver (indigo's atproto/identity cache over our own base
//     directory, with a hook for the node's own handles), did:web resolution, and
//     handle verification by DNS TXT or HTTPS well-known.
//   - document.go: DID documents as plc.directory renders them, and the node's own
//     did:web service document (ServiceDIDDocument).
//
// Every exported type is safe for concurrent use once built.
package identity
