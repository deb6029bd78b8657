package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/aerie-social/aerie/node/xrpc"
)

const (
	// defaultPingInterval is how often an idle stream checks its client is alive; proxies
	// commonly drop connections silent for 60 s.
	defaultPingInterval = 30 * time.Second
	// pongTimeout is how long a client may take to answer a ping before it is dropped.
	pongTimeout = 15 * time.Second
	// defaultWriteTimeout bounds one batch write: a client whose TCP window stays shut this long is
	// gone or hopelessly slow.
	defaultWriteTimeout = 10 * time.Second
	// clientReadLimit bounds a client frame; the server ignores client frames anyway.
	clientReadLimit = 4096
	// minFlushInterval and maxFlushInterval bound the least time between two batch writes
	// of one stream; events that arrive meanwhile wait in the shared window and go out in
	// the next write. See Firehose.flushInterval.
	minFlushInterval = 5 * time.Millisecond
	maxFlushInterval = 50 * time.Millisecond
	// batchWritesPerSecond is the budget of batch writes of all streams together. Each
	// costs a system call and a goroutine wake-up, a few microseconds whatever its size, so
	// with a thousand streams that fixed cost, not the bytes, would take the CPU.
	batchWritesPerSecond = 20_000
)

// Firehose serves com.atproto.sync.subscribeRepos (atproto-reference §6.2–6.4) over
// WebSocket from a Sequencer. Build it with NewFirehose, run it with Run and mount it at
// /xrpc/com.atproto.sync.subscribeRepos.
//
// http.Server.Shutdown neither waits for nor cancels hijacked connections, so streams are
// tied to Run's context instead: the node runs Firehose.Run with the context whose end
// triggers Shutdown (or cancels it from http.Server.RegisterOnShutdown). When that context
// ends, every stream sends a close frame and Run returns after all have ended.
type Firehose struct {
	seq *Sequencer
	log *slog.Logger
	// scope says which events the stream carries.
	scope Scope
	// writeTimeout is defaultWriteTimeout; tests that stall a client on purpose raise it so
	// a loaded machine does not turn their cut-off into a timeout.
	writeTimeout time.Duration
	// pingInterval is defaultPingInterval; tests shorten it.
	pingInterval time.Duration

	mu sync.Mutex
	// runCtx is Run's context while Run runs, nil otherwise. It is kept (against our usual
	// rule) because a stream outlives its request's context once hijacked, and must be
	// cancelled by whoever owns the server's lifetime.
	runCtx  context.Context
	streams sync.WaitGroup
	// active counts the streams writing events, which sets their flush interval.
	active atomic.Int64
	clock  flushClock
}

// Scope says which events of the log a Firehose serves.
type Scope int

const (
	// LocalEvents is the PDS firehose: only this node's accounts, what relays crawl.
	LocalEvents Scope = iota
	// AllEvents is the relay stream: local events and the ones the crawler verified.
	AllEvents
)

// NewFirehose returns a firehose serving seq's stream within scope. It starts no goroutine.
func NewFirehose(seq *Sequencer, scope Scope, log *slog.Logger) *Firehose {
	return &Firehose{seq: seq, scope: scope, log: log.With("component", "firehose"),
		writeTimeout: defaultWriteTimeout, pingInterval: defaultPingInterval}
}

// Run accepts streams until ctx ends, then closes them all and returns nil once every stream
// handler has returned. Before Run and after it, ServeHTTP answers 503.
func (f *Firehose) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.runCtx != nil {
		f.mu.Unlock()
		return errors.New("relay: Firehose.Run called twice")
	}
	f.runCtx = ctx
	f.mu.Unlock()

	<-ctx.Done()
	f.mu.Lock()
	f.runCtx = nil
	f.mu.Unlock()
	f.streams.Wait()
	return nil
}

// ServeHTTP upgrades the request to a WebSocket and streams events. The optional cursor
// parameter is the last seq the client processed: a malformed one is answered with 400
// InvalidRequest before the upgrade; one in the future with an error frame FutureCursor; one
// older than the log with #info OutdatedCursor and then the whole log; none means live only.
func (f *Firehose) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		xrpc.WriteError(w, http.StatusMethodNotAllowed, "InvalidRequest", "subscribeRepos takes GET")
		return
	}
	cursor := Live
	if raw := r.URL.Query().Get("cursor"); raw != "" {
		c, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || c < 0 {
			xrpc.WriteError(w, http.StatusBadRequest, "InvalidRequest", "cursor must be a non-negative integer")
			return
		}
		cursor = c
	}

	f.mu.Lock()
	parent := f.runCtx
	if parent != nil {
		f.streams.Add(1)
	}
	f.mu.Unlock()
	if parent == nil {
		xrpc.WriteError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the firehose is not running")
		return
	}
	defer f.streams.Done()

	// Subscribe before the handshake answers, so a live-only client gets every event
	// sequenced after its connection was accepted.
	sub, subErr := f.seq.subscribe(cursor, true, true, f.scope == LocalEvents)

	cw := &corkWriter{ResponseWriter: w, timeout: f.writeTimeout}
	conn, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		// The stream is public data and carries no credentials, so any origin may read it.
		InsecureSkipVerify: true,
		// Compression would run once per subscriber per event: the CPU we save by corking.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		f.log.Debug("websocket upgrade failed", "err", err)
		return // Accept has answered
	}
	if cw.conn == nil { // a ResponseWriter whose Hijack bypassed ours: cannot happen with net/http
		conn.CloseNow()
		return
	}
	conn.SetReadLimit(clientReadLimit)
	f.stream(parent, conn, cw.conn, cursor, sub, subErr)
}

// stream runs one subscriber: a read loop that notices a departed client, a ping loop, and
// the writer (this goroutine). It returns after both helpers have ended.
func (f *Firehose) stream(parent context.Context, conn *websocket.Conn, cc *corkConn, cursor int64, sub *Subscription, subErr error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	// Connection operations use a context that shutdown does not cancel: coder/websocket
	// closes the socket when an operation's context ends, and we want to send a close frame
	// first. They end when the connection closes, which the writer guarantees on return.
	connCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer conn.CloseNow() // after Close below this is a no-op; it unblocks the helpers

	wg.Go(func() {
		defer cancel()
		for {
			_, rd, err := conn.Reader(connCtx)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, rd); err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		defer cancel()
		t := time.NewTicker(f.pingInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// A client taking our batches is alive. Pinging it anyway would queue the ping
			// behind a batch a slow reader takes long over, and coder/websocket drops a
			// connection whose control frame waits 5 s: it would never hear
			// ConsumerTooSlow. Stalls are the write timeout's to catch.
			if cc.consuming(f.pingInterval) {
				continue
			}
			pctx, pcancel := context.WithTimeout(connCtx, pongTimeout)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				return
			}
		}
	})

	code, reason := f.write(ctx, connCtx, conn, cc, cursor, sub, subErr)
	if code == broken {
		return // the deferred CloseNow drops it: a close handshake would only wait
	}
	if err := conn.Close(code, reason); err != nil {
		f.log.Debug("closing firehose stream", "err", err)
	}
}

// broken is write's answer for a connection that failed: close it without a handshake.
const broken websocket.StatusCode = -1

// write sends sub's events (subErr is what subscribing returned) until the stream ends and
// returns the close code and reason.
func (f *Firehose) write(ctx, connCtx context.Context, conn *websocket.Conn, cc *corkConn, cursor int64, sub *Subscription, err error) (websocket.StatusCode, string) {
	fail := func(name, message string) (websocket.StatusCode, string) {
		if err := conn.Write(connCtx, websocket.MessageBinary, ErrorFrame(name, message)); err != nil {
			return broken, ""
		}
		return websocket.StatusPolicyViolation, name
	}
	if errors.Is(err, ErrFutureCursor) {
		return fail("FutureCursor", "cursor is ahead of the stream")
	}
	if err != nil {
		f.log.Error("subscribing a firehose stream", "err", err, "cursor", cursor)
		return fail("InternalError", "")
	}
	if sub.Outdated() {
		msg := fmt.Sprintf("cursor %d is older than the log; starting from the oldest event", cursor)
		if err := conn.Write(connCtx, websocket.MessageBinary, InfoFrame("OutdatedCursor", msg)); err != nil {
			return broken, ""
		}
	}
	f.active.Add(1)
	defer f.active.Add(-1)
	var tick <-chan struct{} // nil before the first write, which goes out at once
	for {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return websocket.StatusGoingAway, "server shutting down"
			}
		}
		bufs, err := sub.nextWire(ctx)
		switch {
		case err == nil:
		case errors.Is(err, ErrConsumerTooSlow):
			f.log.Info("cutting off a slow firehose consumer", "seq", f.seq.LastSeq())
			return fail("ConsumerTooSlow", "stream consumer fell too far behind")
		case ctx.Err() != nil, errors.Is(err, ErrClosed):
			return websocket.StatusGoingAway, "server shutting down"
		default:
			f.log.Error("reading the relay log for a firehose stream", "err", err)
			return fail("InternalError", "")
		}
		tick = f.clock.next(f.flushInterval())
		if err := cc.writeBatch(bufs); err != nil {
			return broken, ""
		}
	}
}

// flushInterval returns the least time between two batch writes of one stream: the share of
// batchWritesPerSecond of each active stream, within [minFlushInterval, maxFlushInterval].
// A lone stream writes almost as events come; a thousand write every 50 ms, which adds at
// most that much latency but lets each write carry a hundred events at 2,000 events/s.
func (f *Firehose) flushInterval() time.Duration {
	d := time.Duration(f.active.Load()) * time.Second / batchWritesPerSecond
	return min(max(d, minFlushInterval), maxFlushInterval)
}

// flushClock paces the streams' batch writes with one timer for all of them instead of one
// each. Streams that wrote in the same period wake together on the next tick, so a thousand
// streams cost one timer and one channel close per period, and their writes leave in a
// burst that keeps the threads of both ends busy, rather than as a steady trickle in
// which each write may wake an idle thread on either side.
type flushClock struct {
	mu sync.Mutex
	// tick is closed by the pending timer; nil when none is pending, so an idle firehose
	// keeps no timer running.
	tick chan struct{}
}

// next returns a channel closed d from now, or sooner when another stream already started
// the period: it is shared by every stream that asks before it closes.
func (c *flushClock) next(d time.Duration) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tick == nil {
		tick := make(chan struct{})
		c.tick = tick
		time.AfterFunc(d, func() {
			c.mu.Lock()
			c.tick = nil
			c.mu.Unlock()
			close(tick)
		})
	}
	return c.tick
}

// maxFrameHeader is the longest server-to-client WebSocket frame header: no mask, a 64-bit
// length (RFC 6455 §5.2).
const maxFrameHeader = 10

// appendFrameHeader appends the header of an unfragmented binary message of n bytes.
func appendFrameHeader(b []byte, n int) []byte {
	const finBinary = 0x80 | 0x2
	switch {
	case n < 126:
		return append(b, finBinary, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, finBinary, 126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(b, finBinary, 127), uint64(n))
}
