package relay

import "errors"

var (
	// ErrClosed is returned by Submit and Subscription.Next when the sequencer's Run has
	// ended (or, for Submit, when Run has not been started and the caller's context ends
	// first it is the context's error instead).
	ErrClosed = errors.New("relay: sequencer closed")
	// ErrInvalidEvent is returned by Submit and the event constructors for an event that
	// cannot be sequenced: no body or several, a malformed DID, or a frame above MaxFrameSize.
	ErrInvalidEvent = errors.New("relay: invalid event")
	// ErrFutureCursor is returned by Subscribe for a cursor above the last sequenced seq.
	ErrFutureCursor = errors.New("relay: cursor is in the future")
	// ErrOutdatedCursor is returned by Subscription.Next when events the subscription had
	// not yet delivered were pruned from the log while it was catching up.
	ErrOutdatedCursor = errors.New("relay: events after cursor were pruned")
	// ErrConsumerTooSlow ends a firehose stream whose client fell behind the live window.
	ErrConsumerTooSlow = errors.New("relay: consumer too slow")
	// ErrMalformedFrame is returned by DecodeFrame for bytes that are not a valid event
	// stream frame.
	ErrMalformedFrame = errors.New("relay: malformed frame")
	// ErrUnknownType is returned by DecodeFrame for a well-formed message frame whose type
	// this package does not know; consumers skip it (atproto-reference §6.2).
	ErrUnknownType = errors.New("relay: unknown message type")
)
