package repo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// ListedRecord is one entry of ListRecords.
type ListedRecord struct {
	RKey syntax.RecordKey
	CID  cid.Cid
	// CBOR is the record value as stored (DAG-CBOR).
	CBOR []byte
}

// MaxListLimit caps ListRecords pages (the lexicon's maximum).
const MaxListLimit = 100

// GetRecord returns the CID and DAG-CBOR value of did's record collection/rkey, or
// ErrRecordNotFound (ErrRepoNotFound when did has no repo here).
func (s *Store) GetRecord(ctx context.Context, did syntax.DID, collection syntax.NSID, rkey syntax.RecordKey) (cid.Cid, []byte, error) {
	var c cid.Cid
	var data []byte
	err := s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			var raw []byte
			err := tx.QueryRowContext(ctx,
				"SELECT r.cid, b.data FROM records r JOIN blocks b ON b.cid = r.cid WHERE r.collection = ? AND r.rkey = ?",
				string(collection), string(rkey)).Scan(&raw, &data)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%s/%s: %w", collection, rkey, ErrRecordNotFound)
			}
			if err != nil {
				return fmt.Errorf("get record %s/%s: %w", collection, rkey, err)
			}
			c, err = cid.Cast(raw)
			return err
		})
	})
	if err != nil {
		return cid.Undef, nil, err
	}
	return c, data, nil
}

// ListRecords returns up to limit records of one collection in rkey order, descending
// (newest TIDs first) unless reverse, starting after cursor (an rkey; empty for the first
// page). The returned cursor is empty when there is no next page.
func (s *Store) ListRecords(ctx context.Context, did syntax.DID, collection syntax.NSID, cursor string, limit int, reverse bool) ([]ListedRecord, string, error) {
	if limit <= 0 || limit > MaxListLimit {
		limit = MaxListLimit
	}
	q := "SELECT r.rkey, r.cid, b.data FROM records r JOIN blocks b ON b.cid = r.cid WHERE r.collection = ? AND r.rkey < ? ORDER BY r.rkey DESC LIMIT ?"
	after := any(cursor)
	if reverse {
		q = "SELECT r.rkey, r.cid, b.data FROM records r JOIN blocks b ON b.cid = r.cid WHERE r.collection = ? AND r.rkey > ? ORDER BY r.rkey ASC LIMIT ?"
	} else if cursor == "" {
		// Every rkey sorts below U+FFFF; record keys are ASCII.
		after = "\uffff"
	}
	var out []ListedRecord
	err := s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, q, string(collection), after, limit)
			if err != nil {
				return fmt.Errorf("list %s: %w", collection, err)
			}
			defer rows.Close()
			for rows.Next() {
				var rkey string
				var raw, data []byte
				if err := rows.Scan(&rkey, &raw, &data); err != nil {
					return fmt.Errorf("list %s: %w", collection, err)
				}
				c, err := cid.Cast(raw)
				if err != nil {
					return fmt.Errorf("list %s: record %s: %w", collection, rkey, err)
				}
				out = append(out, ListedRecord{RKey: syntax.RecordKey(rkey), CID: c, CBOR: data})
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) == limit {
		next = string(out[len(out)-1].RKey)
	}
	return out, next, nil
}

// Describe returns the collections did has records in, sorted.
func (s *Store) Describe(ctx context.Context, did syntax.DID) ([]syntax.NSID, error) {
	var out []syntax.NSID
	err := s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			// One index seek per collection instead of a scan of every record.
			last := ""
			for {
				var c string
				err := tx.QueryRowContext(ctx, "SELECT collection FROM records WHERE collection > ? ORDER BY collection LIMIT 1", last).Scan(&c)
				if errors.Is(err, sql.ErrNoRows) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("list collections: %w", err)
				}
				out = append(out, syntax.NSID(c))
				last = c
			}
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Head returns did's current commit CID, rev and tree root.
func (s *Store) Head(ctx context.Context, did syntax.DID) (commit cid.Cid, rev syntax.TID, data cid.Cid, err error) {
	var h head
	err = s.withActor(ctx, did, func(a *actor) error {
		var err error
		h, err = a.latestHead(ctx)
		return err
	})
	if err != nil {
		return cid.Undef, "", cid.Undef, err
	}
	return h.commit, h.rev, h.data, nil
}

// ExportCAR writes did's repository to w as a CAR whose root is the head commit. With an
// empty since it is the whole repo in the preferred streaming order (atproto-reference
// §5.5): commit, then the tree pre-order with each record right after its entry's node.
// With since (a rev), it is the commit plus the blocks written by later commits, which is
// what a consumer at since lacks.
func (s *Store) ExportCAR(ctx context.Context, did syntax.DID, since syntax.TID, w io.Writer) error {
	return s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			h, err := readHead(ctx, a.db, tx)
			if err != nil {
				return err
			}
			br := &txBlocks{db: a.db, tx: tx}
			commit, err := br.ReadBlock(ctx, h.commit)
			if err != nil {
				return err
			}
			if err := WriteCARHeader(w, h.commit); err != nil {
				return err
			}
			if err := WriteCARBlock(w, h.commit, commit); err != nil {
				return err
			}
			if since != "" {
				return exportSince(ctx, tx, h.commit, since, w)
			}
			return exportTree(ctx, br, a.store.nodes, h.data, w)
		})
	})
}

// exportSince writes every block newer than since except the commit, already written.
func exportSince(ctx context.Context, tx *sql.Tx, commit cid.Cid, since syntax.TID, w io.Writer) error {
	after := revInt(since)
	// A scan: exports since a rev are rare, and an index on rev would cost every commit a
	// page of WAL. Replaced nodes not yet deleted (migration 0003) are no longer in the repo.
	// Nodes written since the last collection are in fresh (migration 0004).
	rows, err := tx.QueryContext(ctx, "SELECT cid, data FROM blocks WHERE rev > ?1 AND cid NOT IN (SELECT cid FROM garbage) UNION ALL SELECT cid, data FROM fresh WHERE rev > ?1 AND cid NOT IN (SELECT cid FROM garbage)", after)
	if err != nil {
		return fmt.Errorf("export since %s: %w", since, err)
	}
	defer rows.Close()
	for rows.Next() {
		var raw, data []byte
		if err := rows.Scan(&raw, &data); err != nil {
			return fmt.Errorf("export since %s: %w", since, err)
		}
		c, err := cid.Cast(raw)
		if err != nil {
			return fmt.Errorf("export since %s: %w", since, err)
		}
		if c == commit {
			continue
		}
		if err := WriteCARBlock(w, c, data); err != nil {
			return err
		}
	}
	return rows.Err()
}

// RecordProof writes a CAR proving collection/rkey's presence or absence in did's repo:
// the head commit, the MST nodes on the key's path and, when present, the record value.
func (s *Store) RecordProof(ctx context.Context, did syntax.DID, collection syntax.NSID, rkey syntax.RecordKey, w io.Writer) error {
	key := string(collection) + "/" + string(rkey)
	return s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			h, err := readHead(ctx, a.db, tx)
			if err != nil {
				return err
			}
			br := &txBlocks{db: a.db, tx: tx}
			commit, err := br.ReadBlock(ctx, h.commit)
			if err != nil {
				return err
			}
			tree := NewTree(br, a.store.nodes, h.data)
			proof, err := tree.ProofBlocks(ctx, key)
			if err != nil {
				return fmt.Errorf("prove %s: %w", key, err)
			}
			if err := WriteCARHeader(w, h.commit); err != nil {
				return err
			}
			if err := WriteCARBlock(w, h.commit, commit); err != nil {
				return err
			}
			for _, b := range proof {
				if err := WriteCARBlock(w, b.CID, b.Data); err != nil {
					return err
				}
			}
			val, err := tree.Get(ctx, key)
			if errors.Is(err, ErrRecordNotFound) || (err == nil && !val.Defined()) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("prove %s: %w", key, err)
			}
			data, err := br.ReadBlock(ctx, val)
			if err != nil {
				return err
			}
			return WriteCARBlock(w, val, data)
		})
	})
}

// GetBlocks writes the blocks named by cids to w as a CAR with no roots (as
// com.atproto.sync.getBlocks answers). A CID not in the repo fails the call with
// ErrBlockNotFound before anything is written.
func (s *Store) GetBlocks(ctx context.Context, did syntax.DID, cids []cid.Cid, w io.Writer) error {
	return s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			br := &txBlocks{db: a.db, tx: tx}
			blocks := make([]Block, 0, len(cids))
			for _, c := range cids {
				data, err := br.ReadBlock(ctx, c)
				if err != nil {
					return err
				}
				// A node replaced but not yet deleted (migration 0003) is no longer in
				// the repo; the scan is of a short table.
				var listed bool
				err = tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM garbage WHERE cid = ?)", c.Bytes()).Scan(&listed)
				if err != nil {
					return fmt.Errorf("read block %s: %w", c, err)
				}
				if listed {
					return fmt.Errorf("read block %s: %w", c, ErrBlockNotFound)
				}
				blocks = append(blocks, Block{CID: c, Data: data})
			}
			if err := WriteCARHeader(w); err != nil {
				return err
			}
			for _, b := range blocks {
				if err := WriteCARBlock(w, b.CID, b.Data); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// Preferences returns did's stored app.bsky preferences JSON, or nil when none were set.
func (s *Store) Preferences(ctx context.Context, did syntax.DID) ([]byte, error) {
	var out []byte
	err := s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			err := tx.QueryRowContext(ctx, "SELECT json FROM preferences WHERE id = 1").Scan(&out)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read preferences: %w", err)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PutPreferences replaces did's preferences with prefs (JSON; the caller validates it).
func (s *Store) PutPreferences(ctx context.Context, did syntax.DID, prefs []byte) error {
	return s.withActor(ctx, did, func(a *actor) error {
		err := a.db.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx,
				"INSERT INTO preferences (id, json) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET json = excluded.json", prefs)
			return err
		})
		if err != nil {
			return fmt.Errorf("write preferences of %s: %w", did, err)
		}
		return nil
	})
}

// BlobRef is one record's reference to a blob.
type BlobRef struct {
	Blob cid.Cid
	// Record is the path <collection>/<rkey> of the referencing record.
	Record string
}

// ListBlobRefs returns up to limit blob references of did's records with a blob CID
// greater than after (cid.Undef for the first page), ordered by blob CID bytes.
func (s *Store) ListBlobRefs(ctx context.Context, did syntax.DID, after cid.Cid, limit int) ([]BlobRef, error) {
	if limit <= 0 {
		limit = 500
	}
	var from []byte
	if after.Defined() {
		from = after.Bytes()
	}
	var out []BlobRef
	err := s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx,
				"SELECT blob, collection, rkey FROM blob_refs WHERE blob > ? ORDER BY blob, collection, rkey LIMIT ?", from, limit)
			if err != nil {
				return fmt.Errorf("list blob refs: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				var raw []byte
				var coll, rkey string
				if err := rows.Scan(&raw, &coll, &rkey); err != nil {
					return fmt.Errorf("list blob refs: %w", err)
				}
				c, err := cid.Cast(raw)
				if err != nil {
					return fmt.Errorf("list blob refs: %w", err)
				}
				out = append(out, BlobRef{Blob: c, Record: coll + "/" + rkey})
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// BlobReferenced reports whether any of did's records references blob.
func (s *Store) BlobReferenced(ctx context.Context, did syntax.DID, blob cid.Cid) (bool, error) {
	var ok bool
	err := s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			q := func(query string, args []any, dest ...any) error {
				return tx.QueryRowContext(ctx, query, args...).Scan(dest...)
			}
			var err error
			ok, err = blobReferenced(q, blob)
			return err
		})
	})
	return ok, err
}

// Backlinks returns the rkeys of did's records in collection that point at subject (an
// AT-URI or a DID): for example whether the account already likes or follows it.
func (s *Store) Backlinks(ctx context.Context, did syntax.DID, collection syntax.NSID, subject string) ([]syntax.RecordKey, error) {
	var out []syntax.RecordKey
	err := s.withActor(ctx, did, func(a *actor) error {
		return a.read(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx,
				"SELECT rkey FROM backlinks WHERE subject = ? AND collection = ? ORDER BY rkey", subject, string(collection))
			if err != nil {
				return fmt.Errorf("list backlinks: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				var rkey string
				if err := rows.Scan(&rkey); err != nil {
					return fmt.Errorf("list backlinks: %w", err)
				}
				out = append(out, syntax.RecordKey(rkey))
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// exportTree writes the tree under data in the preferred order: each node, then its
// entries' record values in entry order, then its children, depth-first.
func exportTree(ctx context.Context, br BlockReader, nodes *NodeCache, data cid.Cid, w io.Writer) error {
	tree := NewTree(br, nodes, data)
	return tree.WalkNodes(ctx, func(node Block, values []cid.Cid) error {
		if err := WriteCARBlock(w, node.CID, node.Data); err != nil {
			return err
		}
		for _, v := range values {
			rec, err := br.ReadBlock(ctx, v)
			if err != nil {
				return fmt.Errorf("export record %s: %w", v, err)
			}
			if err := WriteCARBlock(w, v, rec); err != nil {
				return err
			}
		}
		return nil
	})
}
