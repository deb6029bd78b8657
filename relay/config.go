package relay

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is the [relay] section of the node's configuration.
type Config struct {
	// Retention is how long the log keeps events for cursor replay (default 72h, the upper
	// end of what Bluesky relays keep; atproto-reference §6.3). Older events are pruned
	// periodically; a cursor before the pruned range gets #info OutdatedCursor.
	Retention time.Duration `toml:"retention"`
	// Synchronous is relay.sqlite's synchronous pragma (default NORMAL: a crash loses
	// nothing, a power cut may lose the newest batches, which startup repair re-sequences
	// from the repos). The node sets it from db.synchronous, so it has no key of its own.
	Synchronous string `toml:"-"`
	// WindowEvents and WindowBytes bound the in-memory window of newest events shared by
	// all subscribers: a firehose client more than this far behind is cut off with
	// ConsumerTooSlow, and an in-process subscription falls back to reading the log.
	// Defaults: 16384 events, 64 MiB — 8 s at 2,000 events/s.
	WindowEvents int   `toml:"window_events"`
	WindowBytes  int64 `toml:"window_bytes"`
	// Crawlers are the relays (hostnames) asked to crawl this node at startup when its
	// hostname is public, so its accounts reach the network.
	Crawlers []string `toml:"crawlers"`

	// Mode is what the crawler indexes: "interest" (default) keeps to the community's
	// neighbourhood — accounts local users follow (backfilled), and any event that touches
	// a local account; "full" takes every account on every host it crawls.
	Mode string `toml:"mode"`
	// Listen, when set, serves the relay stream (local and crawled events) on its own
	// address, for another AppView or relay. Empty: not served.
	Listen string `toml:"listen"`
	// Upstreams are relays whose aggregated firehose the crawler subscribes to (host or
	// host:port, e.g. "bsky.network"). With none, it subscribes to each followed account's
	// own PDS instead.
	Upstreams []string `toml:"upstreams"`
	// Hosts are PDS hosts the crawler always subscribes to, besides those it discovers and
	// those that ask with requestCrawl.
	Hosts []string `toml:"hosts"`
	// HostAccountLimit caps the accounts the crawler tracks per PDS host, so one host
	// cannot flood the node with accounts (default 5000).
	HostAccountLimit int `toml:"host_account_limit"`
	// HostRate caps the events per second taken from one PDS host (default 50, burst 10x);
	// upstream relays are not limited.
	HostRate int `toml:"host_rate"`
	// AllowPrivateNetwork lets the crawler dial loopback and private addresses over plain
	// ws:// (tests, two nodes on one machine). The node sets it from
	// net.allow_private_network.
	AllowPrivateNetwork bool `toml:"-"`
}

// Crawler modes.
const (
	ModeInterest = "interest"
	ModeFull     = "full"
)

// DefaultConfig returns the configuration used when the file says nothing.
func DefaultConfig() Config {
	return Config{
		Retention:    72 * time.Hour,
		Synchronous:  "NORMAL",
		WindowEvents: 16384,
		WindowBytes:  64 << 20,
		Crawlers:     []string{"bsky.network"},

		Upstreams:        []string{},
		Hosts:            []string{},
		Mode:             ModeInterest,
		HostAccountLimit: 5000,
		HostRate:         50,
	}
}

// Validate reports every invalid field at once, by key name.
func (c Config) Validate() error {
	var errs []error
	if c.Retention < time.Minute {
		errs = append(errs, fmt.Errorf("relay.retention: %s is below the minimum of 1m", c.Retention))
	}
	switch c.Synchronous {
	case "OFF", "NORMAL", "FULL", "EXTRA", "off", "normal", "full", "extra":
	default:
		errs = append(errs, fmt.Errorf("relay.synchronous: %q is not OFF, NORMAL, FULL or EXTRA", c.Synchronous))
	}
	if c.WindowEvents < 64 {
		errs = append(errs, fmt.Errorf("relay.window_events: %d is below the minimum of 64", c.WindowEvents))
	}
	// A window must hold at least one largest frame, or a big commit could never be sent.
	if c.WindowBytes < 2*MaxFrameSize {
		errs = append(errs, fmt.Errorf("relay.window_bytes: %d is below the minimum of %d", c.WindowBytes, 2*MaxFrameSize))
	}
	for _, h := range c.Crawlers {
		if h == "" || strings.ContainsAny(h, "/: ") {
			errs = append(errs, fmt.Errorf("relay.crawlers: %q must be a bare hostname like bsky.network", h))
		}
	}
	if c.Mode != ModeInterest && c.Mode != ModeFull {
		errs = append(errs, fmt.Errorf("relay.mode: %q is not %q or %q", c.Mode, ModeInterest, ModeFull))
	}
	for _, list := range []struct {
		key   string
		hosts []string
	}{{"relay.upstreams", c.Upstreams}, {"relay.hosts", c.Hosts}} {
		for _, h := range list.hosts {
			if _, err := parseHost(h, true); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", list.key, err))
			}
		}
	}
	if c.HostAccountLimit < 1 {
		errs = append(errs, fmt.Errorf("relay.host_account_limit: %d is below the minimum of 1", c.HostAccountLimit))
	}
	if c.HostRate < 1 {
		errs = append(errs, fmt.Errorf("relay.host_rate: %d is below the minimum of 1", c.HostRate))
	}
	return errors.Join(errs...)
}
