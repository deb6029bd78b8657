package blobs

import (
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// sniffLen is how much of a body http.DetectContentType looks at.
const sniffLen = 512

// octetStream is the type of content nobody can name.
const octetStream = "application/octet-stream"

// decideMIME returns the type to store for a body that starts with head and was declared
// as declared (a Content-Type header, possibly empty or with parameters).
//
// The sniffed type wins when the sniffer recognises the content, so a PNG declared as
// text/html is stored (and served) as image/png. A body the sniffer cannot name keeps the
// declared type, since the sniffer knows no video container but MP4/WebM and no SVG; the
// serving headers make any type harmless. A declared media type (image, video, audio)
// whose content sniffs as active content is refused: that is a polyglot, not a mistake.
func decideMIME(declared string, head []byte) (string, error) {
	decl := octetStream
	if declared != "" {
		if mt, _, err := mime.ParseMediaType(declared); err == nil && mt != "*/*" && strings.Contains(mt, "/") {
			decl = mt
		}
	}
	sniffed, _, _ := mime.ParseMediaType(http.DetectContentType(head))
	if sniffed == "" || sniffed == octetStream || sniffed == "text/plain" {
		return decl, nil
	}
	if isMedia(decl) && isActive(sniffed) {
		return "", fmt.Errorf("%w: declared %s, content is %s", ErrInvalidMimeType, decl, sniffed)
	}
	return sniffed, nil
}

// isMedia reports whether t is an image, video or audio type.
func isMedia(t string) bool {
	return strings.HasPrefix(t, "image/") || strings.HasPrefix(t, "video/") || strings.HasPrefix(t, "audio/")
}

// isActive reports whether a browser could run or render t as a document.
func isActive(t string) bool {
	switch t {
	case "text/html", "text/xml", "application/xml", "application/xhtml+xml", "image/svg+xml",
		"text/javascript", "application/javascript", "application/pdf", "application/x-shockwave-flash":
		return true
	}
	return strings.HasSuffix(t, "+xml")
}

// inlineTypes are the stored types a browser may show inline: raster images and plain
// media, none of which can run script. Everything else, SVG and HTML above all, is served
// as an attachment.
var inlineTypes = map[string]bool{
	"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true,
	"image/avif": true, "image/bmp": true, "video/mp4": true, "video/webm": true,
	"audio/mpeg": true, "audio/ogg": true, "audio/wav": true, "audio/mp4": true,
}

// contentDisposition returns the Content-Disposition for a blob of type mime named c.
func contentDisposition(mime, c string) string {
	if inlineTypes[mime] {
		return `inline; filename="` + c + `"`
	}
	return `attachment; filename="` + c + `"`
}
