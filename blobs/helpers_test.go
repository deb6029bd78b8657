package blobs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/aerie-social/aerie/node/xrpc"
)

const (
	aliceDID = syntax.DID("did:plc:alice000000000000000000")
	bobDID   = syntax.DID("did:plc:bob00000000000000000000")
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeAccounts is an AccountStatus: DIDs not in the map are not hosted.
type fakeAccounts struct {
	mu     sync.Mutex
	states map[syntax.DID]AccountState
}

func (a *fakeAccounts) BlobAccountState(_ context.Context, did syntax.DID) (AccountState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.states[did], nil
}

func (a *fakeAccounts) set(did syntax.DID, st AccountState) {
	a.mu.Lock()
	a.states[did] = st
	a.mu.Unlock()
}

// fakeRefs is a RefChecker over a set of (did, cid).
type fakeRefs struct {
	mu   sync.Mutex
	refs map[string]bool
}

func (r *fakeRefs) BlobReferenced(_ context.Context, did syntax.DID, c cid.Cid) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refs[string(did)+"/"+c.String()], nil
}

func (r *fakeRefs) add(did syntax.DID, c cid.Cid) {
	r.mu.Lock()
	r.refs[string(did)+"/"+c.String()] = true
	r.mu.Unlock()
}

// staticResolver resolves every DID to one endpoint.
type staticResolver string

func (s staticResolver) ResolvePDS(context.Context, syntax.DID) (string, error) {
	return string(s), nil
}

type testEnv struct {
	s        *Store
	clock    *fakeClock
	accounts *fakeAccounts
	refs     *fakeRefs
	srv      *httptest.Server
}

// newTestEnv opens a store in a temp dir with alice and bob active, and serves its
// handlers over a real HTTP server the way the node mounts them.
func newTestEnv(t testing.TB, cfg Config, deps Deps) *testEnv {
	t.Helper()
	env := &testEnv{
		clock:    newFakeClock(),
		accounts: &fakeAccounts{states: map[syntax.DID]AccountState{aliceDID: AccountActive, bobDID: AccountActive}},
		refs:     &fakeRefs{refs: map[string]bool{}},
	}
	deps.Accounts = env.accounts
	deps.Refs = env.refs
	if deps.Now == nil {
		deps.Now = env.clock.Now
	}
	dir := t.TempDir()
	s, err := Open(context.Background(), dir+"/blobs", dir+"/cache", cfg, deps, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	env.s = s
	mux := http.NewServeMux()
	mux.HandleFunc("GET /xrpc/com.atproto.sync.getBlob", adapt(s.HandleGetBlob))
	mux.HandleFunc("GET /xrpc/com.atproto.sync.listBlobs", adapt(s.HandleListBlobs))
	mux.HandleFunc("POST /xrpc/com.atproto.repo.uploadBlob", adapt(func(w http.ResponseWriter, r *http.Request) error {
		// The node authenticates; tests name the account in a header.
		return s.HandleUploadBlob(w, r, syntax.DID(r.Header.Get("X-Test-DID")))
	}))
	mux.HandleFunc(ImagePathPrefix, s.HandleImage)
	env.srv = httptest.NewServer(mux)
	t.Cleanup(env.srv.Close)
	return env
}

// adapt maps errors the way node/errors.go is asked to.
func adapt(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var xe *xrpc.Error
		switch {
		case errors.As(err, &xe):
			xrpc.WriteError(w, xe.Status, xe.Name, xe.Message)
		case errors.Is(err, ErrBlobNotFound):
			xrpc.WriteError(w, 400, "BlobNotFound", err.Error())
		case errors.Is(err, ErrTooLarge), errors.Is(err, ErrQuotaExceeded):
			xrpc.WriteError(w, 413, "PayloadTooLarge", err.Error())
		case errors.Is(err, ErrInvalidMimeType):
			xrpc.WriteError(w, 400, "InvalidMimeType", err.Error())
		case errors.Is(err, ErrAccountDeactivated):
			xrpc.WriteError(w, 400, "RepoDeactivated", err.Error())
		case errors.Is(err, ErrAccountTakendown):
			xrpc.WriteError(w, 400, "RepoTakendown", err.Error())
		case errors.Is(err, ErrAccountNotFound):
			xrpc.WriteError(w, 400, "RepoNotFound", err.Error())
		default:
			xrpc.WriteError(w, 500, "InternalServerError", err.Error())
		}
	}
}

// rawCIDOf computes a blob CID independently of the store, through go-cid.
func rawCIDOf(t testing.TB, data []byte) cid.Cid {
	t.Helper()
	c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_256, MhLength: -1}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// upload stores data for did and commits it, returning the ref.
func (e *testEnv) uploadCommitted(t testing.TB, did syntax.DID, mime string, data []byte) Ref {
	t.Helper()
	ctx := context.Background()
	ref, err := e.s.Upload(ctx, did, mime, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if err := e.s.Check(ctx, did, ref.CID, ref.MimeType, ref.Size); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := e.s.Committed(ctx, did, syntax.NewTIDNow(0), []cid.Cid{ref.CID}, nil); err != nil {
		t.Fatalf("Committed: %v", err)
	}
	return ref
}

func (e *testEnv) get(t testing.TB, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", path, err)
	}
	return resp, body
}

func getBlobPath(did syntax.DID, c cid.Cid) string {
	return "/xrpc/com.atproto.sync.getBlob?did=" + string(did) + "&cid=" + c.String()
}

// testImage draws a w×h image: left half red, right half blue, with a gradient so that
// encoders cannot shrink it to nothing.
func testImage(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{R: 230, G: uint8(y * 40 / max(h, 1)), B: 20, A: 255}
			if x >= w/2 {
				c = color.RGBA{R: 20, G: uint8(y * 40 / max(h, 1)), B: 230, A: 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// withOrientation inserts an EXIF APP1 segment with the given orientation right after a
// JPEG's SOI marker.
func withOrientation(jpg []byte, o uint16) []byte {
	var tiff bytes.Buffer
	tiff.WriteString("MM\x00\x2a\x00\x00\x00\x08") // big-endian, IFD0 at 8
	binary.Write(&tiff, binary.BigEndian, uint16(1))
	binary.Write(&tiff, binary.BigEndian, []uint16{0x0112, 3})
	binary.Write(&tiff, binary.BigEndian, uint32(1))
	binary.Write(&tiff, binary.BigEndian, []uint16{o, 0})
	binary.Write(&tiff, binary.BigEndian, uint32(0)) // no next IFD
	payload := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	seg := []byte{0xFF, 0xE1, 0, 0}
	binary.BigEndian.PutUint16(seg[2:], uint16(len(payload)+2))
	out := append([]byte{}, jpg[:2]...)
	out = append(out, seg...)
	out = append(out, payload...)
	return append(out, jpg[2:]...)
}

// pngHeader returns a PNG that is only a signature, an IHDR for w×h RGBA and IEND: what
// a decompression bomb's first bytes look like.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk("IHDR", ihdr)
	chunk("IEND", nil)
	return b.Bytes()
}

func openRootForTest(dir string) (*os.Root, error) { return os.OpenRoot(dir) }

func decodeJPEGConfigF(t testing.TB, b []byte) image.Config {
	t.Helper()
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("output is not a JPEG: %v", err)
	}
	return cfg
}
