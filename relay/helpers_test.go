package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/coder/websocket"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

var testTime = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testConfig is the default config with a small window, so tests cross the boundary
// between replay and live often.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.WindowEvents = 64
	return cfg
}

// harness is a running sequencer and firehose over a real file and a real HTTP server.
type harness struct {
	seq  *Sequencer
	fh   *Firehose
	srv  *httptest.Server
	path string
	stop func() // stops Run and waits; idempotent
}

// openSeq opens a sequencer in dir without running it.
func openSeq(t testing.TB, path string, cfg Config) *Sequencer {
	t.Helper()
	s, err := Open(t.Context(), path, cfg, discardLog())
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	return s
}

// start runs s (and a firehose over it) until the test ends or stop is called.
func start(t testing.TB, s *Sequencer, opts ...func(*Firehose)) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fh := NewFirehose(s, LocalEvents, discardLog())
	for _, o := range opts {
		o(fh)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Run(ctx); err != nil {
			t.Errorf("Sequencer.Run = %v", err)
		}
	})
	wg.Go(func() {
		if err := fh.Run(ctx); err != nil {
			t.Errorf("Firehose.Run = %v", err)
		}
	})
	// Until Run has started, the firehose answers 503: wait, so tests can dial at once.
	for running := false; !running; time.Sleep(time.Millisecond) {
		fh.mu.Lock()
		running = fh.runCtx != nil
		fh.mu.Unlock()
	}
	srv := httptest.NewServer(fh)
	var once sync.Once
	h := &harness{seq: s, fh: fh, srv: srv, path: s.db.Path()}
	h.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			srv.Close()
			if err := s.Close(); err != nil {
				t.Errorf("Close = %v", err)
			}
		})
	}
	t.Cleanup(h.stop)
	return h
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	return start(t, openSeq(t, filepath.Join(t.TempDir(), "relay.sqlite"), cfg))
}

// cidOf returns the dag-cbor sha-256 CID of b.
func cidOf(b []byte) cid.Cid {
	sum := sha256.Sum256(b)
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	return cid.NewCidV1(cid.DagCBOR, mh)
}

// commitEvent returns a #commit event for did with a blocks field of about size bytes.
func commitEvent(did string, n int, size int) *Event {
	rev := syntax.NewTID(int64(1_700_000_000_000_000+n), 0).String()
	rec := cidOf([]byte(fmt.Sprintf("record %d", n)))
	prev := cidOf([]byte(fmt.Sprintf("record %d", n-1)))
	blocks := bytes.Repeat([]byte{byte(n)}, size)
	ev := &Event{Commit: &comatproto.SyncSubscribeRepos_Commit{
		Repo:     did,
		Rev:      rev,
		Commit:   lexutil.LexLink(cidOf([]byte(rev))),
		PrevData: link(prev),
		Blocks:   blocks,
		Blobs:    []lexutil.LexLink{},
		Ops: []*comatproto.SyncSubscribeRepos_RepoOp{
			{Action: "update", Path: fmt.Sprintf("app.bsky.feed.post/%d", n), Cid: link(rec), Prev: link(prev)},
		},
	}}
	if n > 0 {
		since := syntax.NewTID(int64(1_700_000_000_000_000+n-1), 0).String()
		ev.Commit.Since = &since
	}
	return ev
}

func submit(t testing.TB, s *Sequencer, ev *Event) int64 {
	t.Helper()
	seq, err := s.Submit(t.Context(), ev)
	if err != nil {
		t.Fatalf("Submit(%s) = %v", ev.Kind(), err)
	}
	return seq
}

// dial opens a firehose WebSocket; cursor "" means none.
func dial(t testing.TB, h *harness, cursor string) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/xrpc/com.atproto.sync.subscribeRepos"
	if cursor != "" {
		u += "?cursor=" + cursor
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", u, err)
	}
	c.SetReadLimit(MaxFrameSize)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// readEvent reads and decodes one frame; error frames come back as *FrameError.
func readEvent(t testing.TB, c *websocket.Conn) (*Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageBinary {
		t.Fatalf("Read = %v message, want binary", typ)
	}
	return DecodeFrame(b)
}

// readSeqs reads n message frames and returns their seqs.
func readSeqs(t testing.TB, c *websocket.Conn, n int) []int64 {
	t.Helper()
	seqs := make([]int64, 0, n)
	for len(seqs) < n {
		ev, err := readEvent(t, c)
		if err != nil {
			t.Fatalf("after %d frames: read = %v", len(seqs), err)
		}
		seqs = append(seqs, ev.Seq)
	}
	return seqs
}

// wantRange checks seqs are exactly from, from+1, …, to.
func wantRange(t testing.TB, name string, seqs []int64, from, to int64) {
	t.Helper()
	if int64(len(seqs)) != to-from+1 {
		t.Errorf("%s: got %d events, want %d (seq %d..%d)", name, len(seqs), to-from+1, from, to)
	}
	for i, s := range seqs {
		if s != from+int64(i) {
			t.Errorf("%s: event %d has seq %d, want %d (gap or duplicate)", name, i, s, from+int64(i))
			return
		}
	}
}

// isClosedWith reports whether err is a WebSocket close with code.
func isClosedWith(err error, code websocket.StatusCode) bool {
	return websocket.CloseStatus(err) == code
}
