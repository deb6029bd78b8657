package relay

import (
	"fmt"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"

	"github.com/aerie-social/aerie/repo"
)

// NewCommit returns the #commit event for a repo commit (atproto-reference §6.4), with the
// Sync 1.1 fields filled: since (null on the genesis commit), prevData (left out on the
// genesis commit), each op's prev, and the deprecated but required tooBig: false,
// rebase: false and blobs: []. It returns ErrInvalidEvent for more than repo.MaxWrites ops
// or blocks above repo.MaxCommitBlocks, which consumers would reject.
func NewCommit(ce *repo.CommitEvent) (*Event, error) {
	if len(ce.Ops) > maxCommitOps {
		return nil, fmt.Errorf("%w: commit %s has %d ops, limit %d", ErrInvalidEvent, ce.Rev, len(ce.Ops), maxCommitOps)
	}
	if len(ce.Blocks) > repo.MaxCommitBlocks {
		return nil, fmt.Errorf("%w: commit %s blocks are %d bytes, limit %d", ErrInvalidEvent, ce.Rev, len(ce.Blocks), repo.MaxCommitBlocks)
	}
	if !ce.Commit.Defined() {
		return nil, fmt.Errorf("%w: commit %s has no CID", ErrInvalidEvent, ce.Rev)
	}
	body := &comatproto.SyncSubscribeRepos_Commit{
		Repo:   ce.DID.String(),
		Rev:    ce.Rev.String(),
		Commit: lexutil.LexLink(ce.Commit),
		Blocks: lexutil.LexBytes(ce.Blocks),
		Ops:    make([]*comatproto.SyncSubscribeRepos_RepoOp, len(ce.Ops)),
		Blobs:  []lexutil.LexLink{},
	}
	if ce.Since != "" {
		since := ce.Since.String()
		body.Since = &since
	}
	if ce.PrevData.Defined() {
		body.PrevData = link(ce.PrevData)
	}
	for i, op := range ce.Ops {
		body.Ops[i] = &comatproto.SyncSubscribeRepos_RepoOp{
			Action: string(op.Action),
			Path:   op.Path,
			Cid:    link(op.CID),  // null for delete
			Prev:   link(op.Prev), // absent for create
		}
	}
	return &Event{Commit: body}, nil
}
