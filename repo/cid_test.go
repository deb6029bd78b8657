package repo

import (
	"bytes"
	"io"
	"testing"

	"github.com/ipfs/go-cid"
)

func TestCIDs(t *testing.T) {
	t.Parallel()
	data := []byte("hello world")
	tests := []struct {
		name   string
		got    cid.Cid
		codec  uint64
		prefix string
	}{
		{"cbor", CBORCID(data), cid.DagCBOR, "bafyrei"},
		{"raw", RawCID(data), cid.Raw, "bafkrei"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want, err := cid.NewPrefixV1(tt.codec, 0x12).Sum(data)
			if err != nil {
				t.Fatal(err)
			}
			if tt.got != want {
				t.Errorf("CID = %s, want %s", tt.got, want)
			}
			if s := tt.got.String(); s[:7] != tt.prefix {
				t.Errorf("CID string %s, want prefix %s", s, tt.prefix)
			}
			if n := len(tt.got.Bytes()); n != 36 {
				t.Errorf("CID is %d bytes, want 36", n)
			}
		})
	}
}

func TestRawCIDHasher(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789"), 100_000)
	h := NewRawCIDHasher()
	if _, err := io.Copy(h, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if h.CID() != RawCID(data) || h.Size() != int64(len(data)) {
		t.Errorf("hasher = %s %d, want %s %d", h.CID(), h.Size(), RawCID(data), len(data))
	}
}
