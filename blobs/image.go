package blobs

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"

	"golang.org/x/image/draw"
	"golang.org/x/image/webp"
)

// Preset is an image variant the Bluesky views link to: the image is resized to fit
// inside Width × Height, never enlarged, and encoded as JPEG.
type Preset struct {
	Name          string
	Width, Height int
}

// presets are the sizes Bluesky's CDN serves under the same names (cdn.bsky.app/img/…),
// so that views can link the same paths on our host.
var presets = map[string]Preset{
	"avatar":           {"avatar", 1000, 1000},
	"avatar_thumbnail": {"avatar_thumbnail", 128, 128},
	"banner":           {"banner", 3000, 1000},
	"feed_thumbnail":   {"feed_thumbnail", 1000, 1000},
	"feed_fullsize":    {"feed_fullsize", 2000, 2000},
}

// Presets returns the image presets by name.
func Presets() map[string]Preset {
	out := make(map[string]Preset, len(presets))
	for k, v := range presets {
		out[k] = v
	}
	return out
}

// jpegQuality balances size and artefacts as image CDNs usually do for photos.
const jpegQuality = 85

// imageFormat is a decodable input format.
type imageFormat int

const (
	formatUnknown imageFormat = iota
	formatJPEG
	formatPNG
	formatGIF
	formatWebP
)

// detectFormat names data's format by its magic bytes. The decoders are called directly,
// not through image.Decode's registry, so only these four formats are ever parsed.
func detectFormat(data []byte) imageFormat {
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0xD8, 0xFF}):
		return formatJPEG
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return formatPNG
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return formatGIF
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return formatWebP
	}
	return formatUnknown
}

// decodeImage decodes data after checking, from the header alone, that the image has at
// most maxPixels pixels: a decompression bomb is refused before anything is allocated
// for its pixels. It returns the image and its EXIF orientation.
// Errors: ErrImageTooLarge, ErrUnsupportedImage.
func decodeImage(data []byte, maxPixels int64) (image.Image, int, error) {
	format := detectFormat(data)
	var (
		cfg image.Config
		err error
	)
	r := bytes.NewReader(data)
	switch format {
	case formatJPEG:
		cfg, err = jpeg.DecodeConfig(r)
	case formatPNG:
		cfg, err = png.DecodeConfig(r)
	case formatGIF:
		cfg, err = gif.DecodeConfig(r)
	case formatWebP:
		cfg, err = webp.DecodeConfig(r)
	default:
		return nil, 0, fmt.Errorf("%w: not JPEG, PNG, GIF or WebP", ErrUnsupportedImage)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrUnsupportedImage, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, 0, fmt.Errorf("%w: %dx%d", ErrUnsupportedImage, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, 0, fmt.Errorf("%w: %dx%d is more than %d pixels", ErrImageTooLarge, cfg.Width, cfg.Height, maxPixels)
	}
	r.Reset(data)
	var img image.Image
	orientation := 1
	switch format {
	case formatJPEG:
		img, err = jpeg.Decode(r)
		orientation = jpegOrientation(data)
	case formatPNG:
		img, err = png.Decode(r)
	case formatGIF:
		img, err = gif.Decode(r) // the first frame
	case formatWebP:
		img, err = webp.Decode(r)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrUnsupportedImage, err)
	}
	// A decoder that returned more pixels than its header promised would void the check.
	if b := img.Bounds(); int64(b.Dx())*int64(b.Dy()) > maxPixels {
		return nil, 0, fmt.Errorf("%w: decoded %v", ErrImageTooLarge, b)
	}
	return img, orientation, nil
}

// fitInside returns the size of a w × h image scaled to fit inside maxW × maxH, keeping
// the aspect ratio and never enlarging; each side is at least 1.
func fitInside(w, h, maxW, maxH int) (int, int) {
	scale := math.Min(float64(maxW)/float64(w), float64(maxH)/float64(h))
	if scale >= 1 {
		return w, h
	}
	return max(1, int(math.Round(float64(w)*scale))), max(1, int(math.Round(float64(h)*scale)))
}

// thumbnail decodes data (JPEG, PNG, GIF or WebP of at most maxPixels pixels), turns it
// upright by its EXIF orientation, fits it inside p, flattens transparency onto white and
// encodes it as JPEG. Nothing of the input's metadata survives the re-encoding.
// Errors: ErrImageTooLarge, ErrUnsupportedImage.
func thumbnail(data []byte, p Preset, maxPixels int64) ([]byte, error) {
	img, orientation, err := decodeImage(data, maxPixels)
	if err != nil {
		return nil, err
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	// Fit the upright image: orientations 5–8 swap the sides, so scale in source space to
	// the swapped box.
	boxW, boxH := p.Width, p.Height
	if orientation >= 5 {
		boxW, boxH = boxH, boxW
	}
	dw, dh := fitInside(w, h, boxW, boxH)
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	op := draw.Src
	if !opaque(img) {
		// JPEG has no alpha: composite onto white, as browsers show transparent images on
		// a light page.
		draw.Draw(dst, dst.Rect, image.NewUniform(color.White), image.Point{}, draw.Src)
		op = draw.Over
	}
	if dw == w && dh == h {
		draw.Draw(dst, dst.Rect, img, b.Min, op)
	} else {
		// x/image/draw widens the kernel by the scale factor when shrinking, so BiLinear
		// is a proper (triangle) downsampling filter; CatmullRom costs about twice as
		// much for a difference invisible at these sizes.
		draw.BiLinear.Scale(dst, dst.Rect, img, b, op, nil)
	}
	dst = orient(dst, orientation)
	var out bytes.Buffer
	if err := jpeg.Encode(&out, dst, &jpeg.Options{Quality: jpegQuality}); err != nil {
		return nil, fmt.Errorf("encode jpeg: %w", err)
	}
	return out.Bytes(), nil
}

// opaque reports whether img certainly has no transparent pixel.
func opaque(img image.Image) bool {
	switch m := img.(type) {
	case *image.YCbCr, *image.Gray, *image.Gray16, *image.CMYK:
		return true
	case interface{ Opaque() bool }:
		return m.Opaque()
	}
	return false
}
