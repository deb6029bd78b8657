package appview

import (
	"context"
	"database/sql"
	"fmt"
	"iter"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// RepoRecord is one record of a repo, as Reindex takes it (repo.Store.ListRecords gives
// each field).
type RepoRecord struct {
	Collection syntax.NSID
	RKey       syntax.RecordKey
	CID        cid.Cid
	// CBOR is the record value as stored (DAG-CBOR).
	CBOR []byte
}

// Reindex makes the index hold exactly records from did's repo, which must be the repo's
// complete current contents, and clears the account's reindex mark. Records already
// indexed with the same CID are left alone, so counts and notifications move by exactly
// the difference and a reindex of an up-to-date account changes nothing. It runs in one index
// transaction, so readers see the old or the new state, never a mix; the indexer waits
// meanwhile, so feed it from a local read, not from the network. An error from records
// aborts the reindex and is returned.
func (a *AppView) Reindex(ctx context.Context, did syntax.DID, records iter.Seq2[RepoRecord, error]) error {
	t := newTouched()
	now := a.now()
	err := a.db.Write(ctx, func(tx *sql.Tx) error {
		ix := newIndexTx(ctx, a.db, tx, t, a.known, a.cfg.Hosted, a.log)
		defer ix.close()
		ix.at = now
		d := did.String()
		if err := ix.ensureActor(d); err != nil {
			return err
		}
		keep := map[string]bool{}
		for rec, err := range records {
			if err != nil {
				return err
			}
			uri := "at://" + d + "/" + rec.Collection.String() + "/" + rec.RKey.String()
			keep[uri] = true
			if err := ix.putRecord(d, rec.Collection.String(), rec.RKey.String(), uri, rec.CID.String(), rec.CBOR, false); err != nil {
				return err
			}
		}
		if err := ix.deleteActorRecords(d, keep); err != nil {
			return err
		}
		if err := ix.writeSearch(); err != nil {
			return err
		}
		_, err := ix.exec(`UPDATE actors SET needs_reindex = 0 WHERE did = ?`, d)
		return err
	})
	if err != nil {
		return fmt.Errorf("reindex %s: %w", did, err)
	}
	a.cache.invalidate(t)
	a.known.add(t)
	return nil
}

// NeedsReindex returns up to limit accounts marked by a #sync event (or an outdated
// cursor), for the node to feed to Reindex, in DID order after the DID after ("" for the
// first page): accounts that stay marked (their host is down) do not hide the others.
func (a *AppView) NeedsReindex(ctx context.Context, after syntax.DID, limit int) ([]syntax.DID, error) {
	var out []syntax.DID
	err := a.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT did FROM actors WHERE needs_reindex = 1 AND did > ? ORDER BY did LIMIT ?`, after.String(), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				return err
			}
			out = append(out, syntax.DID(d))
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list accounts to reindex: %w", err)
	}
	return out, nil
}
