package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSubmit measures one submitter waiting for each event: one transaction per event.
func BenchmarkSubmit(b *testing.B) {
	h := start(b, openSeq(b, filepath.Join(b.TempDir(), "relay.sqlite"), DefaultConfig()))
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		submit(b, h.seq, commitEvent("did:plc:bench", i, 400))
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkSubmitConcurrent measures many writers at once, which the sequencer batches into
// shared transactions. b.Loop has no parallel form, so each iteration is a burst of
// `writers` concurrent submits.
func BenchmarkSubmitConcurrent(b *testing.B) {
	for _, writers := range []int{16, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			h := start(b, openSeq(b, filepath.Join(b.TempDir(), "relay.sqlite"), DefaultConfig()))
			b.ReportAllocs()
			for b.Loop() {
				var wg sync.WaitGroup
				for w := range writers {
					wg.Go(func() {
						if _, err := h.seq.Submit(context.Background(), commitEvent("did:plc:bench", w, 400)); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.N*writers)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkFanout streams ~500-byte events to N WebSocket subscribers at a paced rate
// (eventsPerTick every tick) and reports delivered events/s and the p99 lag from
// sequencing to a client reading the frame. Each iteration is one tick.
func BenchmarkFanout(b *testing.B) {
	for _, tc := range []struct{ subs, rate int }{{100, 2000}, {1000, 2000}, {1000, 5000}} {
		b.Run(fmt.Sprintf("subs=%d/rate=%d", tc.subs, tc.rate), func(b *testing.B) {
			benchFanout(b, tc.subs, tc.rate)
		})
	}
}

func benchFanout(b *testing.B, subs, rate int) {
	const tick = 10 * time.Millisecond
	perTick := rate / int(time.Second/tick)
	cfg := DefaultConfig()
	h := start(b, openSeq(b, filepath.Join(b.TempDir(), "relay.sqlite"), cfg))

	// Every client is live from seq 1, so its k-th frame is seq k: lag needs no decoding.
	recv := make([][]time.Time, subs)
	counts := make([]atomic.Int64, subs)
	progress := make(chan struct{}, 1)
	var readers sync.WaitGroup
	conns := make([]net.Conn, subs)
	for i := range subs {
		conns[i] = rawDial(b, h)
	}
	sub, _ := h.seq.Subscribe(Live) // behind every stream's subscription
	for i, c := range conns {
		readers.Go(func() {
			rawRead(c, func(frames int, at time.Time) {
				for range frames {
					recv[i] = append(recv[i], at)
				}
				counts[i].Add(int64(frames))
				select {
				case progress <- struct{}{}:
				default:
				}
			})
		})
	}

	var sent []time.Time // sequencing time of seq k+1
	var mu sync.Mutex
	t := time.NewTicker(tick)
	defer t.Stop()
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		<-t.C
		var wg sync.WaitGroup
		for range perTick {
			ev := commitEvent("did:plc:bench", n, 380) // ~500-byte frame
			n++
			wg.Go(func() {
				seq, err := h.seq.Submit(context.Background(), ev)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				for int64(len(sent)) < seq {
					sent = append(sent, time.Time{})
				}
				sent[seq-1] = ev.Time
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	// Wait for the in-process subscription to see everything, then for the clients.
	for got := 0; got < n; {
		evs, err := sub.Next(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		got += len(evs)
	}
	timeout := time.After(30 * time.Second)
wait:
	for {
		done := true
		for i := range counts {
			if counts[i].Load() < int64(n) {
				done = false
				break
			}
		}
		if done {
			break
		}
		select {
		case <-progress:
		case <-timeout:
			break wait
		}
	}
	elapsed := b.Elapsed()
	for _, c := range conns {
		c.Close()
	}
	readers.Wait()
	var lags []time.Duration
	delivered := 0
	for i := range recv {
		delivered += len(recv[i])
		for k, at := range recv[i] {
			if k < len(sent) {
				lags = append(lags, at.Sub(sent[k]))
			}
		}
	}
	slices.Sort(lags)
	if len(lags) > 0 {
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "p99-lag-ms")
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-lag-ms")
	}
	b.ReportMetric(float64(delivered)/elapsed.Seconds(), "delivered/s")
	b.ReportMetric(float64(delivered)/float64(n*subs), "delivered-fraction")
}

// rawDial opens a firehose WebSocket by hand. The fan-out benchmark runs a thousand clients
// in the same process on the same cores as the server, so the clients must cost far less
// than coder/websocket's per-message reader: they read 64 KiB at a time and only count
// frames (server frames are unmasked, so a header is 2, 4 or 10 bytes).
func rawDial(b *testing.B, h *harness) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		b.Fatal(err)
	}
	req := "GET /xrpc/com.atproto.sync.subscribeRepos HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" +
		"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		b.Fatal(err)
	}
	// Read the 101 response byte by byte so no frame bytes are consumed.
	var resp []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		if _, err := c.Read(one); err != nil {
			b.Fatalf("handshake: %v", err)
		}
		resp = append(resp, one[0])
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
		b.Fatalf("handshake: %q", resp)
	}
	return c
}

// rawRead counts whole binary frames until the connection fails, calling seen with the
// number completed by each read.
func rawRead(c net.Conn, seen func(frames int, at time.Time)) {
	buf := make([]byte, 0, 1<<20)
	chunk := make([]byte, 64<<10)
	for {
		n, err := c.Read(chunk)
		if err != nil {
			return
		}
		at := time.Now()
		buf = append(buf, chunk[:n]...)
		frames := 0
	parse:
		for len(buf) >= 2 {
			hdr, size := 2, uint64(buf[1]&0x7f)
			switch size {
			case 126:
				hdr = 4
				if len(buf) < hdr {
					break parse
				}
				size = uint64(binary.BigEndian.Uint16(buf[2:]))
			case 127:
				hdr = 10
				if len(buf) < hdr {
					break parse
				}
				size = binary.BigEndian.Uint64(buf[2:])
			}
			if uint64(len(buf)) < uint64(hdr)+size {
				break parse
			}
			if buf[0]&0x0f == 2 { // binary: an event (pings are opcode 9)
				frames++
			}
			buf = buf[uint64(hdr)+size:]
		}
		buf = append(buf[:0:0], buf...)
		if frames > 0 {
			seen(frames, at)
		}
	}
}
