package blobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// gcBatch is how many expired uploads one GC query lists: small enough that the sweep
// never holds the index's writer for long.
const gcBatch = 256

// GCReport is what one GC sweep did.
type GCReport struct {
	// Expired uploads deleted (no record referenced them within the grace period) and
	// their bytes.
	Expired      int   `json:"expired"`
	ExpiredBytes int64 `json:"expiredBytes"`
	// Adopted uploads were past the grace period but referenced by a record (their
	// Committed call was lost in a crash) and became permanent instead.
	Adopted int `json:"adopted"`
	// StaleTemp are files of uploads and cache writes that a crash interrupted.
	StaleTemp int `json:"staleTemp"`
	// RemoteExpired remote blobs older than RemoteCacheTTL were removed, with their bytes.
	RemoteExpired      int   `json:"remoteExpired"`
	RemoteExpiredBytes int64 `json:"remoteExpiredBytes"`
}

// Freed returns the bytes the sweep freed on disk.
func (r GCReport) Freed() int64 { return r.ExpiredBytes + r.RemoteExpiredBytes }

// GC sweeps once: uploads past the grace period that no record references are deleted
// (asking RefChecker first, when set), interrupted temporary files are removed, and
// expired remote blobs leave the cache. The node runs it through Run, and
// `aerie blobs gc` calls it directly.
func (s *Store) GC(ctx context.Context) (GCReport, error) {
	var rep GCReport
	now := s.now()
	cutoff := now.Add(-s.cfg.GracePeriod).UnixMilli()
	after := struct {
		created  int64
		did, cid string
	}{created: -1}
	for {
		type candidate struct {
			did     syntax.DID
			cid     string
			created int64
		}
		var batch []candidate
		err := s.db.Read(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, `SELECT did, cid, created_at FROM blobs
				WHERE rev IS NULL AND created_at < ? AND (created_at, did, cid) > (?, ?, ?)
				ORDER BY created_at, did, cid LIMIT ?`, cutoff, after.created, after.did, after.cid, gcBatch)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var c candidate
				if err := rows.Scan(&c.did, &c.cid, &c.created); err != nil {
					return err
				}
				batch = append(batch, c)
			}
			return rows.Err()
		})
		if err != nil {
			return rep, fmt.Errorf("list expired blobs: %w", err)
		}
		for _, c := range batch {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			adopted, freed, err := s.expire(ctx, c.did, c.cid, cutoff)
			if err != nil {
				return rep, err
			}
			switch {
			case adopted:
				rep.Adopted++
			case freed >= 0:
				rep.Expired++
				rep.ExpiredBytes += freed
			}
		}
		if len(batch) < gcBatch {
			break
		}
		last := batch[len(batch)-1]
		after.created, after.did, after.cid = last.created, string(last.did), last.cid
	}
	for _, root := range []*os.Root{s.root, s.cache} {
		n, err := removeStale(root, now.Add(-s.cfg.GracePeriod))
		rep.StaleTemp += n
		if err != nil {
			return rep, err
		}
	}
	expiry := now.Add(-s.cfg.RemoteCacheTTL)
	rep.RemoteExpired, rep.RemoteExpiredBytes = s.remote.remove(func(e *lruEntry) bool { return e.added.Before(expiry) })
	return rep, nil
}

// expire deletes one expired upload unless a record references it, in which case it
// becomes permanent. freed is -1 when the row had changed since it was listed.
func (s *Store) expire(ctx context.Context, did syntax.DID, c string, cutoff int64) (adopted bool, freed int64, err error) {
	if s.refs != nil {
		parsed, err := cid.Decode(c)
		if err != nil {
			return false, 0, fmt.Errorf("stored cid %q: %w", c, err)
		}
		ok, err := s.refs.BlobReferenced(ctx, did, parsed)
		if err != nil {
			return false, 0, fmt.Errorf("check references to %s of %s: %w", c, did, err)
		}
		if ok {
			err := s.db.Write(ctx, func(tx *sql.Tx) error {
				// The rev that first referenced it is unknown; "" sorts before every TID,
				// so listBlobs lists it in full listings only.
				_, err := tx.ExecContext(ctx, `UPDATE blobs SET rev = '' WHERE did = ? AND cid = ? AND rev IS NULL`, did, c)
				return err
			})
			if err != nil {
				return false, 0, fmt.Errorf("adopt blob %s of %s: %w", c, did, err)
			}
			return true, 0, nil
		}
	}
	mu := s.lock(did, c)
	mu.Lock()
	var size int64 = -1
	err = s.db.Write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `DELETE FROM blobs WHERE did = ? AND cid = ? AND rev IS NULL AND created_at < ? RETURNING size`, did, c, cutoff).Scan(&size)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // renewed by an upload or a Check since it was listed
		}
		return err
	})
	if err == nil && size >= 0 {
		if rerr := s.root.Remove(blobPath(did, c)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	mu.Unlock()
	if err != nil {
		return false, 0, fmt.Errorf("expire blob %s of %s: %w", c, did, err)
	}
	return false, size, nil
}

// removeStale removes the temporary files in root older than before: uploads and cache
// writes that a crash interrupted. Ongoing ones are seconds old.
func removeStale(root *os.Root, before time.Time) (int, error) {
	entries, err := fs.ReadDir(root.FS(), tmpDirName)
	if err != nil {
		return 0, fmt.Errorf("list temporary files: %w", err)
	}
	n := 0
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(before) {
			continue
		}
		if err := root.Remove(tmpDirName + "/" + e.Name()); err == nil {
			n++
		}
	}
	return n, nil
}

// Run sweeps every GCInterval until ctx ends, then returns nil. Sweep failures are
// logged and retried at the next tick: garbage waiting longer harms nothing.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rep, err := s.GC(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.WarnContext(ctx, "blob gc failed", "err", err)
			continue
		}
		if rep != (GCReport{}) {
			s.log.InfoContext(ctx, "blob gc", "expired", rep.Expired, "adopted", rep.Adopted,
				"stale_temp", rep.StaleTemp, "remote_expired", rep.RemoteExpired, "freed_bytes", rep.Freed())
		}
	}
}
