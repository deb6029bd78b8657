package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"

	"github.com/rivo/uniseg"
	"golang.org/x/image/webp"
)

// maxImages is how many images a post embeds (app.bsky.embed.images).
const maxImages = 4

// maxAltBytes bounds an image description; the lexicon sets no limit, and 10 KB is far
// more than a description needs.
const maxAltBytes = 10_000

// imageDecoders read the size of the image types a post may embed, for its aspect ratio;
// called directly rather than registered with image.RegisterFormat so that no package
// needs a side-effect import.
var imageDecoders = map[string]func(io.Reader) (image.Config, error){
	"image/jpeg": jpeg.DecodeConfig,
	"image/png":  png.DecodeConfig,
	"image/gif":  gif.DecodeConfig,
	"image/webp": webp.DecodeConfig,
}

// draft is a post being written: what the compose form sent.
type draft struct {
	text   string
	reply  *ReplyRef
	quote  *StrongRef
	images []*multipart.FileHeader
	alts   []string
}

// handleComposePage is the compose form on its own page, for quoting a post (?quote=uri)
// or replying to one (?reply=uri) from a page that has no form for it.
func (s *Server) handleComposePage(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	q := r.URL.Query()
	p := &page{Title: "New post"}
	var err error
	if u := q.Get("quote"); u != "" {
		p.Title = "Quote post"
		p.QuotePost, err = s.fetchPost(r.Context(), sess.DID, u)
	} else if u := q.Get("reply"); u != "" {
		p.Title = "Reply"
		p.ReplyParent, err = s.fetchPost(r.Context(), sess.DID, u)
	}
	if err != nil {
		s.readFailed(w, r, err)
		return
	}
	p.Here = "/"
	s.render(w, r, http.StatusOK, "compose", p)
}

// fetchPost reads one post through app.bsky.feed.getPosts.
func (s *Server) fetchPost(ctx context.Context, viewer, uri string) (*Post, error) {
	var out struct {
		Posts []*postJSON `json:"posts"`
	}
	if err := s.query(ctx, viewer, "app.bsky.feed.getPosts", url.Values{"uris": {uri}}, &out); err != nil {
		return nil, err
	}
	if len(out.Posts) == 0 {
		return nil, errNotFound
	}
	return s.postOf(out.Posts[0]), nil
}

func (s *Server) handleCompose(w http.ResponseWriter, r *http.Request) {
	sess := s.signedIn(w, r)
	if sess == nil {
		return
	}
	f := r.PostForm
	d := &draft{text: strings.TrimSpace(strings.ReplaceAll(f.Get("text"), "\r\n", "\n")), alts: f["alt"]}
	if r.MultipartForm != nil {
		for _, fh := range r.MultipartForm.File["images"] {
			// A file input left empty still sends a part, with no name and no bytes.
			if fh.Size > 0 {
				d.images = append(d.images, fh)
			}
		}
	}
	if f.Get("parent_uri") != "" {
		d.reply = &ReplyRef{
			Root:   StrongRef{URI: f.Get("root_uri"), CID: f.Get("root_cid")},
			Parent: StrongRef{URI: f.Get("parent_uri"), CID: f.Get("parent_cid")},
		}
		if !validRef(d.reply.Root) || !validRef(d.reply.Parent) {
			s.renderError(w, r, http.StatusBadRequest, "Bad request", "The post you reply to is not valid.")
			return
		}
	}
	if f.Get("quote_uri") != "" {
		d.quote = &StrongRef{URI: f.Get("quote_uri"), CID: f.Get("quote_cid")}
		if !validRef(*d.quote) {
			s.renderError(w, r, http.StatusBadRequest, "Bad request", "The post you quote is not valid.")
			return
		}
	}
	switch {
	case d.text == "" && len(d.images) == 0 && d.quote == nil:
		s.composeFailed(w, r, sess, d, "Write something before posting.")
		return
	case len(d.text) > maxPostBytes || uniseg.GraphemeClusterCount(d.text) > maxPostGraphemes:
		s.composeFailed(w, r, sess, d, "A post has at most 300 characters.")
		return
	case len(d.images) > maxImages:
		s.composeFailed(w, r, sess, d, "A post has at most 4 images.")
		return
	}
	rec, err := s.postRecord(r.Context(), sess.DID, d)
	var fe *FormError
	if errors.As(err, &fe) {
		s.composeFailed(w, r, sess, d, fe.Message)
		return
	}
	if err == nil {
		_, err = s.backend.CreateRecord(r.Context(), sess.DID, "app.bsky.feed.post", rec)
	}
	if errors.As(err, &fe) {
		s.composeFailed(w, r, sess, d, fe.Message)
		return
	}
	if err != nil {
		s.writeFailed(w, r, sess, "create post", err)
		return
	}
	s.back(w, r)
}

// postRecord builds the app.bsky.feed.post of d, uploading its images.
func (s *Server) postRecord(ctx context.Context, did string, d *draft) (map[string]any, error) {
	rec := map[string]any{"$type": "app.bsky.feed.post", "text": d.text, "createdAt": s.timestamp()}
	resolve := func(handle string) string {
		did, err := s.backend.ResolveHandle(ctx, handle)
		if err != nil {
			// A mention of a handle that does not resolve stays plain text, as in the app.
			s.log.DebugContext(ctx, "resolve mentioned handle", "handle", handle, "err", err)
			return ""
		}
		return did
	}
	if facets := facetsFor(findSpans(d.text), resolve); len(facets) > 0 {
		rec["facets"] = facets
	}
	if d.reply != nil {
		rec["reply"] = map[string]any{
			"root":   map[string]any{"uri": d.reply.Root.URI, "cid": d.reply.Root.CID},
			"parent": map[string]any{"uri": d.reply.Parent.URI, "cid": d.reply.Parent.CID},
		}
	}
	var media map[string]any
	if len(d.images) > 0 {
		var images []any
		for i, fh := range d.images {
			alt := ""
			if i < len(d.alts) {
				alt = strings.TrimSpace(d.alts[i])
			}
			if len(alt) > maxAltBytes {
				return nil, &FormError{Message: "An image description is too long."}
			}
			img, err := s.uploadImage(ctx, did, fh)
			if err != nil {
				return nil, err
			}
			img["alt"] = alt
			images = append(images, img)
		}
		media = map[string]any{"$type": "app.bsky.embed.images", "images": images}
	}
	var quote map[string]any
	if d.quote != nil {
		quote = map[string]any{"$type": "app.bsky.embed.record",
			"record": map[string]any{"uri": d.quote.URI, "cid": d.quote.CID}}
	}
	switch {
	case media != nil && quote != nil:
		rec["embed"] = map[string]any{"$type": "app.bsky.embed.recordWithMedia", "record": quote, "media": media}
	case media != nil:
		rec["embed"] = media
	case quote != nil:
		rec["embed"] = quote
	}
	return rec, nil
}

// uploadImage checks that fh is an image a post may embed and uploads it, returning the
// app.bsky.embed.images#image without its alt.
func (s *Server) uploadImage(ctx context.Context, did string, fh *multipart.FileHeader) (map[string]any, error) {
	b, cfg, mimeType, err := readImage(fh)
	if err != nil {
		return nil, err
	}
	blob, err := s.backend.UploadBlob(ctx, did, mimeType, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("upload image: %w", err)
	}
	return map[string]any{
		"image":       blob.record(),
		"aspectRatio": map[string]any{"width": cfg.Width, "height": cfg.Height},
	}, nil
}

// readImage reads an uploaded image file, refusing with a *FormError what is too large or
// not a JPEG, PNG, GIF or WebP image.
func readImage(fh *multipart.FileHeader) ([]byte, image.Config, string, error) {
	if fh.Size > maxImageBytes {
		return nil, image.Config{}, "", &FormError{Message: fmt.Sprintf("%q is too large: an image may have at most 1 MB.", fh.Filename)}
	}
	file, err := fh.Open()
	if err != nil {
		return nil, image.Config{}, "", fmt.Errorf("open uploaded file: %w", err)
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, maxImageBytes+1))
	if err != nil {
		return nil, image.Config{}, "", fmt.Errorf("read uploaded file: %w", err)
	}
	mimeType := http.DetectContentType(b)
	decode := imageDecoders[mimeType]
	if decode == nil {
		return nil, image.Config{}, "", &FormError{Message: fmt.Sprintf("%q is not a JPEG, PNG, GIF or WebP image.", fh.Filename)}
	}
	cfg, err := decode(bytes.NewReader(b))
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, image.Config{}, "", &FormError{Message: fmt.Sprintf("%q is not a readable image.", fh.Filename)}
	}
	return b, cfg, mimeType, nil
}

// record is the blob as a record references it.
func (b Blob) record() map[string]any {
	return map[string]any{"$type": "blob", "ref": map[string]any{"$link": b.CID}, "mimeType": b.MimeType, "size": b.Size}
}

// composeFailed shows the compose form again with the text kept and msg.
func (s *Server) composeFailed(w http.ResponseWriter, r *http.Request, sess *session, d *draft, msg string) {
	p := &page{Title: "New post", Draft: d.text, Error: msg, Here: safeNext(r.PostForm.Get("next"))}
	var err error
	if d.reply != nil {
		p.ReplyParent, err = s.fetchPost(r.Context(), sess.DID, d.reply.Parent.URI)
	}
	if err == nil && d.quote != nil {
		p.QuotePost, err = s.fetchPost(r.Context(), sess.DID, d.quote.URI)
	}
	if err != nil {
		s.readFailed(w, r, err)
		return
	}
	s.render(w, r, http.StatusBadRequest, "compose", p)
}
