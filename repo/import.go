package repo

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/sqlite"
)

// carBlocks serves the blocks of a loaded CAR to the MST.
type carBlocks struct{ f *CARFile }

// ReadBlock returns the block c, or an error wrapping ErrBlockNotFound.
func (cb carBlocks) ReadBlock(_ context.Context, c cid.Cid) ([]byte, error) {
	data, ok := cb.f.Get(c)
	if !ok {
		return nil, fmt.Errorf("read block %s: %w", c, ErrBlockNotFound)
	}
	return data, nil
}

// Import creates did's repository from a full repo CAR exported by another PDS (account
// migration). The commit must name did and carry a valid signature by verifyKey; the tree
// must be canonical (rebuilt from its keys it gives the same root) and every record it
// names must be in the CAR and decode as a record. The commit is stored as it is, so the
// repo keeps its rev and root CID; signingKey signs this repo's future commits.
//
// It returns ErrRepoExists, ErrInvalidCAR, ErrTooLarge (CAR limits), ErrInvalidCommit,
// ErrBadSignature or ErrInvalidRecord. The returned event has no ops and carries only the
// commit block: what a #sync event announces.
func (s *Store) Import(ctx context.Context, did syntax.DID, r io.Reader, verifyKey atcrypto.PublicKey, signingKey atcrypto.PrivateKeyExportable) (*CommitEvent, error) {
	ev, err := s.importCAR(ctx, did, r, verifyKey, signingKey)
	if err != nil {
		return nil, fmt.Errorf("import repo %s: %w", did, err)
	}
	return ev, nil
}

func (s *Store) importCAR(ctx context.Context, did syntax.DID, r io.Reader, verifyKey atcrypto.PublicKey, signingKey atcrypto.PrivateKeyExportable) (*CommitEvent, error) {
	car, err := ReadCAR(r, DefaultCARLimits())
	if err != nil {
		return nil, err
	}
	v, err := VerifyRepoCAR(ctx, did, car, verifyKey)
	if err != nil {
		return nil, err
	}
	commit := v.Commit
	ev := &CommitEvent{DID: did, Rev: commit.Rev, Commit: v.CommitCID, Data: commit.Data}
	var buf bytes.Buffer
	if err := WriteCARHeader(&buf, v.CommitCID); err != nil {
		return nil, err
	}
	if err := WriteCARBlock(&buf, v.CommitCID, v.CommitBytes); err != nil {
		return nil, err
	}
	ev.Blocks = buf.Bytes()

	var exclusiveErr error
	err = s.exclusive(ctx, did, func() error {
		_, exclusiveErr = s.buildActor(ctx, did, signingKey, func(a *actor) (*CommitEvent, error) {
			return nil, a.db.Write(ctx, func(tx *sql.Tx) error {
				return storeImport(ctx, a.db, tx, commit.Rev, v.CommitCID, v.CommitBytes, commit.Data, v.nodes, v.Records)
			})
		})
		return exclusiveErr
	})
	if err != nil {
		return nil, err
	}
	return ev, nil
}

// storeImport writes an imported repo into a fresh actor file.
func storeImport(ctx context.Context, db *sqlite.DB, tx *sql.Tx, rev syntax.TID, commitCID cid.Cid, commitBytes []byte, data cid.Cid, nodes []Block, records []VerifiedRecord) error {
	ct := &commitTx{ctx: ctx, db: db, tx: tx, rev: rev, revInt: revInt(rev)}
	// Straight into blocks, not through the fresh table (migration 0004): an import
	// replaces nothing, so every node would move there anyway.
	for _, b := range nodes {
		err := ct.exec("INSERT INTO blocks (cid, rev, refs, data) VALUES (?, ?, 0, ?) ON CONFLICT (cid) DO NOTHING", b.CID.Bytes(), ct.revInt, b.Data)
		if err != nil {
			return fmt.Errorf("store node %s: %w", b.CID, err)
		}
	}
	for _, r := range records {
		if err := ct.addRecord(r.Collection, r.RKey, r.Record, false); err != nil {
			return err
		}
	}
	err := ct.exec("INSERT INTO root (id, commit_cid, rev, data_cid, commit_block) VALUES (1, ?, ?, ?, ?)",
		commitCID.Bytes(), string(rev), data.Bytes(), commitBytes)
	if err != nil {
		return fmt.Errorf("set head: %w", err)
	}
	return nil
}

// splitPath parses an MST key into its collection and record key.
func splitPath(key string) (syntax.NSID, syntax.RecordKey, error) {
	collection, rkey, err := syntax.ParseRepoPath(key)
	if err != nil {
		return "", "", fmt.Errorf("%w: key %q: %w", ErrInvalidCAR, key, err)
	}
	return collection, rkey, nil
}
