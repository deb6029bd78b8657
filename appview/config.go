package appview

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Config is the [appview] section of the node's configuration.
type Config struct {
	// PublicURL is the node's public base URL (https://pds.example.com), used to build the
	// image URLs in views: <PublicURL>/img/<preset>/plain/<did>/<cid>@jpeg. The node sets it
	// from its hostname, so it has no key of its own.
	PublicURL string `toml:"-"`
	// Synchronous is index.sqlite's synchronous pragma (default NORMAL). The index is
	// derived, so a power cut that loses the newest batches only makes the indexer replay
	// them from its cursor. The node sets it from db.synchronous.
	Synchronous string `toml:"-"`
	// Hosted reports whether an account is hosted on this node. Notifications are kept
	// only for hosted accounts: listNotifications answers only them, and keeping every
	// indexed account's notifications made the index a third bigger and its writes a
	// fifth slower. Nil keeps notifications for every account. The node sets it.
	Hosted func(did string) bool `toml:"-"`
	// CacheBytes bounds the ristretto caches of hydrated profiles, posts and follow lists
	// (default 64 MiB). The caches are never the truth, so any size is correct.
	CacheBytes int64 `toml:"cache_bytes"`
	// IndexCacheBytes is the page cache of the indexer's connection once index.sqlite has
	// grown past 1 GiB (default 512 MiB; 0 keeps the small cache). A big index has its
	// B-trees far beyond a small cache, and each miss is a read from the file; below
	// 1 GiB SQLite's own bookkeeping makes a big cache cost every commit more than it
	// saves (see AppView.sizeWriterCache). Memory is taken only as pages are read.
	IndexCacheBytes int64 `toml:"index_cache_bytes"`
	// WaitTimeout bounds WaitForSeq, the read-after-write wait of a read served after a
	// local write (default 2s): past it the read is answered from the index as it is.
	WaitTimeout time.Duration `toml:"wait_timeout"`
}

// DefaultConfig returns the configuration used when the file says nothing.
func DefaultConfig() Config {
	return Config{
		PublicURL:       "http://localhost:2583",
		Synchronous:     "NORMAL",
		CacheBytes:      64 << 20,
		IndexCacheBytes: 512 << 20,
		WaitTimeout:     2 * time.Second,
	}
}

// Validate reports every invalid field at once, by key name.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("appview.public_url: %q is not an http(s) URL", c.PublicURL))
	}
	switch strings.ToUpper(c.Synchronous) {
	case "OFF", "NORMAL", "FULL", "EXTRA":
	default:
		errs = append(errs, fmt.Errorf("appview.synchronous: %q is not OFF, NORMAL, FULL or EXTRA", c.Synchronous))
	}
	if c.CacheBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("appview.cache_bytes: %d is below the minimum of 1 MiB", c.CacheBytes))
	}
	if c.IndexCacheBytes < 0 {
		errs = append(errs, fmt.Errorf("appview.index_cache_bytes: %d is negative", c.IndexCacheBytes))
	}
	if c.WaitTimeout <= 0 || c.WaitTimeout > time.Minute {
		errs = append(errs, fmt.Errorf("appview.wait_timeout: %s is not between 0 and 1m", c.WaitTimeout))
	}
	return errors.Join(errs...)
}
