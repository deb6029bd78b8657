package blobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/xrpc"
)

// ImagePathPrefix is where the node mounts HandleImage.
const ImagePathPrefix = "/img/"

// ImagePath returns the path of did's image c in preset, for views to link:
// /img/<preset>/plain/<did>/<cid>@jpeg.
func ImagePath(preset string, did syntax.DID, c cid.Cid) string {
	return ImagePathPrefix + preset + "/plain/" + string(did) + "/" + c.String() + "@jpeg"
}

// parseImagePath splits /img/<preset>/plain/<did>/<cid>@jpeg.
func parseImagePath(p string) (Preset, syntax.DID, cid.Cid, error) {
	rest, ok := strings.CutPrefix(p, ImagePathPrefix)
	if !ok {
		return Preset{}, "", cid.Undef, errors.New("not an image path")
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || parts[1] != "plain" {
		return Preset{}, "", cid.Undef, errors.New("want /img/<preset>/plain/<did>/<cid>@jpeg")
	}
	preset, ok := presets[parts[0]]
	if !ok {
		return Preset{}, "", cid.Undef, fmt.Errorf("unknown preset %q", parts[0])
	}
	did, err := xrpc.ParseDID(parts[2])
	if err != nil {
		return Preset{}, "", cid.Undef, err
	}
	raw, ok := strings.CutSuffix(parts[3], "@jpeg")
	if !ok {
		return Preset{}, "", cid.Undef, errors.New("only @jpeg is served")
	}
	c, err := xrpc.DecodeCID(raw)
	if err != nil {
		return Preset{}, "", cid.Undef, err
	}
	return preset, did, c, nil
}

// variantKey is where a variant lives in the cache directory.
func variantKey(p string, did syntax.DID, c string) string {
	return path.Join(imgCacheDir, p, string(did), c+".jpg")
}

// dropVariants forgets the cached variants of did's blob c, or of all did's blobs when c
// is empty: a deleted blob's thumbnails must not outlive it.
func (s *Store) dropVariants(did syntax.DID, c string) {
	for name := range presets {
		if c != "" {
			s.variants.removeKey(variantKey(name, did, c))
		} else {
			s.variants.removePrefix(path.Join(imgCacheDir, name, string(did)) + "/")
		}
	}
	if c == "" {
		s.remote.removePrefix(path.Join(remoteCacheDir, string(did)) + "/")
	}
}

// HandleImage serves GET/HEAD /img/<preset>/plain/<did>/<cid>@jpeg: the image blob
// resized to the preset as JPEG, from the disk cache when it is there. A local account's
// committed blob is read from the store (nothing for a deactivated or taken-down
// account); any other DID's blob is fetched from its PDS, verified against the CID and
// cached. Responses carry the immutable caching headers, so a CDN can sit in front.
// Errors are plain-text HTTP statuses: this is not an XRPC endpoint.
func (s *Store) HandleImage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p, did, c, err := parseImagePath(r.URL.Path)
	if err != nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	body, err := s.variant(r.Context(), p, did, c.String())
	if err != nil {
		s.imageError(w, r, err)
		return
	}
	defer body.Close()
	setImmutable(w.Header(), `"`+p.Name+"-"+c.String()+`"`)
	w.Header().Set("Content-Type", "image/jpeg")
	http.ServeContent(w, r, "", time.Time{}, body)
}

// imageError answers a failed image request with a status and a short text; only
// unexpected failures reach the log.
func (s *Store) imageError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away
	}
	w.Header().Set("Cache-Control", "no-store")
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrBlobNotFound), errors.Is(err, ErrAccountNotFound),
		errors.Is(err, ErrAccountDeactivated), errors.Is(err, ErrAccountTakendown):
		status = http.StatusNotFound
	case errors.Is(err, ErrImageTooLarge), errors.Is(err, ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnsupportedImage):
		status = http.StatusUnsupportedMediaType
	case errors.Is(err, ErrRemoteFetch):
		status = http.StatusBadGateway
	default:
		s.log.ErrorContext(r.Context(), "image request failed", "path", r.URL.Path, "err", err)
	}
	http.Error(w, http.StatusText(status), status)
}

// readSeekCloser is a variant body: the cached file or freshly made bytes.
type readSeekCloser interface {
	io.ReadSeeker
	io.Closer
}

type bytesBody struct{ *bytes.Reader }

func (bytesBody) Close() error { return nil }

// imageSource says where did's blobs come from: true for a local active account, false
// for another host's account. Errors: the account errors of servable, or
// ErrAccountNotFound for a remote DID when no resolver is configured.
func (s *Store) imageSource(ctx context.Context, did syntax.DID) (local bool, err error) {
	st, err := s.accounts.BlobAccountState(ctx, did)
	if err != nil {
		return false, fmt.Errorf("account state of %s: %w", did, err)
	}
	switch st {
	case AccountNotHosted:
		if s.resolver == nil {
			return false, fmt.Errorf("%w: %s is not local and remote images are off", ErrAccountNotFound, did)
		}
		return false, nil
	case AccountActive:
		return true, nil
	}
	return false, s.servable(ctx, did)
}

// variant returns preset p of did's blob c, making and caching it on a miss. The
// account check comes first, so a taken-down account's cached variants are not served.
func (s *Store) variant(ctx context.Context, p Preset, did syntax.DID, c string) (readSeekCloser, error) {
	local, err := s.imageSource(ctx, did)
	if err != nil {
		return nil, err
	}
	key := variantKey(p.Name, did, c)
	if _, ok := s.variants.get(key); ok {
		f, err := s.cache.Open(key)
		if err == nil {
			return f, nil
		}
		s.variants.removeKey(key) // evicted under us, or removed by hand: make it again
	}
	// One generation per key however many requests ask. If the generating request is
	// cancelled, the others see its context error; they try once more with their own.
	for attempt := 0; ; attempt++ {
		v, err, _ := s.flight.Do(key, func() (any, error) { return s.makeVariant(ctx, key, p, did, c, local) })
		if err == nil {
			return bytesBody{bytes.NewReader(v.([]byte))}, nil
		}
		if attempt == 0 && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			continue
		}
		return nil, err
	}
}

// makeVariant reads the source, resizes it and writes the variant to the cache.
func (s *Store) makeVariant(ctx context.Context, key string, p Preset, did syntax.DID, c string, local bool) ([]byte, error) {
	var (
		src []byte
		err error
	)
	if local {
		src, err = s.readLocal(ctx, did, c)
	} else {
		src, err = s.remoteBlob(ctx, did, c)
	}
	if err != nil {
		return nil, err
	}
	select {
	case s.decoders <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out, err := thumbnail(src, p, s.cfg.MaxPixels)
	<-s.decoders
	if err != nil {
		return nil, fmt.Errorf("make %s of %s: %w", p.Name, c, err)
	}
	if err := s.writeCache(key, out); err != nil {
		// The variant is still good to serve; the next request tries caching again.
		s.log.WarnContext(ctx, "cache image variant", "cid", c, "err", err)
		return out, nil
	}
	s.variants.add(key, int64(len(out)), s.now())
	return out, nil
}

// readLocal reads did's committed blob c, refusing one larger than MaxImageSize.
func (s *Store) readLocal(ctx context.Context, did syntax.DID, c string) ([]byte, error) {
	f, info, err := s.openCommitted(ctx, did, c)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info.size > s.cfg.MaxImageSize {
		return nil, fmt.Errorf("%w: image blob of %d bytes", ErrTooLarge, info.size)
	}
	data, err := io.ReadAll(io.LimitReader(f, s.cfg.MaxImageSize+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", c, err)
	}
	return data, nil
}

// writeCache writes data to key in the cache directory, temp → fsync → rename: the
// variant is served as immutable, so a torn file must never appear under its name.
func (s *Store) writeCache(key string, data []byte) error {
	f, tmp, err := s.createTemp(s.cache)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.cache.MkdirAll(path.Dir(key), 0o750)
	}
	if err == nil {
		err = s.cache.Rename(tmp, key)
	}
	if err != nil {
		if rerr := s.cache.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// openCached opens key in the cache directory.
func (s *Store) openCached(key string) (*os.File, error) { return s.cache.Open(key) }
