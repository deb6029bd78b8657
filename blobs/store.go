package blobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"runtime"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"golang.org/x/sync/singleflight"

	"github.com/aerie-social/aerie/node/identity"
	"github.com/aerie-social/aerie/node/sqlite"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Names inside the blob directory. Account folders are DIDs, which always start with
// "did:", so these can never collide with one.
const (
	dbFileName = "blobs.sqlite"
	tmpDirName = ".tmp"
)

// Names inside the cache directory.
const (
	imgCacheDir    = "img"
	remoteCacheDir = "remote"
)

// lockStripes is how many mutexes serialize writers of (did, cid) pairs: enough that
// unrelated uploads rarely share one, few enough to be a fixed array.
const lockStripes = 64

// copyBufferSize is the buffer an upload streams through: large enough that hashing and
// the write syscall, not the loop, dominate.
const copyBufferSize = 256 << 10

// AccountState is what the node says about an account when serving its blobs.
type AccountState int

// Account states.
const (
	// AccountNotHosted: the DID is not an account on this node (its blobs, if any, are
	// fetched from its own PDS for images).
	AccountNotHosted AccountState = iota
	// AccountActive: a local account whose blobs are served.
	AccountActive
	// AccountDeactivated: a local account deactivated by its owner; nothing is served.
	AccountDeactivated
	// AccountTakendown: a local account taken down by the operator; nothing is served.
	AccountTakendown
)

// AccountStatus tells the Store whether a DID is a local account and whether its blobs
// may be served. The node implements it from its accounts table.
type AccountStatus interface {
	BlobAccountState(ctx context.Context, did syntax.DID) (AccountState, error)
}

// RefChecker reports whether any committed record of did references blob. The node
// implements it with (*repo.Store).BlobReferenced; GC consults it before deleting an
// upload, so a blob whose Committed call was lost in a crash is kept.
type RefChecker interface {
	BlobReferenced(ctx context.Context, did syntax.DID, blob cid.Cid) (bool, error)
}

// PDSResolver returns the base URL (https://host) of the PDS that hosts did, from its
// DID document's #atproto_pds service. The node implements it over node/identity.
type PDSResolver interface {
	ResolvePDS(ctx context.Context, did syntax.DID) (string, error)
}

// Deps are what the node gives a Store besides configuration.
type Deps struct {
	// Accounts is required: it decides what getBlob and the image server may serve.
	Accounts AccountStatus
	// Refs, when set, is asked before GC deletes an expired upload.
	Refs RefChecker
	// Resolver, when set, lets the image server fetch remote accounts' blobs.
	Resolver PDSResolver
	// HTTPClient fetches remote blobs. Nil means identity.NewHTTPClient with
	// Config.AllowPrivateNetwork and Config.RemoteTimeout, which refuses private addresses.
	HTTPClient *http.Client
	// Now is the clock for grace periods and cache expiry (nil: time.Now).
	Now func() time.Time
}

// Ref is a stored blob as a record references it (atproto-reference §1.4).
type Ref struct {
	CID      cid.Cid
	MimeType string
	Size     int64
}

// MarshalJSON writes the lexicon blob object:
// {"$type":"blob","ref":{"$link":cid},"mimeType":…,"size":…}.
func (r Ref) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Type     string            `json:"$type"`
		Ref      map[string]string `json:"ref"`
		MimeType string            `json:"mimeType"`
		Size     int64             `json:"size"`
	}{"blob", map[string]string{"$link": r.CID.String()}, r.MimeType, r.Size})
}

// Usage is how much blob storage one account uses, temporary uploads included.
type Usage struct {
	DID   syntax.DID `json:"did"`
	Bytes int64      `json:"bytes"`
	Count int64      `json:"count"`
}

// Store is the blob store and image server. Open one per node.
type Store struct {
	cfg      Config
	log      *slog.Logger
	db       *sqlite.DB
	root     *os.Root // the blob directory
	cache    *os.Root // the cache directory
	accounts AccountStatus
	refs     RefChecker
	resolver PDSResolver
	client   *http.Client
	now      func() time.Time

	seed  maphash.Seed
	locks [lockStripes]sync.Mutex

	variants *diskLRU
	remote   *diskLRU
	flight   singleflight.Group
	// decoders bounds concurrent image decodes, and with them decode memory.
	decoders chan struct{}
}

// Open opens the blob store in dir (created if missing; <data_dir>/blobs) with its
// caches in cacheDir (<data_dir>/cache), migrating blobs.sqlite. It starts no goroutine;
// Run does the periodic GC. Close releases it.
func Open(ctx context.Context, dir, cacheDir string, cfg Config, deps Deps, log *slog.Logger) (s *Store, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Accounts == nil {
		return nil, errors.New("open blob store: Deps.Accounts is required")
	}
	for _, d := range []string{dir, cacheDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("open blob store: %w", err)
		}
	}
	s = &Store{
		cfg:      cfg,
		log:      log.With("component", "blobs"),
		accounts: deps.Accounts,
		refs:     deps.Refs,
		resolver: deps.Resolver,
		client:   deps.HTTPClient,
		now:      deps.Now,
		seed:     maphash.MakeSeed(),
		decoders: make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.client == nil {
		s.client = identity.NewHTTPClient(cfg.AllowPrivateNetwork, cfg.RemoteTimeout)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if s.root, err = os.OpenRoot(dir); err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	if s.cache, err = os.OpenRoot(cacheDir); err != nil {
		return nil, fmt.Errorf("open blob cache: %w", err)
	}
	for _, d := range []string{tmpDirName} {
		if err := s.root.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("open blob store: %w", err)
		}
	}
	for _, d := range []string{imgCacheDir, remoteCacheDir, tmpDirName} {
		if err := s.cache.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("open blob cache: %w", err)
		}
	}
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	s.db, err = sqlite.Open(ctx, path.Join(dir, dbFileName), sqlite.Options{Synchronous: cfg.Synchronous, Migrations: migrations})
	if err != nil {
		return nil, fmt.Errorf("open blob index: %w", err)
	}
	if s.variants, err = openDiskLRU(s.cache, imgCacheDir, cfg.ImageCacheSize); err != nil {
		return nil, fmt.Errorf("open image cache: %w", err)
	}
	if s.remote, err = openDiskLRU(s.cache, remoteCacheDir, cfg.RemoteCacheSize); err != nil {
		return nil, fmt.Errorf("open remote blob cache: %w", err)
	}
	return s, nil
}

// Close closes the index and the directories. Requests must have finished.
func (s *Store) Close() error {
	var errs []error
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	if s.cache != nil {
		errs = append(errs, s.cache.Close())
	}
	if s.root != nil {
		errs = append(errs, s.root.Close())
	}
	return errors.Join(errs...)
}

// Config returns the configuration the store runs with (describeServer advertises
// MaxSize).
func (s *Store) Config() Config { return s.cfg }

// lock returns the mutex that serializes writers of did's blob c.
func (s *Store) lock(did syntax.DID, c string) *sync.Mutex {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(string(did))
	h.WriteString(c)
	return &s.locks[h.Sum64()%lockStripes]
}

// blobPath is where did's blob c lives inside the blob directory. DIDs cannot contain
// "/" and CID strings are base32, so neither can escape its folder (os.Root makes sure).
func blobPath(did syntax.DID, c string) string { return string(did) + "/" + c }

// Upload streams body into the store as a temporary blob of did and returns its ref.
// declared is the request's Content-Type. The content is sniffed: a recognised type wins
// over the declared one, a declared image/video/audio type whose content sniffs as active
// content (HTML, XML, script) is refused with ErrInvalidMimeType, and an unrecognised body
// keeps the declared type. Errors: ErrTooLarge, ErrQuotaExceeded, ErrInvalidMimeType.
// Uploading bytes the account already has returns the existing ref and restarts the grace
// period of a temporary blob.
func (s *Store) Upload(ctx context.Context, did syntax.DID, declared string, body io.Reader) (Ref, error) {
	if s.cfg.Quota > 0 {
		u, err := s.Usage(ctx, did)
		if err != nil {
			return Ref{}, err
		}
		if u.Bytes >= s.cfg.Quota {
			return Ref{}, fmt.Errorf("%w: %d of %d bytes used", ErrQuotaExceeded, u.Bytes, s.cfg.Quota)
		}
	}
	tmp, tmpName, err := s.createTemp(s.root)
	if err != nil {
		return Ref{}, fmt.Errorf("upload blob: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			s.root.Remove(tmpName)
		}
	}()

	var head [sniffLen]byte
	n, err := io.ReadFull(body, head[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return Ref{}, fmt.Errorf("upload blob: read body: %w", err)
	}
	mime, err := decideMIME(declared, head[:n])
	if err != nil {
		return Ref{}, err
	}
	h := sha256.New()
	size, err := s.writeHashed(tmp, h, head[:n], body, s.cfg.MaxSize)
	if err != nil {
		return Ref{}, fmt.Errorf("upload blob: %w", err)
	}
	if s.cfg.Quota > 0 {
		u, err := s.Usage(ctx, did)
		if err != nil {
			return Ref{}, err
		}
		if u.Bytes+size > s.cfg.Quota {
			return Ref{}, fmt.Errorf("%w: %d bytes used, %d more would pass the quota of %d", ErrQuotaExceeded, u.Bytes, size, s.cfg.Quota)
		}
	}
	if err := tmp.Sync(); err != nil {
		return Ref{}, fmt.Errorf("upload blob: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Ref{}, fmt.Errorf("upload blob: close: %w", err)
	}
	c := rawCID(h)

	mu := s.lock(did, c.String())
	mu.Lock()
	defer mu.Unlock()
	// The row first: a crash before the rename leaves a temporary row without a file,
	// which GC removes; the other order could leave a file no row accounts for.
	var ref Ref
	err = s.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO blobs (did, cid, mime, size, created_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (did, cid) DO UPDATE SET created_at = excluded.created_at WHERE rev IS NULL`,
			did, c.String(), mime, size, s.now().UnixMilli())
		if err != nil {
			return err
		}
		ref.CID = c
		return tx.QueryRowContext(ctx, `SELECT mime, size FROM blobs WHERE did = ? AND cid = ?`, did, c.String()).Scan(&ref.MimeType, &ref.Size)
	})
	if err != nil {
		return Ref{}, fmt.Errorf("upload blob: index: %w", err)
	}
	if err := s.root.MkdirAll(string(did), 0o750); err != nil {
		return Ref{}, fmt.Errorf("upload blob: %w", err)
	}
	if err := s.root.Rename(tmpName, blobPath(did, c.String())); err != nil {
		return Ref{}, fmt.Errorf("upload blob: %w", err)
	}
	committed = true
	if err := syncDir(s.root, string(did)); err != nil {
		return Ref{}, fmt.Errorf("upload blob: %w", err)
	}
	return ref, nil
}

// writeHashed writes head and then the rest of body to f and h, failing with ErrTooLarge
// past limit bytes. It returns the byte count.
func (s *Store) writeHashed(f *os.File, h hash.Hash, head []byte, body io.Reader, limit int64) (int64, error) {
	w := io.MultiWriter(f, h)
	if _, err := w.Write(head); err != nil {
		return 0, err
	}
	buf := make([]byte, copyBufferSize)
	n, err := io.CopyBuffer(w, io.LimitReader(body, limit-int64(len(head))+1), buf)
	if err != nil {
		return 0, fmt.Errorf("read body: %w", err)
	}
	total := int64(len(head)) + n
	if total > limit {
		return 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	return total, nil
}

// createTemp creates a new file in root's temporary folder and returns it with its name
// inside root (the file's Name() is the full path); the caller renames or removes it.
func (s *Store) createTemp(root *os.Root) (*os.File, string, error) {
	var b [12]byte
	rand.Read(b[:])
	name := tmpDirName + "/" + hex.EncodeToString(b[:])
	f, err := root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	return f, name, err
}

// syncDir fsyncs a folder so that a rename into it survives power loss.
func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// rawCID returns the CIDv1 (raw codec, sha2-256) of the bytes hashed into h, which must
// be a sha256 hash: the multihash is the code 0x12, the length 0x20 and the digest.
func rawCID(h hash.Hash) cid.Cid {
	mh := append([]byte{multihash.SHA2_256, sha256.Size}, h.Sum(nil)...)
	return cid.NewCidV1(cid.Raw, multihash.Multihash(mh))
}

// Check reports whether did has blob c with the given MIME type and size, as a record
// about to be committed claims; the node calls it while validating a write so a record
// naming a missing blob is refused before the commit. An empty mimeType or a negative
// size (legacy refs have none) skips that comparison. A temporary blob's grace period is
// restarted so that GC cannot remove it between the check and the commit.
// Errors: ErrBlobNotFound, ErrInvalidMimeType, ErrInvalidSize.
func (s *Store) Check(ctx context.Context, did syntax.DID, c cid.Cid, mimeType string, size int64) error {
	mu := s.lock(did, c.String())
	mu.Lock()
	defer mu.Unlock()
	var (
		gotMime string
		gotSize int64
		rev     sql.NullString
	)
	err := s.db.Read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT mime, size, rev FROM blobs WHERE did = ? AND cid = ?`, did, c.String()).Scan(&gotMime, &gotSize, &rev)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrBlobNotFound, c)
	}
	if err != nil {
		return fmt.Errorf("check blob %s: %w", c, err)
	}
	if _, err := s.root.Stat(blobPath(did, c.String())); err != nil {
		// Only a crash between the index write and the rename leaves this; the row goes
		// at the next GC.
		return fmt.Errorf("%w: %s", ErrBlobNotFound, c)
	}
	if mimeType != "" && mimeType != gotMime {
		return fmt.Errorf("%w: record says %q, blob is %q", ErrInvalidMimeType, mimeType, gotMime)
	}
	if size >= 0 && size != gotSize {
		return fmt.Errorf("%w: record says %d, blob is %d", ErrInvalidSize, size, gotSize)
	}
	if rev.Valid {
		return nil
	}
	return s.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE blobs SET created_at = ? WHERE did = ? AND cid = ? AND rev IS NULL`, s.now().UnixMilli(), did, c.String())
		return err
	})
}

// Committed applies one commit's blob changes: added blobs become permanent (a blob the
// store does not have, as after importRepo, is skipped: listMissingBlobs reports it),
// removed blobs — those no record references any more — are deleted with their cached
// variants. The node calls it after each commit, in commit order, with the commit's
// repo.CommitEvent DID, Rev, BlobsAdded and BlobsRemoved.
func (s *Store) Committed(ctx context.Context, did syntax.DID, rev syntax.TID, added, removed []cid.Cid) error {
	if len(added) > 0 {
		err := s.db.Write(ctx, func(tx *sql.Tx) error {
			for _, c := range added {
				if _, err := tx.ExecContext(ctx, `UPDATE blobs SET rev = ? WHERE did = ? AND cid = ? AND rev IS NULL`, rev, did, c.String()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("mark blobs permanent for %s: %w", did, err)
		}
	}
	var errs []error
	for _, c := range removed {
		if _, err := s.delete(ctx, did, c.String(), 0); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// delete removes did's blob c and returns the bytes freed. When expiredBefore (unix
// milliseconds) is not 0 it removes the blob only if it is still temporary and its grace
// period started before then: GC's condition, checked again under the lock because a
// Check or an upload may have renewed it since GC listed it.
func (s *Store) delete(ctx context.Context, did syntax.DID, c string, expiredBefore int64) (int64, error) {
	mu := s.lock(did, c)
	mu.Lock()
	defer mu.Unlock()
	var size int64
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		q := `DELETE FROM blobs WHERE did = ? AND cid = ? RETURNING size`
		args := []any{did, c}
		if expiredBefore != 0 {
			q = `DELETE FROM blobs WHERE did = ? AND cid = ? AND rev IS NULL AND created_at < ? RETURNING size`
			args = append(args, expiredBefore)
		}
		return tx.QueryRowContext(ctx, q, args...).Scan(&size)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("delete blob %s of %s: %w", c, did, err)
	}
	if err := s.root.Remove(blobPath(did, c)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("delete blob %s of %s: %w", c, did, err)
	}
	s.dropVariants(did, c)
	return size, nil
}

// DeleteAccount deletes every blob of did, with its cached variants, and returns the
// bytes freed. The node calls it when the account is deleted.
func (s *Store) DeleteAccount(ctx context.Context, did syntax.DID) (int64, error) {
	var freed int64
	err := s.db.Write(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(size), 0) FROM blobs WHERE did = ?`, did).Scan(&freed); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM blobs WHERE did = ?`, did)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete blobs of %s: %w", did, err)
	}
	if err := s.root.RemoveAll(string(did)); err != nil {
		return 0, fmt.Errorf("delete blobs of %s: %w", did, err)
	}
	s.dropVariants(did, "")
	return freed, nil
}

// Usage returns did's blob usage, temporary uploads included.
func (s *Store) Usage(ctx context.Context, did syntax.DID) (Usage, error) {
	u := Usage{DID: did}
	err := s.db.Read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT coalesce(sum(size), 0), count(*) FROM blobs WHERE did = ?`, did).Scan(&u.Bytes, &u.Count)
	})
	if err != nil {
		return Usage{}, fmt.Errorf("blob usage of %s: %w", did, err)
	}
	return u, nil
}

// ListUsage returns up to limit accounts' usage in DID order, starting after cursor (a
// DID; empty for the first page), and the cursor of the next page ("" at the end). It
// backs `aerie account usage` and the admin listing.
func (s *Store) ListUsage(ctx context.Context, cursor string, limit int) ([]Usage, string, error) {
	limit = clampLimit(limit)
	var out []Usage
	err := s.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT did, sum(size), count(*) FROM blobs WHERE did > ? GROUP BY did ORDER BY did LIMIT ?`, cursor, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u Usage
			if err := rows.Scan(&u.DID, &u.Bytes, &u.Count); err != nil {
				return err
			}
			out = append(out, u)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, "", fmt.Errorf("list blob usage: %w", err)
	}
	next := ""
	if len(out) == limit {
		next = string(out[len(out)-1].DID)
	}
	return out, next, nil
}

// ListBlobs returns up to limit of did's committed blobs in CID order after cursor (a
// CID string; empty for the first page), only those first referenced after rev since
// when it is not empty, and the cursor of the next page ("" at the end). Temporary
// uploads are not listed (com.atproto.sync.listBlobs).
func (s *Store) ListBlobs(ctx context.Context, did syntax.DID, since syntax.TID, cursor string, limit int) ([]cid.Cid, string, error) {
	limit = clampLimit(limit)
	var out []cid.Cid
	err := s.db.Read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT cid FROM blobs WHERE did = ? AND rev IS NOT NULL AND rev > ? AND cid > ? ORDER BY cid LIMIT ?`,
			did, string(since), cursor, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var raw string
			if err := rows.Scan(&raw); err != nil {
				return err
			}
			c, err := cid.Decode(raw)
			if err != nil {
				return fmt.Errorf("stored cid %q: %w", raw, err)
			}
			out = append(out, c)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, "", fmt.Errorf("list blobs of %s: %w", did, err)
	}
	next := ""
	if len(out) == limit {
		next = out[len(out)-1].String()
	}
	return out, next, nil
}

// Has reports whether did has blob c, temporary or committed (importRepo's
// listMissingBlobs and the blob count after a migration).
func (s *Store) Has(ctx context.Context, did syntax.DID, c cid.Cid) (bool, error) {
	var one int
	err := s.db.Read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT 1 FROM blobs WHERE did = ? AND cid = ?`, did, c.String()).Scan(&one)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up blob %s of %s: %w", c, did, err)
	}
	return true, nil
}

// Listing limits (com.atproto.sync.listBlobs: 1–1000, default 500).
const (
	defaultListLimit = 500
	maxListLimit     = 1000
)

func clampLimit(limit int) int {
	switch {
	case limit <= 0:
		return defaultListLimit
	case limit > maxListLimit:
		return maxListLimit
	}
	return limit
}

// blobInfo is a committed blob ready to serve.
type blobInfo struct {
	mime string
	size int64
}

// openCommitted opens did's committed blob c for reading. The caller closes the file.
// Errors: ErrBlobNotFound.
func (s *Store) openCommitted(ctx context.Context, did syntax.DID, c string) (*os.File, blobInfo, error) {
	var info blobInfo
	err := s.db.QueryRow(ctx, `SELECT mime, size FROM blobs WHERE did = ? AND cid = ? AND rev IS NOT NULL`,
		[]any{did, c}, &info.mime, &info.size)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, info, fmt.Errorf("%w: %s", ErrBlobNotFound, c)
	}
	if err != nil {
		return nil, info, fmt.Errorf("look up blob %s of %s: %w", c, did, err)
	}
	f, err := s.root.Open(blobPath(did, c))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, info, fmt.Errorf("%w: %s (file missing)", ErrBlobNotFound, c)
	}
	if err != nil {
		return nil, info, fmt.Errorf("open blob %s of %s: %w", c, did, err)
	}
	return f, info, nil
}

// servable returns nil when did is a local account whose blobs may be served.
// Errors: ErrAccountNotFound, ErrAccountDeactivated, ErrAccountTakendown.
func (s *Store) servable(ctx context.Context, did syntax.DID) error {
	st, err := s.accounts.BlobAccountState(ctx, did)
	if err != nil {
		return fmt.Errorf("account state of %s: %w", did, err)
	}
	switch st {
	case AccountActive:
		return nil
	case AccountDeactivated:
		return fmt.Errorf("%w: %s", ErrAccountDeactivated, did)
	case AccountTakendown:
		return fmt.Errorf("%w: %s", ErrAccountTakendown, did)
	}
	return fmt.Errorf("%w: %s", ErrAccountNotFound, did)
}
