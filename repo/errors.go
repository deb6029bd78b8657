package repo

import "errors"

// Package sentinels. Callers test them with errors.Is; the message after the
// sentinel (added with %w by the function that failed) names the value at fault.
var (
	// ErrRecordNotFound is returned when a collection/rkey path has no record.
	ErrRecordNotFound = errors.New("repo: record not found")
	// ErrInvalidSwap is returned when a swapCommit or swapRecord condition does
	// not hold against the current repo state.
	ErrInvalidSwap = errors.New("repo: invalid swap")
	// ErrRepoNotFound is returned when a DID has no repository on this node.
	ErrRepoNotFound = errors.New("repo: repository not found")
	// ErrInvalidRecord is returned when a record breaks the data model (floats,
	// bad $type, bad links or bytes, too deep) or fails lexicon validation.
	ErrInvalidRecord = errors.New("repo: invalid record")
	// ErrInvalidCAR is returned when CAR bytes are malformed: a bad varint or
	// header, a non-CIDv1 block CID, or a block whose hash does not match its CID.
	ErrInvalidCAR = errors.New("repo: invalid CAR")
	// ErrTooLarge is returned when input exceeds a size, count or depth limit.
	ErrTooLarge = errors.New("repo: too large")
	// ErrInvalidCommit is returned when a commit object is malformed: wrong
	// version, bad DID or rev syntax, wrong signature length, non-canonical CBOR.
	ErrInvalidCommit = errors.New("repo: invalid commit")
	// ErrBadSignature is returned when a commit signature does not verify
	// against the given public key (including high-S and DER signatures).
	ErrBadSignature = errors.New("repo: bad signature")
)
