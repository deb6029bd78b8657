package relay

import (
	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"

	"github.com/aerie-social/aerie/repo"
)

// NewCommit returns the #commit event for a repo commit (atproto-reference §6.4), with the
// Sync 1.1 fields filled: since (null on the genesis commit), prevData (left out on the
// genesis commit), each op's prev, and the deprecated but required tooBig: false,
// rebase: false and blobs: []. Size limits are checked by Submit (ErrInvalidEvent).
func NewCommit(ce *repo.CommitEvent) *Event {
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
	return &Event{Commit: body}
}
