package relay

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// maxKeptCorkBuffer is the largest copy buffer a stream keeps between batches; a burst of
// big commits should not pin megabytes per idle subscriber.
const maxKeptCorkBuffer = 256 << 10

// corkConn lets a stream write a whole batch of WebSocket messages with one system call.
// coder/websocket flushes after every message, so with hundreds of subscribers one write(2)
// per event per subscriber dominates the CPU (a naive design measured 333 events/s at 1,000
// subscribers). Instead the firehose hands writeBatch whole WebSocket messages, framed once
// for all streams by the window: on TCP they go out as one writev straight from the shared
// buffers, with no copy per subscriber in user space. The library's own writes (pings,
// pongs, close and error frames) pass straight through Write. Both take the same mutex, so
// a batch never interleaves with a control frame: the library writes each of those with
// one Write, as its 4 KiB buffer holds any control frame whole.
type corkConn struct {
	net.Conn
	timeout time.Duration // deadline for each real write: a stuck client cannot hold us
	// vectored says Conn turns net.Buffers into one writev; others (TLS) get one copy.
	vectored bool

	// lastBatch is when a batch write last finished (unix nanoseconds), and writing is set
	// while one is under way: the ping loop leaves a client that is taking batches alone.
	lastBatch atomic.Int64
	writing   atomic.Bool

	mu  sync.Mutex
	buf []byte
	// bufs holds writeBatch's argument while WriteTo consumes it: as a field it costs no
	// allocation, where a parameter's address would escape.
	bufs net.Buffers
}

func newCorkConn(conn net.Conn, timeout time.Duration) *corkConn {
	c := &corkConn{Conn: conn, timeout: timeout}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		c.vectored = true
	}
	return c
}

// Write writes p through, after any batch in progress.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setDeadline(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *corkConn) setDeadline() error {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	return nil
}

// writeBatch writes the buffers, whole WebSocket frames, in as few system calls as the
// connection allows. It consumes bufs.
func (c *corkConn) writeBatch(bufs net.Buffers) error {
	c.writing.Store(true)
	defer c.writing.Store(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.writeBatchLocked(bufs)
	if err == nil {
		c.lastBatch.Store(time.Now().UnixNano())
	}
	return err
}

// consuming reports whether a batch write is under way or one finished within d: the
// client is reading, however slowly, and a ping would only queue behind the batch.
func (c *corkConn) consuming(d time.Duration) bool {
	return c.writing.Load() || time.Since(time.Unix(0, c.lastBatch.Load())) < d
}

func (c *corkConn) writeBatchLocked(bufs net.Buffers) error {
	if err := c.setDeadline(); err != nil {
		return err
	}
	if c.vectored {
		c.bufs = bufs
		_, err := c.bufs.WriteTo(c.Conn)
		c.bufs = nil
		if err != nil {
			return fmt.Errorf("write batch: %w", err)
		}
		return nil
	}
	c.buf = c.buf[:0]
	for _, b := range bufs {
		c.buf = append(c.buf, b...)
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > maxKeptCorkBuffer {
		c.buf = nil
	}
	if err != nil {
		return fmt.Errorf("write batch: %w", err)
	}
	return nil
}

// corkWriter wraps the ResponseWriter handed to websocket.Accept so that the hijacked
// connection it gets is a corkConn.
type corkWriter struct {
	http.ResponseWriter
	timeout time.Duration
	conn    *corkConn
}

// Unwrap lets http.ResponseController reach the wrapped writer.
func (w *corkWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hijacks the underlying connection and wraps it in a corkConn.
func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// net/http flushes the 101 response before handing over; anything still buffered
	// must reach the client before our frames.
	if brw.Writer.Buffered() > 0 {
		if err := brw.Writer.Flush(); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("flush before hijack: %w", err)
		}
	}
	w.conn = newCorkConn(conn, w.timeout)
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, 4096)), nil
}
