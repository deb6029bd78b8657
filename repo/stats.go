package repo

import (
	"context"
	"database/sql"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// HeadBlock returns did's current commit CID, rev and the signed commit block itself, for
// a #sync event.
func (s *Store) HeadBlock(ctx context.Context, did syntax.DID) (commit cid.Cid, rev syntax.TID, block []byte, err error) {
	err = s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			h, err := readHead(ctx, a.db, tx)
			if err != nil {
				return err
			}
			commit, rev = h.commit, h.rev
			block, err = (&txBlocks{db: a.db, tx: tx}).ReadBlock(ctx, h.commit)
			return err
		})
	})
	return commit, rev, block, err
}

// RepoStats counts what one repository holds, for checkAccountStatus after a migration.
type RepoStats struct {
	Commit cid.Cid
	Rev    syntax.TID
	// Blocks counts stored blocks (the commit in the root row, MST nodes, record values).
	Blocks int64
	// Records counts records.
	Records int64
	// Blobs counts distinct blobs the records reference.
	Blobs int64
	// Preferences is 1 when the account has stored preferences.
	Preferences int64
}

// Stats returns did's RepoStats from one consistent snapshot.
func (s *Store) Stats(ctx context.Context, did syntax.DID) (RepoStats, error) {
	var st RepoStats
	err := s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			h, err := readHead(ctx, a.db, tx)
			if err != nil {
				return err
			}
			st.Commit, st.Rev = h.commit, h.rev
			return tx.QueryRowContext(ctx, `SELECT
				(SELECT count(*) FROM blocks WHERE cid NOT IN (SELECT cid FROM garbage)) +
					(SELECT count(*) FROM fresh WHERE cid NOT IN (SELECT cid FROM garbage)) + (SELECT count(*) FROM root),
				(SELECT count(*) FROM records),
				(SELECT count(DISTINCT blob) FROM blob_refs),
				(SELECT count(*) FROM preferences)`).Scan(&st.Blocks, &st.Records, &st.Blobs, &st.Preferences)
		})
	})
	return st, err
}
