package blobs

import (
	"bytes"
	"errors"
	"image/gif"
	"os"
	"testing"
)

// FuzzThumbnail runs untrusted bytes through the whole image path — format detection,
// header check, decode, EXIF, resize, encode — with a small pixel limit so that every
// input stays cheap. It must never panic, and anything it accepts must be within limits.
func FuzzThumbnail(f *testing.F) {
	small := testImage(16, 8)
	f.Add(encodeJPEG(f, small))
	f.Add(withOrientation(encodeJPEG(f, small), 6))
	f.Add(encodePNG(f, small))
	var g bytes.Buffer
	if err := gif.Encode(&g, small, nil); err != nil {
		f.Fatal(err)
	}
	f.Add(g.Bytes())
	if webp, err := os.ReadFile("testdata/blue-purple-pink.lossy.webp"); err == nil {
		f.Add(webp)
	}
	f.Add(pngHeader(20000, 20000))
	f.Add(pngHeader(0, 5))
	f.Add([]byte("<svg/>"))
	const maxPixels = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := thumbnail(data, presets["avatar_thumbnail"], maxPixels)
		if err != nil {
			if !errors.Is(err, ErrUnsupportedImage) && !errors.Is(err, ErrImageTooLarge) {
				t.Fatalf("thumbnail error %v is neither ErrUnsupportedImage nor ErrImageTooLarge", err)
			}
			return
		}
		cfg := decodeJPEGConfigF(t, out)
		if cfg.Width > 128 || cfg.Height > 128 || cfg.Width < 1 || cfg.Height < 1 {
			t.Fatalf("thumbnail is %dx%d, want within 128x128", cfg.Width, cfg.Height)
		}
	})
}

// FuzzDecideMIME checks that sniffing never panics and never stores active content for a
// declared image.
func FuzzDecideMIME(f *testing.F) {
	f.Add("image/png", []byte("\x89PNG\r\n\x1a\n"))
	f.Add("image/png", []byte("<html>"))
	f.Add("text/html; charset=utf-8", []byte("hello"))
	f.Add("", []byte{})
	f.Add("bad/type/", []byte("GIF89a"))
	f.Fuzz(func(t *testing.T, declared string, head []byte) {
		if len(head) > sniffLen {
			head = head[:sniffLen]
		}
		got, err := decideMIME(declared, head)
		if err != nil {
			return
		}
		if got == "" {
			t.Fatalf("decideMIME(%q) = empty type", declared)
		}
	})
}
