package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/aerie-social/aerie/repo"
)

// The W5 stream: hosts × accounts × commits single-post commits. 32,000 commits keep
// generation under the 30 s budget while a run lasts seconds, long enough that dialling
// and the first identity lookups are noise.
const (
	w5Hosts    = 4
	w5Accounts = 40
	w5Commits  = 200
)

// The host process is this test binary re-executed; these variables tell it what to serve.
const (
	// w5FramesEnv lists the frames files, one per host, joined by os.PathListSeparator.
	w5FramesEnv = "AERIE_W5_FRAMES"
	// w5PortsEnv is where the host process writes its hosts' addresses, one per line.
	w5PortsEnv = "AERIE_W5_PORTS"
	// w5Ready is the line the host process prints once the ports file is complete, so the
	// benchmark waits on a pipe rather than polling for the file.
	w5Ready = "w5 hosts ready"
)

// w5Account is one line of the keys file: what the crawler's identity directory needs.
type w5Account struct {
	Host int    `json:"host"`
	Key  string `json:"key"` // multibase public key
}

// w5Stream is the pre-generated input of the benchmark, as files in a temp dir.
type w5Stream struct {
	frames  []string // per host: frames, each prefixed by its length as a uint32
	keys    string   // JSON object: did → w5Account
	commits int
	dids    int
}

// BenchmarkW5RelayIngest is the W5 target: a synthetic multi-host commit stream served by
// a separate process, every commit verified (CAR, signature, MST inversion) and sequenced,
// at >= 5,000 commits/s on one core. Signature verification (~89 µs) is the floor.
// commits/s is wall time from the first requestCrawl to the last commit sequenced;
// cpu-µs/commit counts every thread of this process (crawler, sequencer, SQLite) but not
// the host process.
func BenchmarkW5RelayIngest(b *testing.B) {
	st := w5Generate(b, w5Hosts, w5Accounts, w5Commits)
	addrs := w5StartHosts(b, st)
	run := func(b *testing.B) {
		b.ReportAllocs()
		var wall, cpu time.Duration
		for b.Loop() {
			// The label separates ingest from generation in a -cpuprofile:
			// go tool pprof -tagfocus=w5=ingest.
			pprof.Do(context.Background(), pprof.Labels("w5", "ingest"), func(context.Context) {
				w, c := w5Ingest(b, st, addrs)
				wall += w
				cpu += c
			})
		}
		n := float64(b.N * st.commits)
		b.ReportMetric(n/wall.Seconds(), "commits/s")
		b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/commit")
	}
	b.Run("procs=1", func(b *testing.B) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		run(b)
	})
	if p := runtime.GOMAXPROCS(0); p > 1 {
		b.Run("procs="+strconv.Itoa(p), run)
	}
}

// TestW5HostProcess is the host side of BenchmarkW5RelayIngest, run in its own process so
// that serving frames costs the measured process nothing. Each host streams its frames
// file as fast as the crawler reads; the process exits when its stdin closes.
func TestW5HostProcess(t *testing.T) {
	files := os.Getenv(w5FramesEnv)
	if files == "" {
		t.Skip("host process of BenchmarkW5RelayIngest; only that benchmark starts it")
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var addrs []string
	for _, f := range filepath.SplitList(files) {
		frames, err := w5ReadFrames(f)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(w5HostHandler(ctx, frames))
		defer srv.Close()
		addrs = append(addrs, srv.Listener.Addr().String())
	}
	ports := os.Getenv(w5PortsEnv)
	if err := os.WriteFile(ports+".tmp", []byte(strings.Join(addrs, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(ports+".tmp", ports); err != nil {
		t.Fatal(err)
	}
	fmt.Println(w5Ready)
	io.Copy(io.Discard, os.Stdin)
	stop() // end the streams before srv.Close waits for them
}

// w5HostHandler serves a PDS's subscribeRepos from frames, whose seqs are 1, 2, …, and the
// describeServer that requestCrawl checks.
func w5HostHandler(ctx context.Context, frames [][]byte) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/xrpc/com.atproto.sync.subscribeRepos", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := c.CloseRead(ctx)
		cursor, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
		for _, f := range frames[min(max(cursor, 0), len(frames)):] {
			if err := c.Write(ctx, websocket.MessageBinary, f); err != nil {
				return
			}
		}
		<-ctx.Done() // a live host keeps the stream open; hanging up would make the crawler redial
	})
	mux.HandleFunc("/xrpc/com.atproto.server.describeServer", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"did":"did:web:w5.test","availableUserDomains":[]}`))
	})
	return mux
}

// w5Generate writes hosts × accounts × commits signed post commits, as repo.Store makes
// them, into frames files (accounts interleaved as on a live host), and the accounts'
// public keys into the keys file.
func w5Generate(b *testing.B, hosts, accounts, commits int) *w5Stream {
	b.Helper()
	start := time.Now()
	dir := b.TempDir()
	ctx := b.Context()
	st := &w5Stream{keys: filepath.Join(dir, "keys.json"), commits: hosts * accounts * commits, dids: hosts * accounts}
	keys := map[string]w5Account{}
	for h := range hosts {
		// A throwaway store: durability would only slow generation down.
		store, err := repo.Open(ctx, filepath.Join(dir, fmt.Sprintf("pds%d", h)), repo.StoreConfig{Synchronous: "OFF"}, discardLog())
		if err != nil {
			b.Fatal(err)
		}
		events := make([][]*repo.CommitEvent, accounts)
		var mu sync.Mutex
		var g errgroup.Group
		g.SetLimit(runtime.GOMAXPROCS(0))
		for a := range accounts {
			did := syntax.DID(fmt.Sprintf("did:plc:w5h%da%03d", h, a))
			g.Go(func() error {
				key, err := atcrypto.GeneratePrivateKeyK256()
				if err != nil {
					return err
				}
				if _, err := store.Create(ctx, did, key); err != nil {
					return err
				}
				pub, err := key.PublicKey()
				if err != nil {
					return err
				}
				mu.Lock()
				keys[did.String()] = w5Account{Host: h, Key: pub.Multibase()}
				mu.Unlock()
				rng := rand.New(rand.NewPCG(uint64(h), uint64(a)))
				for k := range commits {
					rec, err := repo.RecordFromJSON(w5Post(rng, k))
					if err != nil {
						return err
					}
					ce, err := store.ApplyWrites(ctx, did, []repo.Write{{Action: repo.ActionCreate, Collection: "app.bsky.feed.post", Record: rec}}, repo.WriteOpts{})
					if err != nil {
						return err
					}
					events[a] = append(events[a], ce)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatalf("generate host %d: %v", h, err)
		}
		if err := store.Close(); err != nil {
			b.Fatal(err)
		}
		f := filepath.Join(dir, fmt.Sprintf("host%d.frames", h))
		if err := w5WriteFrames(f, events, commits); err != nil {
			b.Fatal(err)
		}
		st.frames = append(st.frames, f)
	}
	kb, err := json.Marshal(keys)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(st.keys, kb, 0o600); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d commits from %d accounts on %d hosts in %s", st.commits, st.dids, hosts, time.Since(start).Round(time.Millisecond))
	return st
}

// w5Words make post texts of the length and variety of real ones, so record blocks and
// MST keys are not suspiciously uniform.
var w5Words = strings.Fields(`the a relay firehose commit today just shipped coffee morning
	thread reply federation network server friends photo weekend garden city train rain
	sunny reading writing music code bug fix release small web self-hosted atproto`)

func w5Post(rng *rand.Rand, k int) []byte {
	var text strings.Builder
	for range 8 + rng.IntN(30) {
		if text.Len() > 0 {
			text.WriteByte(' ')
		}
		text.WriteString(w5Words[rng.IntN(len(w5Words))])
	}
	created := testTime.Add(time.Duration(k) * time.Minute).Format(time.RFC3339)
	return fmt.Appendf(nil, `{"$type":"app.bsky.feed.post","text":%q,"langs":["en"],"createdAt":%q}`, text.String(), created)
}

// w5WriteFrames writes the commits of every account round-robin, as frames with seqs 1, 2, ….
func w5WriteFrames(path string, events [][]*repo.CommitEvent, commits int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	var seq int64
	for k := range commits {
		for _, evs := range events {
			ev := NewCommit(evs[k])
			seq++
			ev.setSeq(seq, time.Now())
			if err := ev.encode(); err != nil {
				f.Close()
				return err
			}
			w.Write(binary.BigEndian.AppendUint32(nil, uint32(len(ev.frame))))
			w.Write(ev.frame)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func w5ReadFrames(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var frames [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("%s: truncated length", path)
		}
		n := int(binary.BigEndian.Uint32(b))
		if len(b) < 4+n {
			return nil, fmt.Errorf("%s: truncated frame", path)
		}
		frames = append(frames, b[4:4+n])
		b = b[4+n:]
	}
	return frames, nil
}

// w5StartHosts starts the host process and returns its hosts' addresses, in frames order.
// The process lives until the benchmark ends.
func w5StartHosts(b *testing.B, st *w5Stream) []string {
	b.Helper()
	ports := filepath.Join(b.TempDir(), "ports")
	// No inherited flags: the host process must not profile itself or run benchmarks, and
	// it runs as long as the benchmark does.
	cmd := exec.Command(os.Args[0], "-test.run=^TestW5HostProcess$", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(),
		w5FramesEnv+"="+strings.Join(st.frames, string(os.PathListSeparator)),
		w5PortsEnv+"="+ports)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
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
		stdin.Close()
		io.Copy(io.Discard, stdout)
		if err := cmd.Wait(); err != nil {
			b.Errorf("host process: %v; stderr:\n%s", err, stderr.String())
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != w5Ready {
		b.Fatalf("host process did not start (%q, %v); stderr:\n%s", line, err, stderr.String())
	}
	raw, err := os.ReadFile(ports)
	if err != nil {
		b.Fatal(err)
	}
	addrs := strings.Split(string(raw), "\n")
	if len(addrs) != len(st.frames) {
		b.Fatalf("host process serves %d hosts, want %d", len(addrs), len(st.frames))
	}
	return addrs
}

// w5Ingest runs a fresh sequencer and full-mode crawler over the hosts until every commit
// is sequenced, and returns the wall and CPU time that took.
func w5Ingest(b *testing.B, st *w5Stream, addrs []string) (wall, cpu time.Duration) {
	b.Helper()
	cfg := DefaultConfig()
	cfg.Mode = ModeFull
	cfg.HostRate = 1_000_000 // the limiter must not be what is measured
	cfg.AllowPrivateNetwork = true

	raw, err := os.ReadFile(st.keys)
	if err != nil {
		b.Fatal(err)
	}
	var keys map[string]w5Account
	if err := json.Unmarshal(raw, &keys); err != nil {
		b.Fatal(err)
	}
	ids := &fakeIdentities{}
	for did, acct := range keys {
		pub, err := atcrypto.ParsePublicMultibase(acct.Key)
		if err != nil {
			b.Fatal(err)
		}
		ids.set(syntax.DID(did), pub, "http://"+addrs[acct.Host])
	}

	// Logged as a node logs (JSON at Info), so the cost of building loggers is counted.
	logs := &w5LogBuffer{}
	seq := openSeq(b, filepath.Join(b.TempDir(), "relay.sqlite"), cfg)
	crawler := NewCrawler(seq, cfg, CrawlerDeps{
		Identities: ids,
		HTTP:       http.DefaultClient,
		IsLocal:    func(string) bool { return false },
		Backfill: func(context.Context, syntax.DID, int64, *repo.VerifiedRepo) error {
			return nil
		},
	}, slog.New(slog.NewJSONHandler(logs, nil)))
	sub, err := seq.Subscribe(0)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { seq.Run(ctx) })
	wg.Go(func() { crawler.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
		if err := seq.Close(); err != nil {
			b.Error(err)
		}
	}()

	cpu0 := w5CPU()
	start := time.Now()
	for _, a := range addrs {
		if err := crawler.RequestCrawl(ctx, a); err != nil {
			b.Fatalf("RequestCrawl(%s) = %v", a, err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer wcancel()
	commits := 0
	for commits < st.commits {
		evs, err := sub.Next(wctx)
		if err != nil {
			// A stall is more likely a deadlock than a slow host: show where.
			var stacks bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			b.Fatalf("after %d of %d commits (last seq %d): Next = %v; log:\n%s\ngoroutines:\n%s", commits, st.commits, seq.LastSeq(), err, logs.tail(4096), stacks.String())
		}
		for _, ev := range evs {
			if ev.Commit != nil {
				commits++
			}
		}
	}
	wall = time.Since(start)
	cpu = w5CPU() - cpu0
	if n := logs.count(`"level":"WARN"`); n > 0 {
		b.Errorf("%d warnings while ingesting; log:\n%s", n, logs.tail(4096))
	}
	return wall, cpu
}

// w5CPU returns the user and system CPU time of this process.
func w5CPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// w5LogBuffer keeps the crawler's log lines for a failure message. Only lifecycle lines
// and rejections reach it at Info, so it stays small when all is well.
type w5LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *w5LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *w5LogBuffer) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Count(l.buf.Bytes(), []byte(substr))
}

func (l *w5LogBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf.Bytes()
	return string(b[max(0, len(b)-n):])
}
