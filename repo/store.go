package repo

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/sqlite"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Sentinels of the actor store, beside the package's shared ones in errors.go.
var (
	// ErrRepoExists is returned by Create and Import when the DID already has a repo here.
	ErrRepoExists = errors.New("repo: repository already exists")
	// ErrRecordExists is returned by ApplyWrites for a create whose path has a record.
	ErrRecordExists = errors.New("repo: record already exists")
	// ErrInvalidWrite is returned by ApplyWrites for a malformed batch: more than
	// MaxWrites, a path written twice, a bad collection or rkey, a missing record value.
	ErrInvalidWrite = errors.New("repo: invalid write")
	// ErrStoreClosed is returned by every method once Close has begun.
	ErrStoreClosed = errors.New("repo: store closed")
)

// Defaults for StoreConfig.
const (
	// DefaultMaxOpen bounds open actor files: each costs one SQLite connection (reads
	// share the writer's; a second one opens only to checkpoint) and its page cache.
	DefaultMaxOpen = 256
	// DefaultNodeCache is the number of decoded MST nodes shared by all actors: enough
	// for the top levels of a few thousand active repos.
	DefaultNodeCache = 65536
)

// File names inside an actor's folder.
const (
	actorsDir    = "actors"
	repoFileName = "repo.sqlite"
	keyFileName  = "key"
)

// StoreConfig tunes a Store. The zero value means the defaults.
type StoreConfig struct {
	// MaxOpen is how many actor files may be open at once (default DefaultMaxOpen).
	MaxOpen int `toml:"max_open"`
	// NodeCache is how many decoded MST nodes are cached across actors (default
	// DefaultNodeCache).
	NodeCache int `toml:"node_cache"`
	// Synchronous is SQLite's synchronous level for actor files (default NORMAL: a process
	// crash loses nothing, a power loss may lose the last commits).
	// The node sets it from db.synchronous, so it has no key of its own.
	Synchronous string `toml:"-"`
}

// Store owns every local actor's repository under <dir>/actors. Files open lazily on first
// use and stay in a bounded LRU; nothing at startup touches every actor. All methods are
// safe for concurrent use: writes to one DID are serialized, different DIDs write in
// parallel.
type Store struct {
	dir        string   // <dir>/actors, absolute
	root       *os.Root // the same folder; every file operation goes through it
	cfg        StoreConfig
	log        *slog.Logger
	nodes      *NodeCache
	clock      *TIDClock
	validator  *Validator
	migrations fs.FS
	// checkpoints carries actors whose WAL wants a checkpoint to Run.
	checkpoints chan syntax.DID
	handles     *handleCache[syntax.DID, *actor]
}

// Open returns a Store keeping actor repositories under dir/actors, creating that folder if
// needed. It opens no actor file.
func Open(ctx context.Context, dir string, cfg StoreConfig, log *slog.Logger) (*Store, error) {
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = DefaultMaxOpen
	}
	if cfg.NodeCache <= 0 {
		cfg.NodeCache = DefaultNodeCache
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(filepath.Join(dir, actorsDir))
	if err != nil {
		return nil, fmt.Errorf("open repo store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open repo store %s: %w", dir, err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("open repo store %s: %w", dir, err)
	}
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("open repo store %s: %w", dir, err)
	}
	validator, err := NewValidator()
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("open repo store %s: %w", dir, err)
	}
	s := &Store{
		dir:         abs,
		root:        root,
		cfg:         cfg,
		log:         log.With("component", "repo"),
		nodes:       NewNodeCache(cfg.NodeCache),
		clock:       NewTIDClock(0),
		validator:   validator,
		migrations:  migrations,
		checkpoints: make(chan syntax.DID, checkpointQueue),
	}
	s.handles = newHandleCache(cfg.MaxOpen, s.openActor)
	return s, nil
}

// checkpointQueue is how many checkpoint requests may wait for Run; beyond it writers
// checkpoint themselves, so a slow disk slows writers instead of growing WALs.
const checkpointQueue = 16

// Run checkpoints the WAL of busy actor files in the background until ctx ends, so that
// commits do not pay for it, and closes the files the LRU evicts, so that the open that
// evicted one does not wait for its collection and checkpoint. It returns nil when ctx
// ends. Without Run the store still works: writers checkpoint themselves, less often and
// on their own time, and opens close what they evict.
func (s *Store) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.handles.runCloser(ctx) })
	for {
		select {
		case <-ctx.Done():
			return nil
		case did := <-s.checkpoints:
			a, release, ok := s.handles.acquireIfOpen(did)
			if !ok {
				continue // closed since: closing checkpointed it
			}
			if err := a.checkpoint(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("checkpoint", "did", did, "err", err)
			}
			release()
		}
	}
}

// Close waits for running operations to finish and closes every open actor file.
func (s *Store) Close() error {
	err := s.handles.close()
	return errors.Join(err, s.root.Close())
}

// actorDir returns the folder of did relative to the store root:
// <first 2 hex of sha256(did)>/<did>. The shard keeps folders small with many accounts.
// DID syntax excludes '/', so the DID is a single path element.
func actorDir(did syntax.DID) string {
	sum := sha256.Sum256([]byte(did))
	return path.Join(hex.EncodeToString(sum[:1]), string(did))
}

// sqliteOptions returns how actor files are opened. Reads share the writer connection:
// one account rarely has two users at once, and a second connection would double the cost
// of an LRU miss (open, pragmas, schema read) and the page caches of idle files. The WAL
// file persists across closes because LRU churn closes and reopens files all day.
// actorCacheKiB is each open actor file's page cache. A commit to a 10k-record repo reads
// ~25 B-tree pages scattered over a few MB; with SQLite's 2 MiB default they were re-read
// from the OS (a syscall each), and 8 MiB holds such a repo whole: ~8% less CPU per commit.
// Only pages actually read are cached, so most repos use far less.
const actorCacheKiB = 8 << 10

func (s *Store) sqliteOptions() sqlite.Options {
	return sqlite.Options{
		Synchronous: s.cfg.Synchronous,
		Readers:     sqlite.SharedReader,
		PersistWAL:  true,
		CacheKiB:    actorCacheKiB,
		// A group commit's savepoints journal its commits' pages, usually over 64 KiB.
		TempInMemory: true,
		Migrations:   s.migrations,
	}
}

// openActor opens an existing actor's file; it is the LRU's open function. SQLite's open
// reports a missing file itself: a stat first cost every LRU miss a system call.
func (s *Store) openActor(ctx context.Context, did syntax.DID) (*actor, error) {
	opts := s.sqliteOptions()
	opts.MustExist = true
	db, err := sqlite.Open(ctx, filepath.Join(s.dir, filepath.FromSlash(path.Join(actorDir(did), repoFileName))), opts)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open repo %s: %w", did, ErrRepoNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open repo %s: %w", did, err)
	}
	return &actor{did: did, db: db, store: s}, nil
}

// withActor runs fn with a lease on did's open actor.
func (s *Store) withActor(ctx context.Context, did syntax.DID, fn func(*actor) error) error {
	a, release, err := s.handles.acquire(ctx, did)
	if err != nil {
		if errors.Is(err, errCacheClosed) {
			return fmt.Errorf("repo %s: %w", did, ErrStoreClosed)
		}
		return err
	}
	defer release()
	return fn(a)
}

// Exists reports whether a repository for did is stored here.
func (s *Store) Exists(ctx context.Context, did syntax.DID) (bool, error) {
	_, err := s.root.Stat(path.Join(actorDir(did), repoFileName))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat repo %s: %w", did, err)
	}
}

// Create makes a new repository for did signed by key (a fresh K-256 key when key is nil)
// and returns its genesis commit: an empty tree under a signed commit, which is the
// account's first event. It returns ErrRepoExists when did already has one.
//
// The actor folder is built under a temporary name and renamed into place, so a crash
// leaves either no repo or a complete one.
func (s *Store) Create(ctx context.Context, did syntax.DID, key atcrypto.PrivateKeyExportable) (*CommitEvent, error) {
	if key == nil {
		k, err := atcrypto.GeneratePrivateKeyK256()
		if err != nil {
			return nil, fmt.Errorf("create repo %s: generate key: %w", did, err)
		}
		key = k
	}
	var ev *CommitEvent
	err := s.exclusive(ctx, did, func() error {
		var err error
		ev, err = s.buildActor(ctx, did, key, func(a *actor) (*CommitEvent, error) {
			return a.genesis(ctx, key)
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create repo %s: %w", did, err)
	}
	return ev, nil
}

// exclusive runs fn with did's slot in the LRU held against every other use.
func (s *Store) exclusive(ctx context.Context, did syntax.DID, fn func() error) error {
	err := s.handles.exclusive(ctx, did, fn)
	if errors.Is(err, errCacheClosed) {
		return ErrStoreClosed
	}
	return err
}

// buildActor makes did's folder under a temporary name: key file, migrated SQLite file,
// whatever fill writes into it; then closes the file and renames the folder into place.
// The caller holds did's slot exclusively.
func (s *Store) buildActor(ctx context.Context, did syntax.DID, key atcrypto.PrivateKeyExportable, fill func(*actor) (*CommitEvent, error)) (*CommitEvent, error) {
	final := actorDir(did)
	if _, err := s.root.Stat(final); err == nil {
		return nil, ErrRepoExists
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	shard := path.Dir(final)
	if err := s.root.MkdirAll(shard, 0o700); err != nil {
		return nil, fmt.Errorf("make shard folder: %w", err)
	}
	tmp := path.Join(shard, ".tmp-"+rand.Text())
	if err := s.root.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("make temporary folder: %w", err)
	}
	done := false
	defer func() {
		if !done {
			s.root.RemoveAll(tmp)
		}
	}()
	if err := writeFileSynced(s.root, path.Join(tmp, keyFileName), []byte(key.Multibase()), 0o600); err != nil {
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	db, err := sqlite.Open(ctx, filepath.Join(s.dir, filepath.FromSlash(path.Join(tmp, repoFileName))), s.sqliteOptions())
	if err != nil {
		return nil, err
	}
	a := &actor{did: did, db: db, store: s, key: key}
	ev, err := fill(a)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := syncDir(s.root, tmp); err != nil {
		return nil, err
	}
	if err := s.root.Rename(tmp, final); err != nil {
		return nil, fmt.Errorf("move repo into place: %w", err)
	}
	done = true
	if err := syncDir(s.root, shard); err != nil {
		return nil, err
	}
	return ev, nil
}

// Delete removes did's repository folder (records, blocks and signing key). It waits for
// running operations on did to finish. Deleting a missing repository returns
// ErrRepoNotFound.
func (s *Store) Delete(ctx context.Context, did syntax.DID) error {
	err := s.exclusive(ctx, did, func() error {
		dir := actorDir(did)
		if _, err := s.root.Stat(dir); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return ErrRepoNotFound
			}
			return err
		}
		// Rename first so that a crash mid-way leaves a temporary folder, not a
		// half-deleted repo that Exists would still report.
		trash := path.Join(path.Dir(dir), ".del-"+rand.Text())
		if err := s.root.Rename(dir, trash); err != nil {
			return err
		}
		if err := syncDir(s.root, path.Dir(dir)); err != nil {
			return err
		}
		return s.root.RemoveAll(trash)
	})
	if err != nil {
		return fmt.Errorf("delete repo %s: %w", did, err)
	}
	return nil
}

// SigningKey returns did's repository signing key. The key is secret: never log it.
func (s *Store) SigningKey(ctx context.Context, did syntax.DID) (atcrypto.PrivateKeyExportable, error) {
	var key atcrypto.PrivateKeyExportable
	err := s.withActor(ctx, did, func(a *actor) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		var err error
		key, err = a.signingKey()
		return err
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

// readKeyFile loads did's signing key from its key file.
func (s *Store) readKeyFile(did syntax.DID) (atcrypto.PrivateKeyExportable, error) {
	raw, err := s.root.ReadFile(path.Join(actorDir(did), keyFileName))
	if err != nil {
		return nil, fmt.Errorf("read signing key of %s: %w", did, err)
	}
	key, err := atcrypto.ParsePrivateMultibase(strings.TrimSpace(string(raw)))
	if err != nil {
		// The parse error does not include the key material.
		return nil, fmt.Errorf("parse signing key of %s: %w", did, err)
	}
	return key, nil
}

// writeFileSynced writes data to name under root via a temporary file that is fsynced and
// renamed into place, so readers see the old content or the whole new content.
func writeFileSynced(root *os.Root, name string, data []byte, perm os.FileMode) error {
	tmp := name + ".tmp-" + rand.Text()
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return err
	}
	return syncDir(root, path.Dir(name))
}

// syncDir fsyncs a folder so that renames and creations inside it survive a power loss.
func syncDir(root *os.Root, name string) error {
	d, err := root.Open(name)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", name, err)
	}
	return nil
}
