package blobs

import (
	"errors"
	"fmt"
	"time"
)

// Defaults for Config.
const (
	// DefaultMaxSize is the largest upload: the official PDS installer's 100 MB, which
	// leaves room for video (atproto-reference §9).
	DefaultMaxSize = 100 << 20
	// DefaultGracePeriod is how long an unreferenced upload is kept: long enough for a
	// client that uploads media and then composes a post (the spec asks for "several
	// hours"; the reference PDS uses at least 1 h).
	DefaultGracePeriod = 6 * time.Hour
	// DefaultGCInterval is how often Run sweeps.
	DefaultGCInterval = 15 * time.Minute
	// DefaultMaxPixels refuses images larger than 50 megapixels before decoding them:
	// room for any camera photo, while a decoded image stays under 200 MB.
	DefaultMaxPixels = 50_000_000
	// DefaultMaxImageSize bounds an image source (local or fetched): Bluesky images are at
	// most a few MB, so this only stops abuse.
	DefaultMaxImageSize = 32 << 20
	// DefaultImageCacheSize and DefaultRemoteCacheSize bound the two disk caches.
	DefaultImageCacheSize  = 1 << 30
	DefaultRemoteCacheSize = 1 << 30
	// DefaultRemoteCacheTTL is how long another host's blob is kept before it is fetched
	// again, so that a deletion there takes effect here within a day.
	DefaultRemoteCacheTTL = 24 * time.Hour
	// DefaultRemoteTimeout bounds one fetch from another host, body included.
	DefaultRemoteTimeout = 30 * time.Second
)

// Config tunes a Store. Sizes are bytes.
type Config struct {
	// MaxSize is the largest blob uploadBlob accepts (default 100 MiB); describeServer
	// advertises it.
	MaxSize int64 `toml:"max_size"`
	// Quota is the most bytes of blobs one account may store, temporary ones included;
	// 0 means no quota.
	Quota int64 `toml:"quota"`
	// GracePeriod is how long an upload no record references is kept (default 6h).
	GracePeriod time.Duration `toml:"grace_period"`
	// GCInterval is how often Run removes expired uploads and cache entries (default 15m).
	GCInterval time.Duration `toml:"gc_interval"`
	// MaxPixels is the largest image (width × height) the image server decodes.
	MaxPixels int64 `toml:"max_pixels"`
	// MaxImageSize is the largest image source the image server reads or fetches.
	MaxImageSize int64 `toml:"max_image_size"`
	// ImageCacheSize bounds the disk cache of resized variants (default 1 GiB).
	ImageCacheSize int64 `toml:"image_cache_size"`
	// RemoteCacheSize bounds the disk cache of other hosts' blobs (default 1 GiB).
	RemoteCacheSize int64 `toml:"remote_cache_size"`
	// RemoteCacheTTL is how long a fetched remote blob is reused (default 24h).
	RemoteCacheTTL time.Duration `toml:"remote_cache_ttl"`
	// RemoteTimeout bounds each fetch from another host (default 30s).
	RemoteTimeout time.Duration `toml:"remote_timeout"`
	// AllowPrivateNetwork lets remote fetches reach loopback and private addresses. The
	// node sets it from net.allow_private_network, so it has no key of its own.
	AllowPrivateNetwork bool `toml:"-"`
	// Synchronous is blobs.sqlite's synchronous pragma; the node sets it from
	// db.synchronous.
	Synchronous string `toml:"-"`
}

// DefaultConfig returns the configuration used when the file says nothing.
func DefaultConfig() Config {
	return Config{
		MaxSize:         DefaultMaxSize,
		GracePeriod:     DefaultGracePeriod,
		GCInterval:      DefaultGCInterval,
		MaxPixels:       DefaultMaxPixels,
		MaxImageSize:    DefaultMaxImageSize,
		ImageCacheSize:  DefaultImageCacheSize,
		RemoteCacheSize: DefaultRemoteCacheSize,
		RemoteCacheTTL:  DefaultRemoteCacheTTL,
		RemoteTimeout:   DefaultRemoteTimeout,
	}
}

// Validate reports every invalid field at once, by key name. It does not change c.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("blobs.%s: "+format, append([]any{key}, args...)...))
	}
	if c.MaxSize < 1<<10 {
		bad("max_size", "must be at least 1024 bytes, got %d", c.MaxSize)
	}
	if c.Quota < 0 {
		bad("quota", "must be 0 (no quota) or positive, got %d", c.Quota)
	}
	if c.GracePeriod < time.Minute {
		bad("grace_period", "must be at least 1m, got %s", c.GracePeriod)
	}
	if c.GCInterval < time.Second {
		bad("gc_interval", "must be at least 1s, got %s", c.GCInterval)
	}
	if c.MaxPixels < 1<<20 {
		bad("max_pixels", "must be at least 1048576, got %d", c.MaxPixels)
	}
	if c.MaxImageSize < 1<<10 {
		bad("max_image_size", "must be at least 1024 bytes, got %d", c.MaxImageSize)
	}
	if c.ImageCacheSize < 0 {
		bad("image_cache_size", "must not be negative, got %d", c.ImageCacheSize)
	}
	if c.RemoteCacheSize < 0 {
		bad("remote_cache_size", "must not be negative, got %d", c.RemoteCacheSize)
	}
	if c.RemoteCacheTTL < time.Minute {
		bad("remote_cache_ttl", "must be at least 1m, got %s", c.RemoteCacheTTL)
	}
	if c.RemoteTimeout < time.Second {
		bad("remote_timeout", "must be at least 1s, got %s", c.RemoteTimeout)
	}
	return errors.Join(errs...)
}
