package appview

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/relay"
)

// openBenchIndex opens a fresh index in dir, keeping notifications for the accounts
// hosted reports (every account when nil).
func openBenchIndex(tb testing.TB, dir string, hosted func(string) bool) *AppView {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.PublicURL = "https://pds.test"
	cfg.Hosted = hosted
	a, err := Open(context.Background(), filepath.Join(dir, "index.sqlite"), cfg, discardLog())
	if err != nil {
		tb.Fatalf("Open = %v", err)
	}
	// As Run does, checkpoint beside the writer; the benchmarks call apply directly.
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.db.RunCheckpoints(ctx, checkpointInterval) }()
	tb.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			tb.Errorf("RunCheckpoints = %v", err)
		}
	})
	return a
}

// ingest applies evs in batches as Run does.
func ingest(tb testing.TB, a *AppView, evs []*relay.Event) {
	tb.Helper()
	for len(evs) > 0 {
		n := min(len(evs), 1024)
		if err := a.apply(context.Background(), evs[:n]); err != nil {
			tb.Fatalf("apply = %v", err)
		}
		evs = evs[n:]
	}
}

// cpuTime returns the CPU time (user + system) the process has used: on a shared machine
// it moves far less with the load than wall time does.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIndexerIngest measures indexer throughput: one op is one batch of 1024 events
// of the synthetic network (follows, posts, replies, quotes, likes, reposts) applied in
// one index transaction, as Run does. cpu-µs/event counts every thread of the process
// while apply runs (SQLite, GC).
func BenchmarkIndexerIngest(b *testing.B) {
	cfg := benchGenConfig()
	cfg.posts = min(cfg.posts, 20_000)
	g := newGenerator(cfg)
	evs := g.network()
	const batch = 1024
	a := openBenchIndex(b, b.TempDir(), g.hosted())
	defer func() { a.Close() }()
	pos, events := 0, 0
	// busy is the time spent in apply only: reopening a fresh index when the network
	// runs out (and its closing checkpoint) is not ingest.
	var busy, cpu time.Duration
	b.ReportAllocs()
	for b.Loop() {
		if pos >= len(evs) {
			b.StopTimer()
			a.Close()
			a = openBenchIndex(b, b.TempDir(), g.hosted())
			pos = 0
			b.StartTimer()
		}
		n := min(batch, len(evs)-pos)
		start, cpu0 := time.Now(), cpuTime()
		if err := a.apply(context.Background(), evs[pos:pos+n]); err != nil {
			b.Fatal(err)
		}
		busy += time.Since(start)
		cpu += cpuTime() - cpu0
		pos += n
		events += n
	}
	b.ReportMetric(float64(events)/busy.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(events), "cpu-µs/event")
}

// BenchmarkIndexerIngestSeeded measures the indexer's steady state at the network's size:
// catching up on a stream of further events (network's mix of kinds: generator.more) into
// a copy of the seeded index, in batches as Run applies them. An index that starts empty,
// as in BenchmarkIndexerIngest and seeding, is faster to write than a big one whose
// B-trees no longer fit in the page cache. seededWarmBatches are applied first, untimed,
// as a running node has its caches filled. Each op is one batch of 1024 events.
func BenchmarkIndexerIngestSeeded(b *testing.B) {
	src, _ := seededIndex(b)
	dir := b.TempDir()
	if err := copyFile(filepath.Join(src, "index.sqlite"), filepath.Join(dir, "index.sqlite")); err != nil {
		b.Fatal(err)
	}
	g := newGenerator(benchGenConfig())
	a := openBenchIndex(b, dir, g.hosted())
	defer func() { a.Close() }()
	const batch = 1024
	g.seq = a.cursor.Load()
	ingest(b, a, g.more(batch*seededWarmBatches))
	var busy, cpu time.Duration
	events := 0
	for b.Loop() {
		b.StopTimer()
		evs := g.more(batch)
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		if err := a.apply(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
		busy += time.Since(start)
		cpu += cpuTime() - cpu0
		events += len(evs)
	}
	b.ReportMetric(float64(events)/busy.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(events), "cpu-µs/event")
}

// seededWarmBatches is how many batches BenchmarkIndexerIngestSeeded applies before it
// measures: at 1M posts, the rate rose over the first hundred and was flat after.
const seededWarmBatches = 100

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	// On disk before the clock starts: writing the copy back is not the indexer's work.
	if err := dst.Sync(); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// BenchmarkIndexOnePost measures the indexer's share of a local createRecord: the index
// already holds the synthetic network's follows and some posts, and each op applies one
// #commit creating one post in its own transaction, as Run does when writes come one at
// a time.
func BenchmarkIndexOnePost(b *testing.B) {
	cfg := benchGenConfig()
	cfg.posts = min(cfg.posts, 20_000)
	g := newGenerator(cfg)
	evs := g.network()
	a := openBenchIndex(b, b.TempDir(), g.hosted())
	defer func() { a.Close() }()
	ingest(b, a, evs)
	t := g.start.Add(31 * 24 * time.Hour)
	var cpu time.Duration
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		t = t.Add(time.Second)
		did := g.dids[g.rng.IntN(len(g.dids))]
		ev, p := g.commit(did, colPost, map[string]any{"text": "one more post about topic7", "langs": []any{"en"}}, t)
		g.posts = append(g.posts, p)
		b.StartTimer()
		cpu0 := cpuTime()
		if err := a.apply(context.Background(), []*relay.Event{ev}); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - cpu0
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}

// benchIndexDirEnv names a directory that keeps the seeded index between runs: seeding the
// full-size network takes over twenty minutes, and profiling getTimeline needs many runs.
const benchIndexDirEnv = "AERIE_BENCH_INDEX_DIR"

// seededIndex builds (once per process run of the benchmark, or once per network size in
// $AERIE_BENCH_INDEX_DIR) an index of the synthetic network and returns its directory and
// the network's DIDs.
func seededIndex(b *testing.B) (string, []string) {
	b.Helper()
	cfg := benchGenConfig()
	g := newGenerator(cfg)
	dir := b.TempDir()
	stamp := fmt.Sprintf("%+v\n", cfg)
	if keep := os.Getenv(benchIndexDirEnv); keep != "" {
		dir = filepath.Join(keep, fmt.Sprintf("users%d-posts%d-follows%d-hosted%d-seed%d", cfg.users, cfg.posts, cfg.follows, cfg.hostedPercent, cfg.seed))
		if got, err := os.ReadFile(filepath.Join(dir, "seeded")); err == nil && string(got) == stamp {
			b.Logf("reusing the seeded index in %s", dir)
			return dir, g.dids
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	evs := g.network()
	a := openBenchIndex(b, dir, g.hosted())
	start := time.Now()
	ingest(b, a, evs)
	elapsed := time.Since(start)
	if err := a.Close(); err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "index.sqlite"))
	if err == nil {
		b.Logf("seeded %d users, %d posts, %d events in %s (%.0f events/s); index %.1f MiB (%.0f MiB per million posts)",
			cfg.users, cfg.posts, len(evs), elapsed.Round(time.Millisecond), float64(len(evs))/elapsed.Seconds(),
			float64(st.Size())/(1<<20), float64(st.Size())/(1<<20)/float64(cfg.posts)*1e6)
	}
	if os.Getenv(benchIndexDirEnv) != "" {
		if err := os.WriteFile(filepath.Join(dir, "seeded"), []byte(stamp), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir, g.dids
}

// timelineHandler returns the getTimeline handler of a.
func timelineHandler(a *AppView) http.HandlerFunc {
	for _, m := range a.Methods() {
		if m.NSID == "app.bsky.feed.getTimeline" {
			return m.Handler
		}
	}
	return nil
}

// timeTimeline serves one getTimeline (limit 50, fully hydrated, JSON-encoded) for viewer.
func timeTimeline(b *testing.B, h http.HandlerFunc, viewer string) time.Duration {
	req := httptest.NewRequest(http.MethodGet, "/xrpc/app.bsky.feed.getTimeline?limit=50", nil)
	req = req.WithContext(WithViewer(req.Context(), syntax.DID(viewer)))
	w := httptest.NewRecorder()
	start := time.Now()
	h(w, req)
	d := time.Since(start)
	if w.Code != http.StatusOK {
		b.Fatalf("getTimeline = %d: %s", w.Code, w.Body)
	}
	return d
}

func percentile(ds []time.Duration, p float64) float64 {
	slices.Sort(ds)
	i := min(int(float64(len(ds))*p), len(ds)-1)
	return float64(ds[i].Microseconds()) / 1000
}

// BenchmarkGetTimeline measures getTimeline (limit 50, fully hydrated) on a seeded index
// and reports p50 and p99 in milliseconds: warm (caches filled) and cold (the first
// request of each of 200 viewers right after reopening the index).
func BenchmarkGetTimeline(b *testing.B) {
	dir, dids := seededIndex(b)
	viewers := dids[:min(len(dids), 200)]

	// Cold: a reopened index, each viewer's first request.
	a := openBenchIndex(b, dir, nil)
	h := timelineHandler(a)
	var cold []time.Duration
	for _, v := range viewers {
		cold = append(cold, timeTimeline(b, h, v))
	}
	var warm []time.Duration
	i := 0
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		warm = append(warm, timeTimeline(b, h, viewers[i%len(viewers)]))
		i++
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(i), "cpu-µs/op")
	b.ReportMetric(percentile(warm, 0.50), "p50-ms")
	b.ReportMetric(percentile(warm, 0.99), "p99-ms")
	b.ReportMetric(percentile(cold, 0.50), "cold-p50-ms")
	b.ReportMetric(percentile(cold, 0.99), "cold-p99-ms")
	if err := a.Close(); err != nil {
		b.Fatal(err)
	}
}
