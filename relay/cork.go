package relay

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// maxKeptCorkBuffer is the largest write buffer a stream keeps between batches; a burst of
// big commits should not pin megabytes per idle subscriber.
const maxKeptCorkBuffer = 256 << 10

// corkConn lets a stream write a batch of WebSocket messages with one system call.
// coder/websocket flushes its buffer after every message, so with hundreds of subscribers
// one write(2) per event per subscriber dominates the CPU (a naive design measured 333
// events/s at 1,000 subscribers). While corked, writes are appended to buf; flush sends the
// whole batch at once. Uncorked writes (pings, pongs, close frames) pass straight through,
// under the same mutex so that they never interleave with a batch.
type corkConn struct {
	net.Conn
	timeout time.Duration // deadline for each real write: a stuck client cannot hold us

	mu     sync.Mutex
	corked bool
	buf    []byte
}

// Write appends p while corked, else writes it through.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.writeLocked(p)
}

func (c *corkConn) writeLocked(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, fmt.Errorf("set write deadline: %w", err)
	}
	return c.Conn.Write(p)
}

// cork starts buffering writes, with room for size bytes so the batch is copied once.
func (c *corkConn) cork(size int) {
	c.mu.Lock()
	c.corked = true
	c.buf = slices.Grow(c.buf[:0], size)
	c.mu.Unlock()
}

// flush writes everything buffered since cork in one write and stops buffering.
func (c *corkConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.writeLocked(c.buf)
	if cap(c.buf) > maxKeptCorkBuffer {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
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
	w.conn = &corkConn{Conn: conn, timeout: w.timeout}
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, 4096)), nil
}
