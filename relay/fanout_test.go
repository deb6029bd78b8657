//go:build unix

package relay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// The fan-out benchmark runs its WebSocket clients in a child process (this test binary run
// again as TestFanoutClientProcess), so that the server's CPU, scheduler and GC are measured
// apart from the clients', and lag is what a remote consumer would see. The two talk over
// the child's stdin and stdout, one line per message.
const (
	fanoutAddrEnv = "AERIE_FANOUT_ADDR"
	fanoutSubsEnv = "AERIE_FANOUT_SUBS"
	// fanoutPrefix marks the child's protocol lines among what the test framework prints.
	fanoutPrefix = "fanout: "
	// fanoutTick paces the load: rate/100 events are submitted together every tick, like
	// many writers whose commits the sequencer batches.
	fanoutTick = 10 * time.Millisecond
	// slowReadBytes and slowReadEvery make the slow client read about 40 KB/s, a twenty-fifth of
	// the stream at 2,000 events/s: it falls behind steadily without ever stalling a
	// write for long.
	slowReadBytes = 4 << 10
	slowReadEvery = 100 * time.Millisecond
	// fanoutReadBuffer holds a whole batch write of the server (about 100 events every
	// 50 ms), so a client takes each in one read(2) rather than two or three.
	fanoutReadBuffer = 64 << 10
)

// BenchmarkFanout is workload W4: ~500-byte events at 2,000/s to N healthy WebSocket clients
// plus one slow client, all in a separate process. It reports the event→delivery lag
// (receive time minus the sequencing time in the frame's time field, which has millisecond
// precision, so lags read up to 1 ms high; percentiles come from buckets 3% wide),
// delivered events/s, the fraction of events every healthy client got in order, the CPU
// cores used by the server and the client process, the server's CPU time per delivered
// event, and whether the slow client was cut off with ConsumerTooSlow. Each iteration is
// one 10 ms tick: run it with -benchtime 20s so that the slow client falls off the default
// 16,384-event window (about 8 s of events, plus what the socket buffers hold).
func BenchmarkFanout(b *testing.B) {
	for _, tc := range []struct{ subs, rate int }{{100, 2000}, {1000, 2000}} {
		b.Run(fmt.Sprintf("subs=%d/rate=%d", tc.subs, tc.rate), func(b *testing.B) {
			benchFanout(b, tc.subs, tc.rate)
		})
	}
}

func benchFanout(b *testing.B, subs, rate int) {
	perTick := rate / int(time.Second/fanoutTick)
	var warm int // events submitted before the measured load
	// The slow client holds a batch write for seconds on purpose; the default write
	// timeout, or a ping's pong timeout, would drop it before it can be told ConsumerTooSlow.
	h := start(b, openSeq(b, filepath.Join(b.TempDir(), "relay.sqlite"), DefaultConfig()),
		func(fh *Firehose) { fh.writeTimeout, fh.pingInterval = 5*time.Minute, 5*time.Minute })

	cmd := exec.Command(os.Args[0], "-test.run=^TestFanoutClientProcess$")
	cmd.Env = append(os.Environ(), fanoutAddrEnv+"="+strings.TrimPrefix(h.srv.URL, "http://"),
		fanoutSubsEnv+"="+strconv.Itoa(subs))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill() // a no-op once it has exited
		cmd.Wait()
	})
	msgs := make(chan string, 4)
	go func() { // ends when the child's stdout closes, which Cleanup guarantees
		defer close(msgs)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if m, ok := strings.CutPrefix(sc.Text(), fanoutPrefix); ok {
				msgs <- m
			}
		}
	}()
	expect := func(what string) string {
		m, ok := <-msgs
		if !ok || !strings.HasPrefix(m, what) {
			b.Fatalf("client process said %q, want %q", m, what)
		}
		return strings.TrimPrefix(m, what)
	}

	// The load is open-loop, like independent writers: a tick does not wait for the
	// previous one's events to be sequenced, and a late tick catches up on the events due
	// by then, so the offered rate stays at rate whatever the scheduler does to this
	// goroutine; only Submit pushing back lowers it.
	n := 0
	var submits sync.WaitGroup
	defer submits.Wait()
	var began time.Time
	tick := func() {
		due := perTick
		if !began.IsZero() {
			due = int(time.Since(began)*time.Duration(rate)/time.Second) - (n - warm)
		}
		for range due {
			ev := commitEvent("did:plc:bench", n, 380) // a ~500-byte frame
			n++
			submits.Go(func() {
				if _, err := h.seq.Submit(b.Context(), ev); err != nil {
					b.Error(err)
				}
			})
		}
	}
	// Streams subscribe just after the upgrade, so load flows until every client has seen
	// an event; only events after that are measured.
	expect("dialed")
	t := time.NewTicker(fanoutTick)
	defer t.Stop()
warmup:
	for {
		select {
		case m := <-msgs:
			if m != "live" {
				b.Fatalf("client process said %q, want live", m)
			}
			break warmup
		case <-t.C:
			tick()
		}
	}
	// Warm-up events still being submitted would be sequenced after from is read, and a
	// client could get one before it is told from: it would not count it, and look
	// incomplete.
	submits.Wait()
	from := h.seq.LastSeq() + 1
	fmt.Fprintf(stdin, "from %d\n", from)
	expect("from")

	cpu0 := selfCPU()
	warm = n
	began = time.Now()
	b.ReportAllocs()
	for b.Loop() {
		<-t.C
		tick()
	}
	submits.Wait()
	elapsed := time.Since(began)
	serverCPU := selfCPU() - cpu0
	until := h.seq.LastSeq()
	fmt.Fprintf(stdin, "until %d\n", until)
	var res fanoutResult
	if err := json.Unmarshal([]byte(expect("result ")), &res); err != nil {
		b.Fatal(err)
	}
	stdin.Close()

	events := until - from + 1
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(res.Frames)/elapsed.Seconds(), "delivered/s")
	b.ReportMetric(float64(res.Frames)/float64(events*int64(subs)), "delivered-fraction")
	b.ReportMetric(float64(res.Complete)/float64(subs), "complete-fraction")
	b.ReportMetric(lagPercentile(res.Lag, 0.50), "p50-lag-ms")
	b.ReportMetric(lagPercentile(res.Lag, 0.99), "p99-lag-ms")
	b.ReportMetric(lagPercentile(res.Lag, 1), "max-lag-ms")
	b.ReportMetric(serverCPU.Seconds()/elapsed.Seconds(), "server-cores")
	b.ReportMetric(res.CPU.Seconds()/elapsed.Seconds(), "client-cores")
	// CPU per delivered event depends far less than lag on what else the machine runs.
	b.ReportMetric(float64(serverCPU.Nanoseconds())/float64(max(res.Frames, 1)), "server-ns/delivered")
	cut := 0.0
	if res.SlowCutOff {
		cut = 1
	}
	b.ReportMetric(cut, "slow-cut-off")
	if res.Disorder > 0 {
		b.Errorf("healthy clients saw %d gaps or duplicates", res.Disorder)
	}
}

// fanoutResult is what the client process reports at the end.
type fanoutResult struct {
	Complete   int           // healthy clients that got every measured event, in order
	Frames     int64         // measured events delivered to healthy clients
	Disorder   int64         // gaps and duplicates seen by healthy clients
	Lag        []int64       // histogram of measured lags, see lagBucket
	CPU        time.Duration // the client process's CPU time while measuring
	SlowFrames int64         // events the slow client read
	SlowCutOff bool          // the slow client got ConsumerTooSlow
	SlowEnd    string        // how the slow client's stream ended
}

// lagBuckets covers lags up to 2^31 µs (35 minutes) in 32 buckets per power of two.
const lagBuckets = 64 + 26*32

// lagBucket maps a lag in µs to a bucket at most 1/32 wide relative to its lower bound.
func lagBucket(us int64) int {
	if us < 64 {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 6
	return min(e*32+int(us>>e), lagBuckets-1)
}

// lagBucketFloor is the smallest lag in µs that falls in bucket i.
func lagBucketFloor(i int) int64 {
	if i < 64 {
		return int64(i)
	}
	e := i/32 - 1
	return int64(i-e*32) << e
}

// lagPercentile returns the lag in ms below which fraction q of the counted events fell.
func lagPercentile(hist []int64, q float64) float64 {
	var total int64
	for _, c := range hist {
		total += c
	}
	if total == 0 {
		return 0
	}
	want := int64(float64(total)*q + 0.5)
	var seen int64
	for i, c := range hist {
		seen += c
		if seen >= max(want, 1) {
			return float64(lagBucketFloor(i)) / 1000
		}
	}
	return float64(lagBucketFloor(len(hist)-1)) / 1000
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFanoutClientProcess is the client side of BenchmarkFanout; run directly it does nothing.
func TestFanoutClientProcess(t *testing.T) {
	addr := os.Getenv(fanoutAddrEnv)
	if addr == "" {
		t.Skip("the client process of BenchmarkFanout")
	}
	subs, err := strconv.Atoi(os.Getenv(fanoutSubsEnv))
	if err != nil {
		t.Fatal(err)
	}
	say := func(format string, args ...any) { fmt.Printf(fanoutPrefix+format+"\n", args...) }

	var from atomic.Int64
	from.Store(1 << 62) // nothing is measured before the parent says from where
	clients := make([]*fanoutClient, subs+1)
	for i := range clients {
		clients[i] = &fanoutClient{conn: wsDial(t, addr), from: &from}
	}
	healthy, slow := clients[:subs], clients[subs]
	// A small receive buffer makes the slow client's lag reach the server quickly.
	slow.conn.(*net.TCPConn).SetReadBuffer(16 << 10)
	say("dialed")

	var wg sync.WaitGroup
	for _, c := range healthy {
		wg.Go(func() { c.run(nil) })
	}
	stopTrickle := make(chan struct{})
	var slowDone sync.WaitGroup
	slowDone.Go(func() { slow.run(stopTrickle) })

	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	waitAll := func(cond func(*fanoutClient) bool, limit time.Duration) bool {
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			all := true
			for _, c := range healthy {
				all = all && cond(c)
			}
			if all {
				return true
			}
			<-poll.C
		}
		return false
	}
	if !waitAll(func(c *fanoutClient) bool { return c.last.Load() > 0 }, time.Minute) {
		t.Fatal("some clients never received an event")
	}
	say("live")

	in := bufio.NewScanner(os.Stdin)
	var cpu0 time.Duration
	var until int64
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		seq, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", in.Text())
		}
		if cmd == "from" {
			from.Store(seq)
			cpu0 = selfCPU()
			say("from")
			continue
		}
		until = seq
		break
	}
	// A healthy client that is still behind after a while has lost events.
	waitAll(func(c *fanoutClient) bool { return c.last.Load() >= until }, 30*time.Second)
	cpu := selfCPU() - cpu0
	for _, c := range healthy {
		c.conn.Close()
	}
	wg.Wait()
	// The slow client now reads all it was sent, which ends with ConsumerTooSlow if the
	// server cut it off.
	close(stopTrickle)
	slow.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	slowDone.Wait()

	res := fanoutResult{Lag: make([]int64, lagBuckets), CPU: cpu, SlowFrames: slow.frames,
		SlowCutOff: slow.errName == "ConsumerTooSlow", SlowEnd: slow.end}
	for _, c := range healthy {
		if c.first == from.Load() && c.last.Load() == until && c.disorder == 0 {
			res.Complete++
		}
		res.Frames += c.counted
		res.Disorder += c.disorder
		for i, n := range c.lag {
			res.Lag[i] += n
		}
	}
	out, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	say("result %s", out)
}

// fanoutClient reads one firehose stream as cheaply as it can: a raw WebSocket over TCP,
// frames parsed in place, and only the body's seq and time decoded.
type fanoutClient struct {
	conn net.Conn
	from *atomic.Int64

	last     atomic.Int64 // seq of the newest event read
	next     int64        // the seq expected next, 0 before the first
	first    int64        // the first measured seq
	counted  int64        // measured events
	frames   int64        // all events
	disorder int64
	lag      [lagBuckets]int64
	errName  string // the error frame that ended the stream
	end      string

	// The sequencer stamps a whole batch with one time, so the last parse is reused.
	ts     []byte
	tsTime time.Time
}

// commitHeader is the header of every frame the benchmark sends.
var commitHeader = appendMessageHeader(nil, KindCommit)

// run reads until the connection ends. With trickle set it reads slowReadBytes every
// slowReadEvery until trickle is closed, then as fast as it can.
func (c *fanoutClient) run(trickle <-chan struct{}) {
	buf := make([]byte, fanoutReadBuffer)
	held := 0
	var pace *time.Ticker
	if trickle != nil {
		pace = time.NewTicker(slowReadEvery)
		defer pace.Stop()
	}
	for {
		want := len(buf)
		if pace != nil {
			select {
			case <-pace.C:
				want = min(len(buf), held+slowReadBytes)
			case <-trickle:
				pace = nil
			}
		}
		n, err := c.conn.Read(buf[held:want])
		if err != nil {
			c.end = err.Error()
			return
		}
		at := time.Now()
		held += n
		p := buf[:held]
		for {
			payload, opcode, size := wsFrameAt(p)
			if size == 0 {
				break
			}
			p = p[size:]
			switch opcode {
			case 2: // binary
				if err := c.event(payload, at); err != nil {
					c.end = err.Error()
					return
				}
			case 8: // close
				c.end = fmt.Sprintf("close frame % x", payload)
				return
			}
		}
		held = copy(buf, p)
		if held == len(buf) { // one frame bigger than the buffer
			buf = append(buf, make([]byte, len(buf))...)
		}
	}
}

// wsFrameAt returns the first whole WebSocket frame in p (server frames are unmasked), or
// size 0 when p does not hold one yet.
func wsFrameAt(p []byte) (payload []byte, opcode byte, size int) {
	if len(p) < 2 {
		return nil, 0, 0
	}
	hdr, n := 2, uint64(p[1]&0x7f)
	switch n {
	case 126:
		if hdr = 4; len(p) < hdr {
			return nil, 0, 0
		}
		n = uint64(binary.BigEndian.Uint16(p[2:]))
	case 127:
		if hdr = 10; len(p) < hdr {
			return nil, 0, 0
		}
		n = binary.BigEndian.Uint64(p[2:])
	}
	if uint64(len(p)-hdr) < n {
		return nil, 0, 0
	}
	return p[hdr : hdr+int(n)], p[0] & 0x0f, hdr + int(n)
}

// event checks one event frame's seq and records its lag.
func (c *fanoutClient) event(frame []byte, at time.Time) error {
	body, ok := bytes.CutPrefix(frame, commitHeader)
	if !ok {
		_, err := DecodeFrame(frame)
		if fe := (*FrameError)(nil); errors.As(err, &fe) {
			c.errName = fe.Name
			return nil
		}
		return fmt.Errorf("unexpected frame: %w", err)
	}
	seq, ts, err := seqAndTime(body)
	if err != nil {
		return err
	}
	c.frames++
	if c.next != 0 && seq != c.next {
		c.disorder++
	}
	c.next = seq + 1
	c.last.Store(seq)
	if seq < c.from.Load() {
		return nil
	}
	if c.counted == 0 {
		c.first = seq
	}
	c.counted++
	if !bytes.Equal(ts, c.ts) {
		t, err := time.Parse(syntax.AtprotoDatetimeLayout, string(ts))
		if err != nil {
			return fmt.Errorf("seq %d: %w", seq, err)
		}
		c.ts, c.tsTime = append(c.ts[:0], ts...), t
	}
	c.lag[lagBucket(at.Sub(c.tsTime).Microseconds())]++
	return nil
}

// seqAndTime walks a #commit body map for its seq and time without allocating. DAG-CBOR
// orders keys by length first, so both come before the large blocks field.
func seqAndTime(body []byte) (int64, []byte, error) {
	major, n, i, ok := cborHead(body, 0)
	if !ok || major != majMap {
		return 0, nil, errors.New("body is not a map")
	}
	var seq int64
	var ts []byte
	for range n {
		major, kn, k, ok := cborHead(body, i)
		if !ok || major != majText || kn > uint64(len(body)-k) {
			return 0, nil, errors.New("bad body key")
		}
		key := body[k : k+int(kn)]
		i = k + int(kn)
		switch string(key) {
		case "seq":
			major, v, j, ok := cborHead(body, i)
			if !ok || major != majUint {
				return 0, nil, errors.New("bad seq")
			}
			seq, i = int64(v), j
		case "time":
			major, tn, j, ok := cborHead(body, i)
			if !ok || major != majText || tn > uint64(len(body)-j) {
				return 0, nil, errors.New("bad time")
			}
			ts, i = body[j:j+int(tn)], j+int(tn)
		default:
			if i, ok = skipItem(body, i); !ok {
				return 0, nil, errors.New("bad body value")
			}
		}
		if seq != 0 && ts != nil {
			return seq, ts, nil
		}
	}
	return 0, nil, errors.New("body lacks seq or time")
}

// cborHead reads the CBOR item head at b[i:]: major type, argument, and the index after the
// head. It is readHead by index, for the client's per-event walk.
func cborHead(b []byte, i int) (major byte, n uint64, next int, ok bool) {
	if i >= len(b) {
		return 0, 0, 0, false
	}
	major, info := b[i]>>5, b[i]&0x1f
	rest := b[i+1:]
	switch {
	case info < 24:
		return major, uint64(info), i + 1, true
	case info == 24 && len(rest) >= 1:
		return major, uint64(rest[0]), i + 2, true
	case info == 25 && len(rest) >= 2:
		return major, uint64(binary.BigEndian.Uint16(rest)), i + 3, true
	case info == 26 && len(rest) >= 4:
		return major, uint64(binary.BigEndian.Uint32(rest)), i + 5, true
	case info == 27 && len(rest) >= 8:
		return major, binary.BigEndian.Uint64(rest), i + 9, true
	}
	return 0, 0, 0, false
}

// skipItem returns the index after the whole CBOR item at b[i:], walking nested items
// with a count of those still to skip rather than recursion.
func skipItem(b []byte, i int) (int, bool) {
	for pending := uint64(1); pending > 0; pending-- {
		major, n, j, ok := cborHead(b, i)
		if !ok || n > uint64(len(b)) { // no item holds more than the frame's bytes
			return 0, false
		}
		switch major {
		case majBytes, majText:
			if n > uint64(len(b)-j) {
				return 0, false
			}
			j += int(n)
		case majArray:
			pending += n
		case majMap:
			pending += 2 * n
		case majTag:
			pending++
		}
		i = j
	}
	return i, true
}

// wsDial opens a firehose WebSocket by hand, reading the 101 response byte by byte so
// that no frame bytes are consumed.
func wsDial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	req := "GET /xrpc/com.atproto.sync.subscribeRepos HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" +
		"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var resp []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		resp = append(resp, one[0])
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
		t.Fatalf("handshake: %q", resp)
	}
	return c
}

// TestFanoutClientParse checks the benchmark client's frame walk against DecodeFrame, so
// that its order and lag figures rest on the real seq and time, and that every truncation
// of a frame is an error rather than a panic or a wrong answer.
func TestFanoutClientParse(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 20, 380, 70_000} {
		ev := sequenced(t, commitEvent("did:plc:a", size, size), int64(size)+1)
		want, err := DecodeFrame(ev.frame)
		if err != nil {
			t.Fatal(err)
		}
		body, ok := bytes.CutPrefix(ev.frame, commitHeader)
		if !ok {
			t.Fatalf("size %d: frame lacks the #commit header", size)
		}
		seq, ts, err := seqAndTime(body)
		if err != nil || seq != want.Seq || string(ts) != want.Commit.Time {
			t.Errorf("seqAndTime(size %d) = %d, %q, %v; want %d, %q", size, seq, ts, err, want.Seq, want.Commit.Time)
		}
		// Cut before the time string ends: everything shorter must fail.
		end := bytes.Index(body, []byte(want.Commit.Time)) + len(want.Commit.Time)
		for n := range end {
			if _, _, err := seqAndTime(body[:n]); err == nil {
				t.Errorf("seqAndTime(size %d, first %d of %d bytes) = nil error", size, n, end)
				break
			}
		}
	}
}
