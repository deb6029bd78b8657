package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// VerifiedRepo is a whole repository checked by VerifyRepoCAR.
type VerifiedRepo struct {
	Commit      *Commit
	CommitCID   cid.Cid
	CommitBytes []byte
	// Records holds every record in key order.
	Records []VerifiedRecord
	// nodes are the canonical tree's blocks, for Import.
	nodes []Block
}

// VerifiedRecord is one record of a VerifiedRepo.
type VerifiedRecord struct {
	Collection syntax.NSID
	RKey       syntax.RecordKey
	Record     *Record
}

// VerifyRepoCAR checks a full repo CAR (the answer of com.atproto.sync.getRepo): its first
// root is a v3 commit for did signed by key, the tree is the canonical one for its keys
// (rebuilt from them it gives the same root), and every record it names is in the CAR and
// decodes as a record. Errors wrap ErrInvalidCAR, ErrInvalidCommit, ErrBadSignature or
// ErrInvalidRecord.
func VerifyRepoCAR(ctx context.Context, did syntax.DID, car *CARFile, key atcrypto.PublicKey) (*VerifiedRepo, error) {
	if len(car.Roots) == 0 {
		return nil, fmt.Errorf("%w: no root", ErrInvalidCAR)
	}
	blocks := carBlocks{car}
	commitCID := car.Roots[0]
	commitBytes, err := blocks.ReadBlock(ctx, commitCID)
	if err != nil {
		return nil, fmt.Errorf("%w: commit: %w", ErrInvalidCAR, err)
	}
	commit, err := DecodeCommit(commitBytes)
	if err != nil {
		return nil, err
	}
	if commit.DID != did {
		return nil, fmt.Errorf("%w: commit is for %s", ErrInvalidCommit, commit.DID)
	}
	if err := commit.Verify(key); err != nil {
		return nil, err
	}

	// Read every entry of the tree as given, then rebuild it from the keys alone: equal
	// roots prove the given tree is the canonical one for those records.
	src := NewTree(blocks, nil, commit.Data)
	v := &VerifiedRepo{Commit: commit, CommitCID: commitCID, CommitBytes: commitBytes}
	rebuilt := NewTree(blocks, nil, cid.Undef)
	err = src.Walk(ctx, "", false, func(key string, val cid.Cid) error {
		collection, rkey, err := splitPath(key)
		if err != nil {
			return err
		}
		data, err := blocks.ReadBlock(ctx, val)
		if err != nil {
			return fmt.Errorf("%w: record %s: %w", ErrInvalidCAR, key, err)
		}
		rec, err := RecordFromCBOR(data)
		if err != nil {
			return fmt.Errorf("record %s: %w", key, err)
		}
		if rec.CID != val {
			return fmt.Errorf("%w: record %s hashes to %s, not %s", ErrInvalidCAR, key, rec.CID, val)
		}
		v.Records = append(v.Records, VerifiedRecord{Collection: collection, RKey: rkey, Record: rec})
		return rebuilt.Put(ctx, key, val)
	})
	if err != nil {
		return nil, err
	}
	delta, err := rebuilt.Flush(ctx)
	if err != nil {
		return nil, fmt.Errorf("rebuild tree: %w", err)
	}
	if delta.Root != commit.Data {
		return nil, fmt.Errorf("%w: tree rebuilt from its records has root %s, commit names %s", ErrInvalidCommit, delta.Root, commit.Data)
	}
	v.nodes = delta.NewBlocks
	return v, nil
}

// CommitMessage is the part of a firehose #commit that VerifyCommitMessage checks.
type CommitMessage struct {
	DID    syntax.DID
	Rev    syntax.TID
	Commit cid.Cid
	// PrevData is the tree root before the commit; cid.Undef when the sender did not give
	// one (a pre-Sync 1.1 sender), which skips the inversion check.
	PrevData cid.Cid
	Ops      []Op
	// Blocks is the message's CAR slice.
	Blocks []byte
}

// MaxMessageBlocks bounds the CAR slice of one #commit read by VerifyCommitMessage, as the
// firehose lexicon does.
const MaxMessageBlocks = 2_000_000

// VerifyCommitMessage checks a #commit from another host the way a Sync 1.1 consumer must:
// the CAR holds the commit, which is for m.DID at m.Rev and signed by key; every created or
// updated record's block is there; the ops are what the new tree says (a create or update
// finds its CID, a delete finds nothing); and, when PrevData is given, undoing the ops on the
// new tree using only the carried blocks gives exactly PrevData. It returns the decoded
// commit. Errors wrap ErrInvalidCAR, ErrTooLarge, ErrInvalidCommit or ErrBadSignature.
func VerifyCommitMessage(ctx context.Context, m CommitMessage, key atcrypto.PublicKey) (*Commit, error) {
	car, err := ParseCAR(m.Blocks, CARLimits{
		MaxBytes:      MaxMessageBlocks,
		MaxBlocks:     10_000,
		MaxBlockSize:  1 << 20,
		MaxHeaderSize: 1 << 10,
	})
	if err != nil {
		return nil, err
	}
	blocks := carBlocks{car}
	commitBytes, err := blocks.ReadBlock(ctx, m.Commit)
	if err != nil {
		return nil, fmt.Errorf("%w: commit block: %w", ErrInvalidCommit, err)
	}
	commit, err := DecodeCommit(commitBytes)
	if err != nil {
		return nil, err
	}
	if commit.DID != m.DID {
		return nil, fmt.Errorf("%w: commit is for %s, message for %s", ErrInvalidCommit, commit.DID, m.DID)
	}
	if commit.Rev != m.Rev {
		return nil, fmt.Errorf("%w: commit rev %s, message rev %s", ErrInvalidCommit, commit.Rev, m.Rev)
	}
	if err := commit.Verify(key); err != nil {
		return nil, err
	}

	tree := NewTree(blocks, nil, commit.Data)
	for _, op := range m.Ops {
		if _, _, err := syntax.ParseRepoPath(op.Path); err != nil {
			return nil, fmt.Errorf("%w: op path %q: %w", ErrInvalidCommit, op.Path, err)
		}
		got, err := tree.Get(ctx, op.Path)
		if errors.Is(err, ErrRecordNotFound) {
			got, err = cid.Undef, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: look up %s in the new tree: %w", ErrInvalidCommit, op.Path, err)
		}
		switch op.Action {
		case ActionCreate, ActionUpdate:
			if !op.CID.Defined() || got != op.CID {
				return nil, fmt.Errorf("%w: %s %s: tree holds %s, op says %s", ErrInvalidCommit, op.Action, op.Path, got, op.CID)
			}
			if _, ok := car.Get(op.CID); !ok {
				return nil, fmt.Errorf("%w: %s %s: record block %s missing", ErrInvalidCommit, op.Action, op.Path, op.CID)
			}
		case ActionDelete:
			if got.Defined() {
				return nil, fmt.Errorf("%w: delete %s: tree still holds %s", ErrInvalidCommit, op.Path, got)
			}
		default:
			return nil, fmt.Errorf("%w: op action %q", ErrInvalidCommit, op.Action)
		}
	}
	if !m.PrevData.Defined() {
		return commit, nil
	}
	for i := len(m.Ops) - 1; i >= 0; i-- {
		op := m.Ops[i]
		switch op.Action {
		case ActionCreate:
			err = tree.Delete(ctx, op.Path)
		default:
			if !op.Prev.Defined() {
				return nil, fmt.Errorf("%w: %s %s has no prev", ErrInvalidCommit, op.Action, op.Path)
			}
			err = tree.Put(ctx, op.Path, op.Prev)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: invert %s %s: %w", ErrInvalidCommit, op.Action, op.Path, err)
		}
	}
	inverted, err := tree.Flush(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: invert: %w", ErrInvalidCommit, err)
	}
	if inverted.Root != m.PrevData {
		return nil, fmt.Errorf("%w: ops undone give root %s, prevData is %s", ErrInvalidCommit, inverted.Root, m.PrevData)
	}
	return commit, nil
}
