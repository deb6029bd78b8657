package blobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// remoteBlob returns another host's blob c of did, from the remote cache while it is
// younger than RemoteCacheTTL, otherwise fetched from did's PDS with
// com.atproto.sync.getBlob and verified against c. Errors: ErrRemoteFetch,
// ErrBlobNotFound (the host says so), ErrTooLarge.
func (s *Store) remoteBlob(ctx context.Context, did syntax.DID, c string) ([]byte, error) {
	key := path.Join(remoteCacheDir, string(did), c)
	if added, ok := s.remote.get(key); ok && s.now().Sub(added) < s.cfg.RemoteCacheTTL {
		f, err := s.openCached(key)
		if err == nil {
			data, rerr := io.ReadAll(io.LimitReader(f, s.cfg.MaxImageSize+1))
			f.Close()
			// The file was verified when written; a short or failed read means it was
			// damaged, so fetch it again.
			if rerr == nil && len(data) > 0 && int64(len(data)) <= s.cfg.MaxImageSize {
				return data, nil
			}
		}
		s.remote.removeKey(key)
	}
	v, err, _ := s.flight.Do(key, func() (any, error) { return s.fetchRemote(ctx, key, did, c) })
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// fetchRemote downloads did's blob c from its PDS, checks that its sha2-256 digest is the
// one c names, and caches it under key.
func (s *Store) fetchRemote(ctx context.Context, key string, did syntax.DID, c string) ([]byte, error) {
	want, err := cid.Decode(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRemoteFetch, err)
	}
	mh, err := multihash.Decode(want.Hash())
	if err != nil || mh.Code != multihash.SHA2_256 || len(mh.Digest) != sha256.Size {
		// Every atproto blob CID is sha2-256; anything else cannot be verified here.
		return nil, fmt.Errorf("%w: %s is not a sha2-256 CID", ErrRemoteFetch, c)
	}
	endpoint, err := s.resolver.ResolvePDS(ctx, did)
	if err != nil {
		return nil, fmt.Errorf("%w: resolve PDS of %s: %w", ErrRemoteFetch, did, err)
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%w: PDS endpoint %q of %s is not an http(s) URL", ErrRemoteFetch, endpoint, did)
	}
	u = u.JoinPath("/xrpc/com.atproto.sync.getBlob")
	u.RawQuery = url.Values{"did": {string(did)}, "cid": {c}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRemoteFetch, err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRemoteFetch, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s answered %d for %s", ErrBlobNotFound, u.Host, resp.StatusCode, c)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: %s answered %d for %s", ErrRemoteFetch, u.Host, resp.StatusCode, c)
	case resp.ContentLength > s.cfg.MaxImageSize:
		return nil, fmt.Errorf("%w: remote blob of %d bytes", ErrTooLarge, resp.ContentLength)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxImageSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrRemoteFetch, c, err)
	}
	if int64(len(data)) > s.cfg.MaxImageSize {
		return nil, fmt.Errorf("%w: remote blob larger than %d bytes", ErrTooLarge, s.cfg.MaxImageSize)
	}
	if sum := sha256.Sum256(data); !bytes.Equal(sum[:], mh.Digest) {
		return nil, fmt.Errorf("%w: %s sent bytes that do not match %s", ErrRemoteFetch, u.Host, c)
	}
	if err := s.writeCache(key, data); err != nil {
		s.log.WarnContext(ctx, "cache remote blob", "did", did, "cid", c, "err", err)
		return data, nil
	}
	s.remote.add(key, int64(len(data)), s.now())
	return data, nil
}
