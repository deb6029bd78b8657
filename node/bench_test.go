package node

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
)

// BenchmarkStartToFirstHealth measures a cold start on a fresh data dir: New (databases,
// migrations, lexicons, listeners), Run, and the first /xrpc/_health answer. Issue budget:
// 200 ms.
func BenchmarkStartToFirstHealth(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		cfg := DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.PLC.Listen = ""
		cfg.DataDir = b.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		n, err := New(ctx, cfg, "bench", slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		resp, err := http.Get("http://" + n.Addr().String() + "/xrpc/_health")
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("health = %v, %v", resp, err)
		}
		resp.Body.Close()
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
