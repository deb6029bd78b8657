package node

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aerie-social/aerie/node/xrpc"
)

// limit is one fixed-window rate limit: at most Max calls per Window for one key.
type limit struct {
	Name   string
	Max    int
	Window time.Duration
}

// Limits of the reference PDS where it has them (atproto-reference.md §7.4); the others
// are ours, sized for a person retrying by hand.
var (
	limitCreateSession5m  = limit{"create-session-5m", 30, 5 * time.Minute}
	limitCreateSessionDay = limit{"create-session-day", 300, 24 * time.Hour}
	limitCreateAccount    = limit{"create-account", 100, 5 * time.Minute}
	limitPasswordReset    = limit{"password-reset", 15, time.Hour}
	limitUpdateHandle5m   = limit{"update-handle-5m", 10, 5 * time.Minute}
	limitUpdateHandleDay  = limit{"update-handle-day", 50, 24 * time.Hour}
)

// rateLimiter counts calls per (limit, key) in fixed windows. Counts live in memory: a
// restart forgives everyone, which is acceptable for abuse limits on a single node.
type rateLimiter struct {
	now func() time.Time

	mu      sync.Mutex
	windows map[string]*window
}

type window struct {
	start time.Time
	count int
}

func newRateLimiter(now func() time.Time) *rateLimiter {
	return &rateLimiter{now: now, windows: map[string]*window{}}
}

// allow counts one call for key under every limit in ls and reports whether all allow it,
// with the tightest limit's state for the RateLimit headers.
func (rl *rateLimiter) allow(key string, ls ...limit) (ok bool, l limit, remaining int, reset time.Time) {
	now := rl.now()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	ok, remaining = true, -1
	for _, lim := range ls {
		k := lim.Name + "\x00" + key
		w := rl.windows[k]
		if w == nil || now.Sub(w.start) >= lim.Window {
			w = &window{start: now}
			rl.windows[k] = w
		}
		w.count++
		left := lim.Max - w.count
		if w.count > lim.Max {
			ok = false
		}
		if remaining == -1 || left < remaining {
			l, remaining, reset = lim, max(left, 0), w.start.Add(lim.Window)
		}
	}
	return ok, l, remaining, reset
}

// Run drops expired windows every minute so the map does not grow with every IP seen.
func (rl *rateLimiter) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			rl.sweep()
		}
	}
}

func (rl *rateLimiter) sweep() {
	now := rl.now()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for k, w := range rl.windows {
		// The longest window is a day; anything older than that is expired for every limit.
		if now.Sub(w.start) > 24*time.Hour {
			delete(rl.windows, k)
		}
	}
}

// check counts a call and writes the RateLimit headers; it returns 429 RateLimitExceeded
// when a limit is used up.
func (n *Node) rateLimit(w http.ResponseWriter, key string, ls ...limit) error {
	ok, l, remaining, reset := n.limiter.allow(key, ls...)
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(l.Max))
	h.Set("RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
	h.Set("RateLimit-Policy", strconv.Itoa(l.Max)+";w="+strconv.Itoa(int(l.Window.Seconds())))
	if ok {
		return nil
	}
	h.Set("Retry-After", strconv.Itoa(int(max(time.Until(reset).Seconds(), 1))))
	return &xrpc.Error{Status: http.StatusTooManyRequests, Name: "RateLimitExceeded", Message: "Rate Limit Exceeded"}
}

// clientIP is the caller's address: the connection's peer, or with http.trust_forwarded_for
// the last X-Forwarded-For entry (the one our own reverse proxy appended).
func (n *Node) clientIP(r *http.Request) string {
	if n.cfg.HTTP.TrustForwardedFor {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			parts := strings.Split(xff, ",")
			return strings.TrimSpace(parts[len(parts)-1])
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
