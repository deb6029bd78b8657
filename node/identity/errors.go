package identity

import "errors"

var (
	// ErrInvalidOperation is returned when a PLC operation is malformed: bad JSON, unknown
	// or missing fields, bad keys or a bad signature encoding. The directory answers 400.
	ErrInvalidOperation = errors.New("invalid PLC operation")
	// ErrInvalidSignature is returned when no allowed rotation key verifies an operation's
	// signature (or, for a recovery, no key of higher priority than the disputed signer).
	ErrInvalidSignature = errors.New("PLC operation signature invalid")
	// ErrForkedChain is returned when an operation's prev is not the DID's latest
	// operation and the operation is not a valid recovery, or it names an unknown or
	// nullified operation, or a second genesis.
	ErrForkedChain = errors.New("PLC operation does not extend the chain")
	// ErrLateRecovery is returned when a recovery would nullify an operation older than
	// the 72-hour recovery window.
	ErrLateRecovery = errors.New("PLC recovery window has passed")
	// ErrTombstoned is returned when the DID is tombstoned: it resolves to nothing and
	// takes no further operations (except a recovery within the window).
	ErrTombstoned = errors.New("DID is tombstoned")
	// ErrDIDNotFound is returned when a directory has never seen the DID.
	ErrDIDNotFound = errors.New("DID not found")
	// ErrDIDMismatch is returned when a genesis operation does not hash to the DID it
	// was submitted for, or a document's id is not the DID asked for.
	ErrDIDMismatch = errors.New("DID does not match")
	// ErrPrivateNetwork is returned by the outbound HTTP client when a request would
	// reach a loopback, private, link-local or otherwise non-public address and private
	// networks are not allowed.
	ErrPrivateNetwork = errors.New("refusing to connect to a private network address")
	// ErrHandleNotFound is returned when neither DNS nor the well-known endpoint names a
	// DID for a handle.
	ErrHandleNotFound = errors.New("handle not found")
	// ErrHandleMismatch is returned when a handle resolves to a different DID than the
	// one claiming it, or the DID's document does not claim the handle.
	ErrHandleMismatch = errors.New("handle does not match DID")
	// ErrInvalidDocument is returned when a DID document is not JSON of the expected
	// shape or is too large.
	ErrInvalidDocument = errors.New("invalid DID document")
	// ErrUnsupportedDID is returned for DID methods other than plc and web, and for
	// did:web identifiers that are not a plain hostname.
	ErrUnsupportedDID = errors.New("unsupported DID")
)
