package blobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/google/go-cmp/cmp"
	"github.com/ipfs/go-cid"
)

func TestUploadReferenceGetBlob(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	data := encodePNG(t, testImage(64, 48))

	req, _ := http.NewRequest(http.MethodPost, env.srv.URL+"/xrpc/com.atproto.repo.uploadBlob", bytes.NewReader(data))
	req.Header.Set("Content-Type", "image/png")
	req.Header.Set("X-Test-DID", string(aliceDID))
	resp, err := env.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := rawCIDOf(t, data)
	wantJSON := map[string]any{"blob": map[string]any{
		"$type": "blob", "ref": map[string]any{"$link": want.String()}, "mimeType": "image/png", "size": float64(len(data)),
	}}
	if diff := cmp.Diff(wantJSON, out); diff != "" {
		t.Fatalf("uploadBlob answer (-want +got):\n%s", diff)
	}

	// Temporary: not served, not listed.
	if resp, _ := env.get(t, getBlobPath(aliceDID, want)); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("getBlob of a temporary blob: status %d, want 400", resp.StatusCode)
	}
	if err := env.s.Check(t.Context(), aliceDID, want, "image/png", int64(len(data))); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := env.s.Committed(t.Context(), aliceDID, syntax.NewTIDNow(0), []cid.Cid{want}, nil); err != nil {
		t.Fatalf("Committed: %v", err)
	}

	resp, body := env.get(t, getBlobPath(aliceDID, want))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("getBlob: status %d, %d bytes; want 200 and the %d uploaded bytes", resp.StatusCode, len(body), len(data))
	}
	for k, v := range map[string]string{
		"ETag":                    `"` + want.String() + `"`,
		"Cache-Control":           "public, max-age=31536000, immutable",
		"Content-Type":            "image/png",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "default-src 'none'; sandbox",
		"Content-Disposition":     `inline; filename="` + want.String() + `"`,
		"Content-Length":          fmt.Sprint(len(data)),
		"Accept-Ranges":           "bytes",
	} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("getBlob header %s = %q, want %q", k, got, v)
		}
	}
	// A revalidation with the ETag costs no body.
	if resp, _ := env.get(t, getBlobPath(aliceDID, want), "If-None-Match", `"`+want.String()+`"`); resp.StatusCode != http.StatusNotModified {
		t.Errorf("getBlob If-None-Match: status %d, want 304", resp.StatusCode)
	}
	// Another account does not have it.
	if resp, _ := env.get(t, getBlobPath(bobDID, want)); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("getBlob for bob: status %d, want 400 BlobNotFound", resp.StatusCode)
	}
}

func TestGetBlobRange(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	data := bytes.Repeat([]byte("0123456789"), 1000)
	ref := env.uploadCommitted(t, aliceDID, "application/octet-stream", data)
	resp, body := env.get(t, getBlobPath(aliceDID, ref.CID), "Range", "bytes=10-19")
	if resp.StatusCode != http.StatusPartialContent || string(body) != "0123456789" {
		t.Errorf("Range bytes=10-19: status %d body %q, want 206 %q", resp.StatusCode, body, "0123456789")
	}
	if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes 10-19/%d", len(data)); got != want {
		t.Errorf("Content-Range = %q, want %q", got, want)
	}
	resp, _ = env.get(t, getBlobPath(aliceDID, ref.CID), "Range", fmt.Sprintf("bytes=%d-", len(data)+5))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("Range past the end: status %d, want 416", resp.StatusCode)
	}
}

func TestContentTypes(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	pngData := encodePNG(t, testImage(8, 8))
	svg := []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`)
	html := []byte(`<!DOCTYPE html><html><body><script>alert(1)</script></body></html>`)
	tests := []struct {
		name            string
		declared        string
		data            []byte
		wantType        string
		wantDisposition string
	}{
		{"png disguised as html is served as png", "text/html", pngData, "image/png", "inline"},
		{"svg is never inline", "image/svg+xml", svg, "image/svg+xml", "attachment"},
		{"html is an attachment", "text/html; charset=utf-8", html, "text/html", "attachment"},
		{"no declared type", "", []byte("plain bytes"), "application/octet-stream", "attachment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := env.uploadCommitted(t, aliceDID, tt.declared, tt.data)
			resp, _ := env.get(t, getBlobPath(aliceDID, ref.CID))
			if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, tt.wantType) {
				t.Errorf("Content-Type = %q, want %q", got, tt.wantType)
			}
			if got := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(got, tt.wantDisposition+";") {
				t.Errorf("Content-Disposition = %q, want %s", got, tt.wantDisposition)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
			if got := resp.Header.Get("Content-Security-Policy"); got != blobCSP {
				t.Errorf("Content-Security-Policy = %q, want %q", got, blobCSP)
			}
		})
	}
	// HTML claiming to be an image is a polyglot: refused.
	if _, err := env.s.Upload(t.Context(), aliceDID, "image/png", bytes.NewReader(html)); !errors.Is(err, ErrInvalidMimeType) {
		t.Errorf("Upload(html as image/png) = %v, want ErrInvalidMimeType", err)
	}
}

func TestUploadLimits(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.MaxSize = 4 << 10
	cfg.Quota = 10 << 10
	env := newTestEnv(t, cfg, Deps{})
	ctx := t.Context()
	if _, err := env.s.Upload(ctx, aliceDID, "", bytes.NewReader(make([]byte, 4<<10+1))); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Upload(MaxSize+1 bytes) = %v, want ErrTooLarge", err)
	}
	if _, err := env.s.Upload(ctx, aliceDID, "", bytes.NewReader(make([]byte, 4<<10))); err != nil {
		t.Errorf("Upload(MaxSize bytes) = %v, want success", err)
	}
	if _, err := env.s.Upload(ctx, aliceDID, "", bytes.NewReader(bytes.Repeat([]byte{1}, 4<<10))); err != nil {
		t.Errorf("second upload = %v", err)
	}
	_, err := env.s.Upload(ctx, aliceDID, "", bytes.NewReader(bytes.Repeat([]byte{2}, 4<<10)))
	if !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("upload past the quota = %v, want ErrQuotaExceeded", err)
	}
	u, err := env.s.Usage(ctx, aliceDID)
	if err != nil || u.Bytes != 8<<10 || u.Count != 2 {
		t.Errorf("Usage = %+v, %v; want 8192 bytes in 2 blobs", u, err)
	}
	// The quota is per account; no temp file is left behind by the refusals.
	if _, err := env.s.Upload(ctx, bobDID, "", bytes.NewReader(bytes.Repeat([]byte{2}, 4<<10))); err != nil {
		t.Errorf("bob's upload = %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(env.s.root.Name(), tmpDirName))
	if len(entries) != 0 {
		t.Errorf("%d temporary files left, want 0", len(entries))
	}
	all, next, err := env.s.ListUsage(ctx, "", 10)
	if err != nil || len(all) != 2 || next != "" {
		t.Errorf("ListUsage = %+v, %q, %v; want two accounts", all, next, err)
	}
	// A declared Content-Length over the limit is refused before reading.
	req, _ := http.NewRequest(http.MethodPost, env.srv.URL+"/xrpc/com.atproto.repo.uploadBlob", bytes.NewReader(make([]byte, 5<<10)))
	req.Header.Set("X-Test-DID", string(bobDID))
	resp, err := env.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("uploadBlob of 5 KiB: status %d, want 413", resp.StatusCode)
	}
}

func TestConcurrentUploadsOfOneBlob(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	data := bytes.Repeat([]byte("same bytes "), 50_000)
	want := rawCIDOf(t, data)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			ref, err := env.s.Upload(t.Context(), aliceDID, "text/plain", bytes.NewReader(data))
			if err == nil && !ref.CID.Equals(want) {
				err = fmt.Errorf("cid %s, want %s", ref.CID, want)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Upload: %v", err)
		}
	}
	u, err := env.s.Usage(t.Context(), aliceDID)
	if err != nil || u.Count != 1 || u.Bytes != int64(len(data)) {
		t.Errorf("Usage = %+v, %v; want one blob of %d bytes", u, err, len(data))
	}
	got, err := os.ReadFile(filepath.Join(env.s.root.Name(), string(aliceDID), want.String()))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("stored file: %d bytes, %v; want the uploaded bytes", len(got), err)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	data := encodePNG(t, testImage(4, 4))
	ref, err := env.s.Upload(t.Context(), aliceDID, "image/png", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	other := rawCIDOf(t, []byte("never uploaded"))
	tests := []struct {
		name string
		did  syntax.DID
		c    cid.Cid
		mime string
		size int64
		want error
	}{
		{"match", aliceDID, ref.CID, "image/png", ref.Size, nil},
		{"legacy ref without size", aliceDID, ref.CID, "image/png", -1, nil},
		{"missing blob", aliceDID, other, "image/png", 10, ErrBlobNotFound},
		{"another account's blob", bobDID, ref.CID, "image/png", ref.Size, ErrBlobNotFound},
		{"wrong mime type", aliceDID, ref.CID, "image/jpeg", ref.Size, ErrInvalidMimeType},
		{"wrong size", aliceDID, ref.CID, "image/png", ref.Size + 1, ErrInvalidSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := env.s.Check(t.Context(), tt.did, tt.c, tt.mime, tt.size); !errors.Is(err, tt.want) {
				t.Errorf("Check(%s, %s, %q, %d) = %v, want %v", tt.did, tt.c, tt.mime, tt.size, err, tt.want)
			}
		})
	}
}

func TestGarbageCollection(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	ctx := t.Context()
	orphan, err := env.s.Upload(ctx, aliceDID, "", bytes.NewReader([]byte("orphan")))
	if err != nil {
		t.Fatal(err)
	}
	lost, err := env.s.Upload(ctx, aliceDID, "", bytes.NewReader([]byte("committed, but the node crashed before telling us")))
	if err != nil {
		t.Fatal(err)
	}
	env.refs.add(aliceDID, lost.CID)
	kept := env.uploadCommitted(t, aliceDID, "", []byte("kept"))
	late, err := env.s.Upload(ctx, aliceDID, "", bytes.NewReader([]byte("checked late")))
	if err != nil {
		t.Fatal(err)
	}

	env.clock.Advance(5 * time.Hour)
	// A write being validated renews the grace period.
	if err := env.s.Check(ctx, aliceDID, late.CID, late.MimeType, late.Size); err != nil {
		t.Fatal(err)
	}
	if rep, err := env.s.GC(ctx); err != nil || rep.Expired != 0 || rep.Adopted != 0 {
		t.Errorf("GC inside the grace period = %+v, %v; want nothing removed", rep, err)
	}
	env.clock.Advance(2 * time.Hour)
	rep, err := env.s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Expired != 1 || rep.ExpiredBytes != orphan.Size || rep.Adopted != 1 {
		t.Errorf("GC after the grace period = %+v, want 1 expired of %d bytes and 1 adopted", rep, orphan.Size)
	}
	for _, tt := range []struct {
		ref  Ref
		want bool
	}{{orphan, false}, {lost, true}, {kept, true}, {late, true}} {
		_, statErr := os.Stat(filepath.Join(env.s.root.Name(), string(aliceDID), tt.ref.CID.String()))
		has, err := env.s.Has(ctx, aliceDID, tt.ref.CID)
		if err != nil || has != tt.want || (statErr == nil) != tt.want {
			t.Errorf("after GC, blob %s: indexed %v, file error %v; want present=%v", tt.ref.CID, has, statErr, tt.want)
		}
	}
	// The adopted blob is now served.
	if resp, _ := env.get(t, getBlobPath(aliceDID, lost.CID)); resp.StatusCode != http.StatusOK {
		t.Errorf("getBlob of an adopted blob: status %d, want 200", resp.StatusCode)
	}
	// An interrupted upload's temp file goes too.
	stale := filepath.Join(env.s.root.Name(), tmpDirName, "interrupted")
	if err := os.WriteFile(stale, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(7 * time.Hour)
	if rep, err := env.s.GC(ctx); err != nil || rep.StaleTemp != 1 {
		t.Errorf("GC with an interrupted upload = %+v, %v; want StaleTemp 1", rep, err)
	}
}

func TestBlobsRemovedAndAccountDeletion(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	ctx := t.Context()
	img := encodeJPEG(t, testImage(300, 200))
	a := env.uploadCommitted(t, aliceDID, "image/jpeg", img)
	b := env.uploadCommitted(t, aliceDID, "", []byte("second"))
	// A variant exists and must go with its blob.
	if resp, _ := env.get(t, ImagePath("avatar", aliceDID, a.CID)); resp.StatusCode != http.StatusOK {
		t.Fatalf("image: status %d", resp.StatusCode)
	}
	if err := env.s.Committed(ctx, aliceDID, syntax.NewTIDNow(0), nil, []cid.Cid{a.CID}); err != nil {
		t.Fatal(err)
	}
	if has, _ := env.s.Has(ctx, aliceDID, a.CID); has {
		t.Error("blob still indexed after its last reference was removed")
	}
	if n, _ := env.s.variants.usage(); n != 0 {
		t.Errorf("%d variants cached after the blob was deleted, want 0", n)
	}
	if resp, _ := env.get(t, ImagePath("avatar", aliceDID, a.CID)); resp.StatusCode != http.StatusNotFound {
		t.Errorf("image of a deleted blob: status %d, want 404", resp.StatusCode)
	}
	freed, err := env.s.DeleteAccount(ctx, aliceDID)
	if err != nil || freed != b.Size {
		t.Errorf("DeleteAccount = %d, %v; want %d", freed, err, b.Size)
	}
	if _, err := os.Stat(filepath.Join(env.s.root.Name(), string(aliceDID))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("account folder after DeleteAccount: %v, want not exist", err)
	}
	if u, _ := env.s.Usage(ctx, aliceDID); u.Count != 0 {
		t.Errorf("Usage after DeleteAccount = %+v", u)
	}
}

func TestListBlobs(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	ctx := t.Context()
	var all []string
	for i := range 5 {
		ref, err := env.s.Upload(ctx, aliceDID, "", bytes.NewReader([]byte{byte(i)}))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ref.CID.String())
		rev := syntax.TID(fmt.Sprintf("3l%011d", i))
		if err := env.s.Committed(ctx, aliceDID, rev, []cid.Cid{ref.CID}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.s.Upload(ctx, aliceDID, "", bytes.NewReader([]byte("temporary"))); err != nil {
		t.Fatal(err)
	}
	var got []string
	cursor := ""
	for {
		var page struct {
			Cursor string   `json:"cursor"`
			CIDs   []string `json:"cids"`
		}
		resp, body := env.get(t, "/xrpc/com.atproto.sync.listBlobs?limit=2&did="+string(aliceDID)+"&cursor="+cursor)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("listBlobs: %d %s", resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		got = append(got, page.CIDs...)
		if page.Cursor == "" {
			break
		}
		cursor = page.Cursor
	}
	sortedAll := append([]string(nil), all...)
	slices.Sort(sortedAll)
	if diff := cmp.Diff(sortedAll, got); diff != "" {
		t.Errorf("listBlobs pages (-want +got):\n%s", diff)
	}
	since, _, err := env.s.ListBlobs(ctx, aliceDID, syntax.TID(fmt.Sprintf("3l%011d", 2)), "", 100)
	if err != nil || len(since) != 2 {
		t.Errorf("ListBlobs since the third commit = %v, %v; want 2", since, err)
	}
	if resp, _ := env.get(t, "/xrpc/com.atproto.sync.listBlobs?limit=0&did="+string(aliceDID)); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("listBlobs limit=0: status %d, want 400", resp.StatusCode)
	}
}

func TestUnavailableAccountsNotServed(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, DefaultConfig(), Deps{})
	ref := env.uploadCommitted(t, aliceDID, "image/jpeg", encodeJPEG(t, testImage(50, 50)))
	if resp, _ := env.get(t, ImagePath("avatar", aliceDID, ref.CID)); resp.StatusCode != http.StatusOK {
		t.Fatalf("image while active: %d", resp.StatusCode)
	}
	for _, st := range []AccountState{AccountDeactivated, AccountTakendown} {
		env.accounts.set(aliceDID, st)
		if resp, body := env.get(t, getBlobPath(aliceDID, ref.CID)); resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("Repo")) {
			t.Errorf("getBlob with account state %d: %d %s, want 400 Repo…", st, resp.StatusCode, body)
		}
		// The cached variant is not served either.
		if resp, _ := env.get(t, ImagePath("avatar", aliceDID, ref.CID)); resp.StatusCode != http.StatusNotFound {
			t.Errorf("image with account state %d: status %d, want 404", st, resp.StatusCode)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	bad := DefaultConfig()
	bad.MaxSize, bad.GracePeriod, bad.Quota = 0, 0, -1
	err := bad.Validate()
	for _, key := range []string{"blobs.max_size", "blobs.grace_period", "blobs.quota"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate() = %v, want it to name %s", err, key)
		}
	}
}

func TestRefJSON(t *testing.T) {
	t.Parallel()
	c := rawCIDOf(t, []byte("x"))
	b, err := json.Marshal(Ref{CID: c, MimeType: "image/png", Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"$type":"blob","ref":{"$link":"` + c.String() + `"},"mimeType":"image/png","size":1}`
	if string(b) != want {
		t.Errorf("json.Marshal(Ref) = %s, want %s", b, want)
	}
	if !strings.HasPrefix(c.String(), "bafkrei") {
		t.Errorf("blob CID %s does not start bafkrei", c)
	}
}
