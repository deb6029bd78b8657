package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// Host statuses, as com.atproto.sync.defs#hostStatus spells them.
const (
	HostActive    = "active"
	HostIdle      = "idle"
	HostOffline   = "offline"
	HostThrottled = "throttled"
	HostBanned    = "banned"
)

const (
	// dialTimeout bounds connecting to a host's firehose.
	dialTimeout = 15 * time.Second
	// frameTimeout is how long one frame may take to arrive, whole. Hosts ping every few
	// seconds and busy ones send constantly, so a silent or dribbling stream (a slowloris)
	// is dropped and redialled instead of holding a goroutine and a buffer forever.
	frameTimeout = 2 * time.Minute
	// backoffMin and backoffMax bound the wait before redialling a failed host; the wait
	// doubles per consecutive failure, with jitter so many hosts do not redial together.
	backoffMin = time.Second
	backoffMax = 5 * time.Minute
	// maxKeptFrameBuffer is the largest read buffer a connection keeps between frames:
	// commits are a few KiB, and the rare frame near MaxFrameSize gets a fresh buffer.
	maxKeptFrameBuffer = 256 << 10
)

// host is one crawled firehose: a PDS, or an upstream relay carrying many PDSes.
type host struct {
	name  string
	relay bool
	// limiter paces a PDS's events (HostRate); nil for an upstream relay.
	limiter *rate.Limiter

	// running is set (under Crawler.mu) once a goroutine crawls the host.
	running bool
	// acks are the frames read but not yet acknowledged by the sequencer, in order; only
	// the host's goroutine touches them. The cursor moves past a frame once it and every
	// frame before it are in the log, so a crash never skips an event.
	acks []ack

	mu        sync.Mutex
	cursor    int64 // last seq processed; 0: none yet, start live
	saved     int64 // cursor as last persisted
	status    string
	connected bool
	lastErr   string
	failures  int
}

// ack is a processed frame's seq and, when its event was handed to the sequencer, the
// channel that reports it persisted.
type ack struct {
	seq  int64
	done <-chan error
}

// maxUnacked bounds the frames a host may have in flight before its goroutine waits.
const maxUnacked = 512

// drainAcks moves the cursor over every acknowledged frame at the front of h.acks, waiting
// for acknowledgements while more than keep are outstanding (keep 0 waits for all) or
// until ctx ends: a stopping sequencer may never take what was queued.
func (h *host) drainAcks(ctx context.Context, keep int) {
	for len(h.acks) > 0 {
		a := h.acks[0]
		if a.done != nil {
			if len(h.acks) > keep {
				select {
				case <-a.done:
				case <-ctx.Done():
					return
				}
			} else {
				select {
				case <-a.done:
				default:
					return
				}
			}
		}
		h.setCursor(a.seq)
		h.acks = h.acks[1:]
	}
	h.acks = h.acks[:0]
}

func (h *host) setCursor(seq int64) {
	h.mu.Lock()
	if seq > h.cursor {
		h.cursor = seq
	}
	h.mu.Unlock()
}

func (h *host) snapshot() (cursor int64, status string, connected bool, lastErr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cursor, h.status, h.connected, h.lastErr
}

// parseHost checks a crawl target, "host" or "host:port", and returns it lowercased. Names
// must be public DNS names with a dot unless allowPrivate, which also admits localhost and
// IP addresses (two nodes on one machine).
func parseHost(s string, allowPrivate bool) (string, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	if h == "" || strings.ContainsAny(h, "/?#@ ") {
		return "", fmt.Errorf("%q is not a hostname (no scheme or path: like pds.example.com)", s)
	}
	name, port := h, ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i+1:], "]") {
		name, port = h[:i], h[i+1:]
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return "", fmt.Errorf("%q has a bad port", s)
		}
	}
	name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
	if ip := net.ParseIP(name); ip != nil || name == "localhost" {
		if !allowPrivate {
			return "", fmt.Errorf("%q is not a public hostname", s)
		}
		return h, nil
	}
	if port != "" && !allowPrivate {
		return "", fmt.Errorf("%q: a public host takes no port", s)
	}
	if len(name) > 253 || !strings.Contains(name, ".") {
		return "", fmt.Errorf("%q is not a full hostname", s)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("%q is not a valid hostname", s)
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return "", fmt.Errorf("%q is not a valid hostname", s)
			}
		}
	}
	return h, nil
}

// plainHost reports whether h is reached without TLS: localhost or an IP address, which
// only a node allowed on private networks dials.
func plainHost(h string) bool {
	name := h
	if host, _, err := net.SplitHostPort(h); err == nil {
		name = host
	}
	return name == "localhost" || net.ParseIP(name) != nil
}

// hostURL returns the base URL of h for scheme "http" or "ws" (TLS unless plainHost).
func hostURL(h, scheme string) string {
	if !plainHost(h) {
		scheme += "s"
	}
	return scheme + "://" + h
}

// hostOf returns the host[:port] of a service endpoint URL from a DID document.
func hostOf(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("PDS endpoint %q is not an http(s) URL", endpoint)
	}
	return strings.ToLower(u.Host), nil
}

// runHost subscribes to h until ctx ends, redialling with backoff after every failure.
func (c *Crawler) runHost(ctx context.Context, h *host) {
	log := c.log.With("host", h.name)
	for ctx.Err() == nil {
		err := c.streamHost(ctx, h, log)
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		h.connected = false
		h.failures++
		h.status = HostOffline
		if err != nil {
			h.lastErr = err.Error()
		}
		wait := min(backoffMin<<min(h.failures-1, 20), backoffMax)
		h.mu.Unlock()
		wait = wait/2 + rand.N(wait/2+1)
		log.Warn("crawler lost a host; redialling", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// streamHost dials h's firehose from its cursor and processes frames until the stream
// fails or ctx ends.
func (c *Crawler) streamHost(ctx context.Context, h *host, log *slog.Logger) error {
	cursor, _, _, _ := h.snapshot()
	u := hostURL(h.name, "ws") + "/xrpc/com.atproto.sync.subscribeRepos"
	if cursor > 0 {
		u += "?cursor=" + strconv.FormatInt(cursor, 10)
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: c.deps.HTTP})
	cancel()
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(MaxFrameSize)
	h.mu.Lock()
	h.connected, h.status = true, HostActive
	h.mu.Unlock()
	log.Info("crawling host", "cursor", cursor)

	// Whatever ends the stream, frames already handed to the sequencer count once logged.
	defer h.drainAcks(ctx, 0)
	// One watchdog per connection instead of a context per frame: a per-frame deadline
	// costs a timer and a context.AfterFunc for every event. The watchdog runs only while
	// a frame is being read, so time spent verifying and queueing is not counted against
	// the host; when it fires it closes the connection, which ends the read.
	var timedOut atomic.Bool
	watchdog := time.AfterFunc(c.frameTimeout, func() {
		timedOut.Store(true)
		conn.CloseNow()
	})
	defer watchdog.Stop()
	stop := context.AfterFunc(ctx, func() { conn.CloseNow() })
	defer stop()
	// Reads get a context that is never done, so the library arms no per-read AfterFunc
	// either; ctx and the watchdog end a read by closing the connection.
	rctx := context.WithoutCancel(ctx)
	// Frames are read into one buffer reused for the whole connection; handleFrame keeps
	// no reference to it.
	var buf bytes.Buffer
	for {
		watchdog.Reset(c.frameTimeout)
		typ, r, err := conn.Reader(rctx)
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		watchdog.Stop()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if timedOut.Load() {
				return fmt.Errorf("read: no whole frame within %s", c.frameTimeout)
			}
			return fmt.Errorf("read: %w", err)
		}
		h.mu.Lock()
		h.failures = 0 // a frame arrived: the host works again
		h.mu.Unlock()
		if typ != websocket.MessageBinary {
			return errors.New("text frame on a binary stream")
		}
		if err := c.handleFrame(ctx, h, buf.Bytes(), log); err != nil {
			return err
		}
		if buf.Cap() > maxKeptFrameBuffer {
			buf = bytes.Buffer{} // one huge frame must not pin its buffer for the connection's life
		}
	}
}
