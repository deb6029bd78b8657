package relay

import (
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Followed returns the remote accounts whose every commit is taken (see Want).
func (c *Crawler) Followed() []syntax.DID {
	c.mu.Lock()
	all := make([]*remoteRepo, 0, len(c.repos))
	for _, r := range c.repos {
		all = append(all, r)
	}
	c.mu.Unlock()
	var out []syntax.DID
	for _, r := range all {
		r.mu.Lock()
		if r.full {
			out = append(out, syntax.DID(r.did))
		}
		r.mu.Unlock()
	}
	return out
}

// Unwant takes did out of the interest set, unless Want added it at or after since (the
// moment the caller began deciding), and reports whether it did. From then on its commits
// are taken only when they touch a local account, as for any stranger; what the index
// already holds of it stays. In full mode every account is taken, so nothing changes.
func (c *Crawler) Unwant(did syntax.DID, since time.Time) bool {
	if c.cfg.Mode == ModeFull {
		return false
	}
	c.mu.Lock()
	r, ok := c.repos[did.String()]
	c.mu.Unlock()
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full || !r.wantedAt.Before(since) {
		return false
	}
	r.full, r.dirty = false, true
	return true
}
