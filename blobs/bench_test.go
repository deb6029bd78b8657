package blobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"image"
	"image/color"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkGetBlob1MiB measures aggregate getBlob throughput on loopback: each iteration
// is 8 concurrent GETs of a 1 MiB blob over keep-alive connections (target ≥ 1 GB/s).
func BenchmarkGetBlob1MiB(b *testing.B) {
	env := newTestEnv(b, DefaultConfig(), Deps{})
	data := make([]byte, 1<<20)
	rand.Read(data)
	ref := env.uploadCommitted(b, aliceDID, "application/octet-stream", data)
	url := env.srv.URL + getBlobPath(aliceDID, ref.CID)
	const clients = 8
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	b.SetBytes(clients << 20)
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if n != 1<<20 {
					b.Errorf("read %d bytes", n)
				}
			})
		}
		wg.Wait()
	}
}

// BenchmarkGetBlob10KiBLatency offers 10 KiB getBlob requests at a paced 2,000 req/s from
// 8 workers and reports the p50 and p99 latency (target p99 ≤ 2 ms).
func BenchmarkGetBlob10KiBLatency(b *testing.B) {
	env := newTestEnv(b, DefaultConfig(), Deps{})
	data := make([]byte, 10<<10)
	rand.Read(data)
	ref := env.uploadCommitted(b, aliceDID, "application/octet-stream", data)
	url := env.srv.URL + getBlobPath(aliceDID, ref.CID)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	const rate, perIter = 2000, 400 // 0.2 s of load per iteration
	var lat []time.Duration
	var mu sync.Mutex
	b.ReportAllocs()
	for b.Loop() {
		ticks := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range ticks {
					start := time.Now()
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					d := time.Since(start)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			})
		}
		t := time.NewTicker(time.Second / rate)
		for range perIter {
			<-t.C
			ticks <- struct{}{}
		}
		t.Stop()
		close(ticks)
		wg.Wait()
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(math.Ceil(p*float64(len(lat))))-1].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkUpload5MiB measures one 5 MiB upload: streaming, sha-256, fsync, rename and
// the index row (target ≤ 50 ms).
func BenchmarkUpload5MiB(b *testing.B) {
	env := newTestEnv(b, DefaultConfig(), Deps{})
	data := make([]byte, 5<<20)
	rand.Read(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// A fresh blob each time, so that every iteration hashes and writes a new file.
		i++
		data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16)
		if _, err := env.s.Upload(context.Background(), aliceDID, "video/mp4", bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// photo returns a w×h image with photo-like detail (gradients plus noise), which is
// what makes resizing and JPEG encoding cost what they do on real pictures.
func photo(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	noise := make([]byte, w*h)
	rand.Read(noise)
	for y := range h {
		for x := range w {
			n := noise[y*w+x] / 8
			img.SetRGBA(x, y, color.RGBA{uint8(x*255/w) + n, uint8(y*255/h) + n, uint8((x+y)*127/(w+h)) + n, 255})
		}
	}
	return img
}

// BenchmarkThumbnail measures making each preset from a 12-megapixel JPEG photo
// (4032×3024, a phone camera's size), decode to encode.
func BenchmarkThumbnail(b *testing.B) {
	src := encodeJPEG(b, photo(4032, 3024))
	for _, name := range []string{"avatar", "avatar_thumbnail", "banner", "feed_thumbnail", "feed_fullsize"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := thumbnail(src, presets[name], DefaultMaxPixels); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkThumbnailBlueskySized measures feed_thumbnail from a 2000×1500 JPEG, the size
// the Bluesky app uploads after its own client-side resize.
func BenchmarkThumbnailBlueskySized(b *testing.B) {
	src := encodeJPEG(b, photo(2000, 1500))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := thumbnail(src, presets["feed_thumbnail"], DefaultMaxPixels); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkImageCachedHit measures a request for a variant already in the disk cache,
// over loopback HTTP.
func BenchmarkImageCachedHit(b *testing.B) {
	env := newTestEnv(b, DefaultConfig(), Deps{})
	ref := env.uploadCommitted(b, aliceDID, "image/jpeg", encodeJPEG(b, photo(1200, 900)))
	url := env.srv.URL + ImagePath("feed_thumbnail", aliceDID, ref.CID)
	client := env.srv.Client()
	get := func() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	get() // make and cache it
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
}
