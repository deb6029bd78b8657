package repo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"
)

// sameAsReadCAR fails unless ParseCAR(in) gives what ReadCAR gives: the same roots and
// blocks, or an error of the same class.
func sameAsReadCAR(t *testing.T, in []byte, lim CARLimits) {
	t.Helper()
	want, wantErr := ReadCAR(bytes.NewReader(in), lim)
	got, err := ParseCAR(in, lim)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("ParseCAR = %v, ReadCAR = %v", err, wantErr)
	}
	if err != nil {
		// An oversized CAR may be malformed too; which of the two is reported first differs.
		if errors.Is(err, ErrTooLarge) || errors.Is(wantErr, ErrTooLarge) {
			return
		}
		if !errors.Is(err, ErrInvalidCAR) || !errors.Is(wantErr, ErrInvalidCAR) {
			t.Fatalf("ParseCAR = %v, ReadCAR = %v; want both ErrInvalidCAR", err, wantErr)
		}
		return
	}
	if !slices.Equal(got.Roots, want.Roots) {
		t.Fatalf("ParseCAR roots = %v, ReadCAR %v", got.Roots, want.Roots)
	}
	if len(got.Blocks) != len(want.Blocks) {
		t.Fatalf("ParseCAR = %d blocks, ReadCAR %d", len(got.Blocks), len(want.Blocks))
	}
	for i, b := range want.Blocks {
		if got.Blocks[i].CID != b.CID || !bytes.Equal(got.Blocks[i].Data, b.Data) {
			t.Fatalf("ParseCAR block %d = %s, ReadCAR %s", i, got.Blocks[i].CID, b.CID)
		}
		if data, ok := got.Get(b.CID); !ok || !bytes.Equal(data, b.Data) {
			t.Fatalf("ParseCAR Get(%s) = %v", b.CID, ok)
		}
	}
}

func TestParseCARMatchesReadCAR(t *testing.T) {
	t.Parallel()
	good := decodeB64(t, readCARFixtures(t)[0].CAR)
	hlen, hn := binary.Uvarint(good)
	header := good[:hn+int(hlen)]
	block := func(c cid.Cid, data []byte) []byte {
		var b bytes.Buffer
		if err := WriteCARBlock(&b, c, data); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	rec := []byte{0xa1, 0x61, 'a', 0x01}
	tests := []struct {
		name string
		in   []byte
		lim  CARLimits
	}{
		{"fixture", good, DefaultCARLimits()},
		{"duplicate block", cat(good, block(CBORCID(rec), rec), block(CBORCID(rec), rec)), DefaultCARLimits()},
		{"empty", nil, DefaultCARLimits()},
		{"zero header", []byte{0}, DefaultCARLimits()},
		{"truncated header", header[:len(header)-1], DefaultCARLimits()},
		{"truncated block", good[:len(good)-1], DefaultCARLimits()},
		{"hash mismatch", cat(header, block(CBORCID([]byte{0xa0}), []byte{0xa1})), DefaultCARLimits()},
		{"varint overflow", cat(header, bytes.Repeat([]byte{0xff}, 10), []byte{0x01}), DefaultCARLimits()},
		{"varint not shortest", cat(header, []byte{0x81, 0x00}), DefaultCARLimits()},
		{"lying length", cat(header, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}), CARLimits{}},
		{"total limit", good, CARLimits{MaxBytes: int64(len(good) - 1)}},
		{"block count", good, CARLimits{MaxBlocks: 4}},
		{"block size", cat(header, block(RawCID([]byte("blob")), []byte("blob"))), CARLimits{MaxBlockSize: 3}},
		{"header size", good, CARLimits{MaxHeaderSize: int(hlen) - 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sameAsReadCAR(t, tt.in, tt.lim)
		})
	}
}

func FuzzParseCAR(f *testing.F) {
	for _, fx := range readCARFixtures(f) {
		f.Add(decodeB64(f, fx.CAR))
	}
	lim := CARLimits{MaxBytes: 1 << 20, MaxBlocks: 100, MaxBlockSize: 1 << 16, MaxHeaderSize: 1 << 10}
	f.Fuzz(func(t *testing.T, in []byte) {
		sameAsReadCAR(t, in, lim)
	})
}
