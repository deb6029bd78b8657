//go:build unix

package relay

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestFirehoseStalledReaderNotPinged: a client that pauses reading while a batch is
// stalled on it is not pinged meanwhile. coder/websocket drops a connection whose ping
// waits 5 s for the writer, so a ping behind the batch would cut off a live client.
func TestFirehoseStalledReaderNotPinged(t *testing.T) {
	t.Parallel()
	h := start(t, openSeq(t, filepath.Join(t.TempDir(), "relay.sqlite"), DefaultConfig()), func(fh *Firehose) {
		fh.writeTimeout, fh.pingInterval = time.Minute, 2*time.Second
	})
	c := dialSmallBuffer(t, h)
	// About 8 MB: far more than the server's send buffer and the client's small receive
	// buffer hold, so the stream's batch stalls until the client reads again.
	const events, size = 1000, 8 << 10
	var wg sync.WaitGroup
	for i := range events {
		wg.Go(func() {
			if _, err := h.seq.Submit(t.Context(), commitEvent("did:plc:a", i, size)); err != nil {
				t.Errorf("Submit = %v", err)
			}
		})
	}
	wg.Wait()
	// A ping falls due while the batch is stalled; 5 s later it would have dropped the
	// connection.
	time.Sleep(8 * time.Second)
	wantRange(t, "after the pause", readSeqs(t, c, events), 1, events)
}

// dialSmallBuffer subscribes with a 64 KiB socket receive buffer, so that what the
// client does not read stays on the server's side instead of in the kernel's autotuned
// buffers (up to tens of megabytes on loopback).
func dialSmallBuffer(t *testing.T, h *harness) *websocket.Conn {
	t.Helper()
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/xrpc/com.atproto.sync.subscribeRepos"
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("Dial(%s) = %v", u, err)
	}
	c.SetReadLimit(MaxFrameSize)
	t.Cleanup(func() { c.CloseNow() })
	return c
}
