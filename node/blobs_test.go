package node

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"testing"
)

func TestBlobUploadReferenceServeDelete(t *testing.T) {
	t.Parallel()
	_, base := testNode(t)
	sess := createTestAccount(t, base, "pics.test")
	did, access := sess["did"].(string), sess["accessJwt"].(string)

	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = byte(i)
	}
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	var buf bytes.Buffer
	png.Encode(&buf, img)

	req, _ := http.NewRequest("POST", base+"/xrpc/com.atproto.repo.uploadBlob", bytes.NewReader(buf.Bytes()))
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("Content-Type", "text/html") // a lie: the node sniffs the bytes
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var up struct {
		Blob struct {
			Ref      map[string]string `json:"ref"`
			MimeType string            `json:"mimeType"`
			Size     int               `json:"size"`
		} `json:"blob"`
	}
	if err := decodeBody(resp, &up); err != nil || resp.StatusCode != 200 {
		t.Fatalf("uploadBlob = %d %v", resp.StatusCode, err)
	}
	if up.Blob.MimeType != "image/png" || up.Blob.Size != buf.Len() {
		t.Errorf("uploadBlob blob = %+v, want image/png of %d bytes", up.Blob, buf.Len())
	}
	blobCID := up.Blob.Ref["$link"]

	// A post referencing a blob that was never uploaded is refused before any commit.
	status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.createRecord", fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","record":{
		"text":"x","createdAt":"2026-11-25T12:00:00Z","embed":{"$type":"app.bsky.embed.images","images":[{"alt":"","image":
		{"$type":"blob","ref":{"$link":"bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},"mimeType":"image/png","size":10}}]}}}`, did), bearer(access))
	if status != 400 || out["error"] != "BlobNotFound" {
		t.Errorf("post with an unknown blob = %d %v, want 400 BlobNotFound", status, out)
	}

	post := fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","rkey":"withpic","record":{"text":"a picture",
		"createdAt":"2026-11-25T12:00:00Z","embed":{"$type":"app.bsky.embed.images","images":[{"alt":"gradient",
		"image":{"$type":"blob","ref":{"$link":%q},"mimeType":"image/png","size":%d}}]}}}`, did, blobCID, buf.Len())
	if status, out, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.repo.createRecord", post, bearer(access)); status != 200 {
		t.Fatalf("createRecord with the blob = %d %v", status, out)
	}
	resp, err = http.Get(base + "/xrpc/com.atproto.sync.getBlob?did=" + did + "&cid=" + blobCID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, buf.Bytes()) || resp.Header.Get("Content-Type") != "image/png" ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("getBlob = %d, %d bytes, headers %v", resp.StatusCode, len(got), resp.Header)
	}
	resp, err = http.Get(base + "/img/feed_thumbnail/plain/" + did + "/" + blobCID + "@jpeg")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Errorf("thumbnail = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// Deleting the only post that uses the blob deletes the blob.
	getJSON(t, "POST", base+"/xrpc/com.atproto.repo.deleteRecord",
		fmt.Sprintf(`{"repo":%q,"collection":"app.bsky.feed.post","rkey":"withpic"}`, did), bearer(access))
	resp, err = http.Get(base + "/xrpc/com.atproto.sync.getBlob?did=" + did + "&cid=" + blobCID)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("getBlob after the last reference went = %d, want 400 BlobNotFound", resp.StatusCode)
	}
}
