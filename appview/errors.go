package appview

import "errors"

var (
	// ErrNotCaughtUp is returned by WaitForSeq when the indexer did not reach the seq
	// within the configured bound: the write is durable, only not yet visible in views.
	ErrNotCaughtUp = errors.New("appview: index has not caught up")
	// ErrClosed is returned by Run when called a second time.
	ErrClosed = errors.New("appview: Run called twice")
)
