package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/ipfs/go-cid"
)

func TestFirehoseCursors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	for i := range 5 {
		submit(t, h.seq, commitEvent("did:plc:alice", i, 30))
	}

	t.Run("zero replays everything", func(t *testing.T) {
		t.Parallel()
		c := dial(t, h, "0")
		wantRange(t, "cursor=0", readSeqs(t, c, 5), 1, 5)
	})
	t.Run("cursor replays after it", func(t *testing.T) {
		t.Parallel()
		c := dial(t, h, "3")
		wantRange(t, "cursor=3", readSeqs(t, c, 2), 4, 5)
	})
	t.Run("future", func(t *testing.T) {
		t.Parallel()
		c := dial(t, h, "1000")
		_, err := readEvent(t, c)
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Name != "FutureCursor" {
			t.Fatalf("first frame for cursor=1000 = %v, want error frame FutureCursor", err)
		}
		if _, _, err := c.Read(t.Context()); !isClosedWith(err, websocket.StatusPolicyViolation) {
			t.Errorf("after FutureCursor: Read = %v, want close 1008", err)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		t.Parallel()
		for _, cursor := range []string{"-1", "abc", "1.5", "99999999999999999999"} {
			resp, err := http.Get(h.srv.URL + "/xrpc/com.atproto.sync.subscribeRepos?cursor=" + cursor)
			if err != nil {
				t.Fatalf("GET cursor=%s = %v", cursor, err)
			}
			var body struct{ Error string }
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || body.Error != "InvalidRequest" {
				t.Errorf("GET cursor=%s = %d %q, want 400 InvalidRequest", cursor, resp.StatusCode, body.Error)
			}
		}
	})
}

// TestFirehoseLiveOnly: no cursor means only events sequenced after the connection.
func TestFirehoseLiveOnly(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	// Submit returns once seq 1 is durable, which may be before streams see it: wait for
	// a live subscription to get it, so the connection below comes after it.
	before, _ := h.seq.Subscribe(Live)
	submit(t, h.seq, NewIdentity("did:plc:a", "a.test"))
	if _, err := before.Next(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := dial(t, h, "")
	// The stream is subscribed once the upgrade is done; a subscription made now is
	// behind it, so when that one sees seq 2, the stream has it too.
	sub, _ := h.seq.Subscribe(Live)
	submit(t, h.seq, NewAccount("did:plc:a", true, ""))
	if _, err := sub.Next(t.Context()); err != nil {
		t.Fatal(err)
	}
	ev, err := readEvent(t, c)
	if err != nil || ev.Seq != 2 || ev.Account == nil {
		t.Fatalf("first live frame = %+v, %v; want #account seq 2", ev, err)
	}
}

func TestFirehoseOutdatedCursor(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: testTime}
	s := openSeq(t, t.TempDir()+"/relay.sqlite", testConfig())
	s.now = clock.Now
	h := start(t, s)
	for i := range 3 {
		submit(t, s, commitEvent("did:plc:a", i, 10))
	}
	clock.Advance(80 * 3600e9)
	submit(t, s, commitEvent("did:plc:a", 3, 10))
	if _, err := s.prune(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := dial(t, h, "1")
	ev, err := readEvent(t, c)
	if err != nil || ev.Info == nil || ev.Info.Name != "OutdatedCursor" {
		t.Fatalf("first frame for pruned cursor = %+v, %v; want #info OutdatedCursor", ev, err)
	}
	wantRange(t, "after OutdatedCursor", readSeqs(t, c, 1), 4, 4)
}

// TestFirehoseHandoffUnderLoad connects clients at many cursors while a writer keeps
// submitting: each must see every later event exactly once, in order. The writer submits
// in bursts and lets the slowest reader come within a few events before the next burst,
// so that the 64-event window (which makes readers hand off from the log to the window
// mid-stream) never cuts a reader off on a loaded machine.
func TestFirehoseHandoffUnderLoad(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	const total, burst = 800, 16
	for i := range 200 {
		submit(t, h.seq, commitEvent("did:plc:pre", i, 40))
	}
	cursors := []int64{0, 10, 150, 199, 200}
	var mu sync.Mutex
	moved := sync.NewCond(&mu)
	progress := map[int64]int64{}
	for _, c := range cursors {
		progress[c] = c
	}
	slowest := func() int64 {
		low := int64(total)
		for _, p := range progress {
			low = min(low, p)
		}
		return low
	}
	var writer sync.WaitGroup
	writer.Go(func() {
		for i := 200; i < total; i++ {
			if (i-200)%burst == 0 {
				mu.Lock()
				for slowest() < int64(i)-burst {
					moved.Wait()
				}
				mu.Unlock()
			}
			if _, err := h.seq.Submit(t.Context(), commitEvent("did:plc:live", i, 40)); err != nil {
				t.Errorf("Submit = %v", err)
				return
			}
		}
	})
	var readers sync.WaitGroup
	for _, cursor := range cursors {
		readers.Go(func() {
			c := dial(t, h, fmt.Sprint(cursor))
			seqs := make([]int64, 0, total-cursor)
			defer func() {
				mu.Lock()
				progress[cursor] = total // a finished (or failed) reader holds no one back
				moved.Broadcast()
				mu.Unlock()
			}()
			for int64(len(seqs)) < total-cursor {
				ev, err := readEvent(t, c)
				if err != nil {
					t.Errorf("cursor=%d: after %d frames: read = %v", cursor, len(seqs), err)
					return
				}
				seqs = append(seqs, ev.Seq)
				mu.Lock()
				progress[cursor] = ev.Seq
				moved.Broadcast()
				mu.Unlock()
			}
			wantRange(t, fmt.Sprintf("cursor=%d", cursor), seqs, cursor+1, total)
		})
	}
	writer.Wait()
	readers.Wait()
}

// TestFirehoseSlowConsumer: a client that stops reading is cut off with ConsumerTooSlow,
// while a healthy client gets every event and the sequencer never waits.
func TestFirehoseSlowConsumer(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.WindowEvents = 256
	// The slow client reads only after all chunks are sent; on a loaded machine that takes
	// longer than the default write timeout, which would close it before the error frame.
	// Pings come often: one queued behind the stalled batch would drop the client.
	h := start(t, openSeq(t, filepath.Join(t.TempDir(), "relay.sqlite"), cfg), func(fh *Firehose) {
		fh.writeTimeout, fh.pingInterval = 5*time.Minute, 200*time.Millisecond
	})
	slow := dial(t, h, "")
	healthy := dial(t, h, "")
	// Enough bytes to fill the slow client's socket buffers many times over.
	const chunks, perChunk, size = 16, 200, 8 << 10
	for k := range chunks {
		var wg sync.WaitGroup
		for i := range perChunk {
			wg.Go(func() {
				if _, err := h.seq.Submit(t.Context(), commitEvent("did:plc:a", k*perChunk+i, size)); err != nil {
					t.Errorf("Submit = %v", err)
				}
			})
		}
		wg.Wait()
		seqs := readSeqs(t, healthy, perChunk)
		wantRange(t, fmt.Sprintf("healthy chunk %d", k), seqs, int64(k*perChunk+1), int64((k+1)*perChunk))
	}
	// Now the slow client reads: some events, in order, then the error frame and a close.
	var last int64
	for {
		ev, err := readEvent(t, slow)
		var fe *FrameError
		if errors.As(err, &fe) {
			if fe.Name != "ConsumerTooSlow" {
				t.Fatalf("slow client got error frame %s, want ConsumerTooSlow", fe.Name)
			}
			break
		}
		if err != nil {
			t.Fatalf("slow client: read after seq %d = %v, want frames then ConsumerTooSlow", last, err)
		}
		if ev.Seq != last+1 {
			t.Fatalf("slow client: seq %d after %d", ev.Seq, last)
		}
		last = ev.Seq
	}
	if last >= chunks*perChunk {
		t.Errorf("slow client got all %d events; it was never behind", last)
	}
	if _, _, err := slow.Read(t.Context()); !isClosedWith(err, websocket.StatusPolicyViolation) {
		t.Errorf("after ConsumerTooSlow: Read = %v, want close 1008", err)
	}
}

// TestFirehoseShutdown: ending Run's context closes streams with 1001 Going Away and Run
// waits for them.
func TestFirehoseShutdown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	c := dial(t, h, "")
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.stop()
	}()
	if _, _, err := c.Read(t.Context()); !isClosedWith(err, websocket.StatusGoingAway) {
		t.Errorf("Read during shutdown = %v, want close 1001", err)
	}
	<-done
	resp, err := http.Get(h.srv.URL + "/xrpc/com.atproto.sync.subscribeRepos")
	if err == nil {
		resp.Body.Close()
		t.Errorf("GET after shutdown = %d, want a closed server", resp.StatusCode)
	}
}

func TestFirehoseNotRunning(t *testing.T) {
	t.Parallel()
	s := openSeq(t, t.TempDir()+"/relay.sqlite", testConfig())
	defer s.Close()
	rec := &recorder{header: http.Header{}}
	r, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "/xrpc/com.atproto.sync.subscribeRepos", nil)
	NewFirehose(s, LocalEvents, discardLog()).ServeHTTP(rec, r)
	if rec.status != http.StatusServiceUnavailable {
		t.Errorf("ServeHTTP before Run = %d, want 503", rec.status)
	}
}

type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(status int)      { r.status = status }

// TestFirehoseFrames reads each message type from a real WebSocket and decodes it with
// indigo's generated types, checking the fields consumers rely on.
func TestFirehoseFrames(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: testTime}
	s := openSeq(t, t.TempDir()+"/relay.sqlite", testConfig())
	s.now = clock.Now
	h := start(t, s)
	c := dial(t, h, "")
	sub, _ := s.Subscribe(Live) // sequenced after c's subscription, see TestFirehoseLiveOnly

	commit := commitEvent("did:plc:alice", 7, 100)
	commitBlock := []byte{0xa1, 0x61, 0x61, 0x01} // {"a": 1}
	syncEv, err := NewSync("did:plc:alice", "3jzfcijpj2z2a", cidOf(commitBlock), commitBlock)
	if err != nil {
		t.Fatalf("NewSync = %v", err)
	}
	for _, ev := range []*Event{
		NewIdentity("did:plc:alice", "alice.test"),
		NewAccount("did:plc:alice", false, "deactivated"),
		commit,
		syncEv,
	} {
		submit(t, s, ev)
	}
	for n := 0; n < 4; {
		evs, err := sub.Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		n += len(evs)
	}
	ts := "2026-06-01T00:00:00Z"
	handle, status := "alice.test", "deactivated"
	since := *commit.Commit.Since
	want := []*Event{
		{Identity: &comatproto.SyncSubscribeRepos_Identity{Did: "did:plc:alice", Handle: &handle, Seq: 1, Time: ts}},
		{Account: &comatproto.SyncSubscribeRepos_Account{Did: "did:plc:alice", Active: false, Status: &status, Seq: 2, Time: ts}},
		{Commit: &comatproto.SyncSubscribeRepos_Commit{
			Repo: "did:plc:alice", Rev: commit.Commit.Rev, Since: &since, Commit: commit.Commit.Commit,
			PrevData: commit.Commit.PrevData, Blocks: commit.Commit.Blocks, Ops: commit.Commit.Ops,
			Blobs: nil, Seq: 3, Time: ts,
		}},
		{Sync: &comatproto.SyncSubscribeRepos_Sync{Did: "did:plc:alice", Rev: "3jzfcijpj2z2a", Blocks: syncEv.Sync.Blocks, Seq: 4, Time: ts}},
	}
	for i, w := range want {
		typ, frame, err := c.Read(t.Context())
		if err != nil || typ != websocket.MessageBinary {
			t.Fatalf("frame %d: Read = %v, %v", i, typ, err)
		}
		got, err := DecodeFrame(frame)
		if err != nil {
			t.Fatalf("frame %d: DecodeFrame = %v", i, err)
		}
		if got.Seq != int64(i+1) || !got.Time.Equal(testTime) {
			t.Errorf("frame %d: seq %d time %v, want %d %v", i, got.Seq, got.Time, i+1, testTime)
		}
		if diff := cmp.Diff(bodies(w), bodies(got), linkEqual, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("frame %d (-want +got):\n%s", i, diff)
		}
		if got.Commit != nil {
			// Deprecated fields must be present on the wire, and since must be explicit.
			for _, key := range []string{"tooBig", "rebase", "blobs", "since", "prevData"} {
				if !bytes.Contains(frame, appendText(nil, key)) {
					t.Errorf("#commit frame lacks key %q", key)
				}
			}
			if got.Commit.TooBig || got.Commit.Rebase || len(got.Commit.Blobs) != 0 {
				t.Errorf("#commit tooBig, rebase, blobs = %v, %v, %v; want false, false, []", got.Commit.TooBig, got.Commit.Rebase, got.Commit.Blobs)
			}
		}
	}
}

// linkEqual compares CIDs by value; cid.Cid's unexported string defeats cmp.
var linkEqual = cmp.Comparer(func(a, b lexutil.LexLink) bool { return cid.Cid(a).Equals(cid.Cid(b)) })

// bodies returns an event's body pointers for cmp, leaving out the unexported frame.
func bodies(e *Event) []any {
	return []any{e.Commit, e.Identity, e.Account, e.Sync, e.Info}
}

func TestFirehoseMethodNotAllowed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig())
	resp, err := http.Post(h.srv.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d, want 405", resp.StatusCode)
	}
}

// TestFirehoseFrameLengths sends events whose frames need each WebSocket length encoding
// (7-bit, 16-bit, 64-bit), over plain TCP, where a batch goes out as one writev, and over
// TLS, where it is copied into one buffer, and reads them with coder/websocket.
func TestFirehoseFrameLengths(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		tls  bool
	}{{"tcp", false}, {"tls", true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testConfig())
			url, opts := h.srv.URL, (*websocket.DialOptions)(nil)
			if tt.tls {
				srv := httptest.NewTLSServer(h.fh)
				t.Cleanup(srv.Close)
				url, opts = srv.URL, &websocket.DialOptions{HTTPClient: srv.Client()}
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/xrpc/com.atproto.sync.subscribeRepos", opts)
			if err != nil {
				t.Fatalf("Dial = %v", err)
			}
			defer c.CloseNow()
			c.SetReadLimit(MaxFrameSize)
			sub, _ := h.seq.Subscribe(Live) // behind c's stream, see TestFirehoseLiveOnly

			evs := []*Event{
				NewIdentity("did:plc:a", "a.test"),         // under 126 bytes
				commitEvent("did:plc:a", 1, 300),           // 16-bit length
				commitEvent("did:plc:a", 2, 70_000),        // 64-bit length
				NewAccount("did:plc:a", true, ""),          // small again, in the same batch
				commitEvent("did:plc:a", 3, 65_535-64-300), // near the 16-bit limit
			}
			var wg sync.WaitGroup
			for _, ev := range evs {
				wg.Go(func() { submit(t, h.seq, ev) }) // concurrent, so several share a batch
			}
			wg.Wait()
			for n := 0; n < len(evs); {
				got, err := sub.Next(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				n += len(got)
			}
			for i := range evs {
				_, frame, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("frame %d: Read = %v", i, err)
				}
				ev, err := DecodeFrame(frame)
				if err != nil || ev.Seq != int64(i+1) {
					t.Fatalf("frame %d: DecodeFrame = seq %v, %v; want seq %d", i, ev, err, i+1)
				}
			}
		})
	}
}

// TestFlushClock: streams that ask for the next tick within one period share it, it comes
// the period after the first asked, and the next period starts only when asked for.
func TestFlushClock(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var c flushClock
		start := time.Now()
		first := c.next(50 * time.Millisecond)
		time.Sleep(20 * time.Millisecond)
		if second := c.next(10 * time.Millisecond); second != first {
			t.Error("next within a period returned a new channel, want the pending one")
		}
		<-first
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Errorf("tick after %v, want 50ms", d)
		}
		c.mu.Lock()
		idle := c.tick == nil
		c.mu.Unlock()
		if !idle {
			t.Error("a tick is pending after the period ended with no one asking")
		}
		next := c.next(10 * time.Millisecond)
		if next == first {
			t.Fatal("next after a tick returned the closed channel")
		}
		start = time.Now()
		<-next
		if d := time.Since(start); d != 10*time.Millisecond {
			t.Errorf("tick after %v, want 10ms", d)
		}
	})
}
