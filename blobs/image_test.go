package blobs

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/image/webp"

	"github.com/aerie-social/aerie/node/identity"
)

func decodeJPEGConfig(t *testing.T, b []byte) image.Config {
	t.Helper()
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("response is not a JPEG: %v", err)
	}
	return cfg
}

func TestImagePresets(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	// Small enough for the race detector; TestFitInside covers the large boxes.
	ref := env.uploadCommitted(t, aliceDID, "image/jpeg", encodeJPEG(t, testImage(1200, 600)))
	tests := []struct {
		preset string
		w, h   int
	}{
		{"avatar", 1000, 500},
		{"avatar_thumbnail", 128, 64},
		{"banner", 1200, 600}, // never enlarged
		{"feed_thumbnail", 1000, 500},
		{"feed_fullsize", 1200, 600},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			path := ImagePath(tt.preset, aliceDID, ref.CID)
			resp, body := env.get(t, path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: status %d", path, resp.StatusCode)
			}
			if cfg := decodeJPEGConfig(t, body); cfg.Width != tt.w || cfg.Height != tt.h {
				t.Errorf("%s: %dx%d, want %dx%d", tt.preset, cfg.Width, cfg.Height, tt.w, tt.h)
			}
			for k, v := range map[string]string{
				"Content-Type":           "image/jpeg",
				"Cache-Control":          cacheImmutable,
				"X-Content-Type-Options": "nosniff",
				"ETag":                   `"` + tt.preset + "-" + ref.CID.String() + `"`,
			} {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			// The second request is a cache hit with the same bytes.
			resp2, body2 := env.get(t, path)
			if resp2.StatusCode != http.StatusOK || !bytes.Equal(body, body2) {
				t.Errorf("cached GET %s: status %d, same bytes %v", path, resp2.StatusCode, bytes.Equal(body, body2))
			}
			if _, ok := env.s.variants.get(variantKey(tt.preset, aliceDID, ref.CID.String())); !ok {
				t.Errorf("variant %s not in the cache", tt.preset)
			}
		})
	}
	for _, bad := range []string{
		"/img/huge/plain/" + string(aliceDID) + "/" + ref.CID.String() + "@jpeg",
		"/img/avatar/plain/" + string(aliceDID) + "/" + ref.CID.String() + "@png",
		"/img/avatar/plain/not-a-did/" + ref.CID.String() + "@jpeg",
		"/img/avatar/plain/" + string(aliceDID) + "/bafkreinotacid@jpeg",
		"/img/avatar/plain/" + string(bobDID) + "/" + ref.CID.String() + "@jpeg",
	} {
		if resp, _ := env.get(t, bad); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", bad, resp.StatusCode)
		}
	}
	// Something that is not an image.
	txt := env.uploadCommitted(t, aliceDID, "text/plain", []byte("hello"))
	if resp, _ := env.get(t, ImagePath("avatar", aliceDID, txt.CID)); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("image of a text blob: status %d, want 415", resp.StatusCode)
	}
}

func TestFitInside(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		w, h         int
		preset       string
		wantW, wantH int
	}{
		{"landscape photo as avatar", 4032, 3024, "avatar", 1000, 750},
		{"portrait photo as avatar_thumbnail", 3024, 4032, "avatar_thumbnail", 96, 128},
		{"wide banner", 4500, 1500, "banner", 3000, 1000},
		{"tall image as banner", 1000, 4000, "banner", 250, 1000},
		{"photo as feed_fullsize", 4032, 3024, "feed_fullsize", 2000, 1500},
		{"small image is never enlarged", 300, 200, "feed_fullsize", 300, 200},
		{"extreme panorama keeps one pixel", 100000, 10, "feed_thumbnail", 1000, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := presets[tt.preset]
			if w, h := fitInside(tt.w, tt.h, p.Width, p.Height); w != tt.wantW || h != tt.wantH {
				t.Errorf("fitInside(%d, %d, %s) = %d, %d; want %d, %d", tt.w, tt.h, tt.preset, w, h, tt.wantW, tt.wantH)
			}
		})
	}
}

func TestImageFormats(t *testing.T) {
	t.Parallel()
	src := testImage(40, 20)
	var gifBuf bytes.Buffer
	if err := gif.Encode(&gifBuf, src, nil); err != nil {
		t.Fatal(err)
	}
	webpData, err := os.ReadFile("testdata/blue-purple-pink.lossy.webp")
	if err != nil {
		t.Fatal(err)
	}
	// The WebP is smaller than the preset, so the output keeps its size: compare with
	// x/image's own decoding at the same point.
	refImg, err := webp.Decode(bytes.NewReader(webpData))
	if err != nil {
		t.Fatal(err)
	}
	rb := refImg.Bounds()
	webpRef := color.RGBAModel.Convert(refImg.At(rb.Min.X+rb.Dx()/4, rb.Min.Y+rb.Dy()/2)).(color.RGBA)
	transparent := image.NewNRGBA(image.Rect(0, 0, 10, 10)) // all transparent: white out
	tests := []struct {
		name string
		data []byte
		// want is the colour at the centre of the output's left half.
		want color.RGBA
	}{
		{"jpeg", encodeJPEG(t, src), color.RGBA{230, 0, 20, 255}},
		{"png", encodePNG(t, src), color.RGBA{230, 0, 20, 255}},
		{"gif", gifBuf.Bytes(), color.RGBA{230, 0, 20, 255}},
		{"transparent png on white", encodePNG(t, transparent), color.RGBA{255, 255, 255, 255}},
		{"webp", webpData, webpRef},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := thumbnail(tt.data, presets["avatar"], DefaultMaxPixels)
			if err != nil {
				t.Fatalf("thumbnail: %v", err)
			}
			img, err := jpeg.Decode(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			b := img.Bounds()
			got := color.RGBAModel.Convert(img.At(b.Dx()/4, b.Dy()/2)).(color.RGBA)
			if !near(got, tt.want, 40) {
				t.Errorf("pixel = %v, want about %v", got, tt.want)
			}
		})
	}
}

func near(a, b color.RGBA, tol int) bool {
	d := func(x, y uint8) bool { return int(x)-int(y) <= tol && int(y)-int(x) <= tol }
	return d(a.R, b.R) && d(a.G, b.G) && d(a.B, b.B)
}

func TestEXIFOrientation(t *testing.T) {
	t.Parallel()
	// 200×100: red on the left, blue on the right.
	base := encodeJPEG(t, testImage(200, 100))
	tests := []struct {
		orientation        uint16
		w, h               int
		topLeft, bottomRgt color.RGBA
	}{
		{1, 200, 100, color.RGBA{230, 0, 20, 255}, color.RGBA{20, 40, 230, 255}},
		{3, 200, 100, color.RGBA{20, 40, 230, 255}, color.RGBA{230, 0, 20, 255}},
		// Rotated 90° clockwise: the left (red) column becomes the top row.
		{6, 100, 200, color.RGBA{230, 40, 20, 255}, color.RGBA{20, 0, 230, 255}},
		// Rotated 90° counter-clockwise: the right (blue) column becomes the top row.
		{8, 100, 200, color.RGBA{20, 0, 230, 255}, color.RGBA{230, 40, 20, 255}},
	}
	for _, tt := range tests {
		data := withOrientation(base, tt.orientation)
		if got := jpegOrientation(data); got != int(tt.orientation) {
			t.Errorf("jpegOrientation = %d, want %d", got, tt.orientation)
		}
		out, err := thumbnail(data, presets["avatar"], DefaultMaxPixels)
		if err != nil {
			t.Fatalf("thumbnail(orientation %d): %v", tt.orientation, err)
		}
		img, err := jpeg.Decode(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		b := img.Bounds()
		if b.Dx() != tt.w || b.Dy() != tt.h {
			t.Errorf("orientation %d: %dx%d, want %dx%d", tt.orientation, b.Dx(), b.Dy(), tt.w, tt.h)
		}
		tl := color.RGBAModel.Convert(img.At(5, 5)).(color.RGBA)
		br := color.RGBAModel.Convert(img.At(b.Dx()-6, b.Dy()-6)).(color.RGBA)
		if !near(tl, tt.topLeft, 40) || !near(br, tt.bottomRgt, 40) {
			t.Errorf("orientation %d: corners %v, %v; want about %v, %v", tt.orientation, tl, br, tt.topLeft, tt.bottomRgt)
		}
		// The output carries no EXIF.
		if bytes.Contains(out, []byte("Exif\x00\x00")) {
			t.Errorf("orientation %d: output still has EXIF", tt.orientation)
		}
	}
}

// TestDecompressionBombRefused is not parallel on purpose: it measures the bytes
// allocated while refusing a 20000×20000 PNG, and parallel tests would add theirs.
// (Top-level parallel tests only start once the sequential ones have finished.)
func TestDecompressionBombRefused(t *testing.T) {
	bomb := pngHeader(20000, 20000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := thumbnail(bomb, presets["avatar"], DefaultMaxPixels)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrImageTooLarge) {
		t.Fatalf("thumbnail(20000×20000 PNG) = %v, want ErrImageTooLarge", err)
	}
	// Decoding would need 1.6 GB; the header check allocates a few KiB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("refusing the bomb allocated %d bytes, want < 1 MiB", alloc)
	}
}

func TestDiskLRUEviction(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	env := newTestEnv(t, cfg, Deps{})
	// Shrink the bound after the fact: each 128px thumbnail is a few KiB.
	env.s.variants.max = 2 << 10
	var paths []string
	for i := range 6 {
		img := testImage(64, 64)
		img.Pix[0] = byte(i) // distinct blobs
		ref := env.uploadCommitted(t, aliceDID, "image/png", encodePNG(t, img))
		p := ImagePath("avatar_thumbnail", aliceDID, ref.CID)
		if resp, _ := env.get(t, p); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", p, resp.StatusCode)
		}
		paths = append(paths, p)
	}
	n, size := env.s.variants.usage()
	if size > 2<<10 || n >= 6 {
		t.Errorf("cache holds %d variants, %d bytes; want under 2 KiB and some evicted", n, size)
	}
	// An evicted variant is made again.
	if resp, _ := env.get(t, paths[0]); resp.StatusCode != http.StatusOK {
		t.Errorf("evicted variant: status %d", resp.StatusCode)
	}
}

func TestCacheSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root, err := openRootForTest(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := root.MkdirAll("img/a", 0o750); err != nil {
		t.Fatal(err)
	}
	l, err := openDiskLRU(root, "img", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"img/a/1", "img/a/2"} {
		if err := root.WriteFile(k, make([]byte, 100), 0o600); err != nil {
			t.Fatal(err)
		}
		l.add(k, 100, time.Now())
	}
	again, err := openDiskLRU(root, "img", 150)
	if err != nil {
		t.Fatal(err)
	}
	if n, size := again.usage(); n != 1 || size != 100 {
		t.Errorf("reopened with a 150-byte bound: %d entries, %d bytes; want 1, 100", n, size)
	}
}

func TestRemoteImages(t *testing.T) {
	t.Parallel()
	const remoteDID = "did:plc:remote0000000000000000"
	jpg := encodeJPEG(t, testImage(400, 300))
	c := rawCIDOf(t, jpg)
	var hits, lie atomic.Int32
	pds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/xrpc/com.atproto.sync.getBlob" || r.URL.Query().Get("did") != remoteDID {
			http.NotFound(w, r)
			return
		}
		hits.Add(1)
		if lie.Load() != 0 {
			w.Write(encodePNG(t, testImage(10, 10)))
			return
		}
		if r.URL.Query().Get("cid") != c.String() {
			http.Error(w, `{"error":"BlobNotFound"}`, http.StatusBadRequest)
			return
		}
		w.Write(jpg)
	}))
	t.Cleanup(pds.Close)

	cfg := DefaultConfig()
	cfg.AllowPrivateNetwork = true // the fake PDS is on loopback
	env := newTestEnv(t, cfg, Deps{Resolver: staticResolver(pds.URL)})
	path := ImagePath("feed_thumbnail", remoteDID, c)
	resp, body := env.get(t, path)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("remote image: status %d %s", resp.StatusCode, body)
	}
	if cfg := decodeJPEGConfig(t, body); cfg.Width != 400 || cfg.Height != 300 {
		t.Errorf("remote image %dx%d, want 400x300 (never enlarged)", cfg.Width, cfg.Height)
	}
	// Another preset reuses the fetched original.
	if resp, _ := env.get(t, ImagePath("avatar_thumbnail", remoteDID, c)); resp.StatusCode != http.StatusOK || hits.Load() != 1 {
		t.Errorf("second preset: status %d after %d fetches, want 200 after 1", resp.StatusCode, hits.Load())
	}
	// After the TTL the original is fetched again: now the host lies and is caught.
	env.clock.Advance(cfg.RemoteCacheTTL + time.Minute)
	if rep, err := env.s.GC(t.Context()); err != nil || rep.RemoteExpired != 1 {
		t.Errorf("GC after the remote TTL = %+v, %v; want 1 remote expired", rep, err)
	}
	lie.Store(1)
	if resp, _ := env.get(t, ImagePath("banner", remoteDID, c)); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("remote bytes not matching the CID: status %d, want 502", resp.StatusCode)
	}
	lie.Store(0)
	missing := rawCIDOf(t, []byte("nope"))
	if resp, _ := env.get(t, ImagePath("banner", remoteDID, missing)); resp.StatusCode != http.StatusNotFound {
		t.Errorf("remote blob the host does not have: status %d, want 404", resp.StatusCode)
	}
}

func TestRemoteFetchRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	pds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request reached a loopback PDS: %s", r.URL)
	}))
	t.Cleanup(pds.Close)
	env := newTestEnv(t, DefaultConfig(), Deps{Resolver: staticResolver(pds.URL)})
	c := rawCIDOf(t, []byte("x"))
	_, err := env.s.remoteBlob(t.Context(), "did:plc:remote0000000000000000", c.String())
	if !errors.Is(err, ErrRemoteFetch) || !errors.Is(err, identity.ErrPrivateNetwork) {
		t.Errorf("remoteBlob from 127.0.0.1 = %v, want ErrRemoteFetch wrapping ErrPrivateNetwork", err)
	}
	if resp, _ := env.get(t, ImagePath("avatar", "did:plc:remote0000000000000000", c)); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("image from a private address: status %d, want 502", resp.StatusCode)
	}
}

func TestJPEGOrientationMalformed(t *testing.T) {
	t.Parallel()
	good := withOrientation(encodeJPEG(t, testImage(8, 8)), 6)
	for i := range len(good) {
		// Every truncation is handled without a panic and with a valid answer.
		if o := jpegOrientation(good[:i]); o < 1 || o > 8 {
			t.Fatalf("jpegOrientation(first %d bytes) = %d", i, o)
		}
	}
	if !strings.HasPrefix(string(good[6:10]), "Exif") {
		t.Fatal("test EXIF segment not where expected")
	}
}
