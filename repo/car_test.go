package repo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/aerie-social/aerie/node/interop"
	indigorepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/ipfs/go-cid"
)

type carFixture struct {
	Root   string `json:"root"`
	Blocks []struct {
		CID   string `json:"cid"`
		Bytes string `json:"bytes"`
	} `json:"blocks"`
	CAR string `json:"car"`
}

func readCARFixtures(t testing.TB) []carFixture {
	t.Helper()
	var fx []carFixture
	interop.JSON(t, "from-atproto/packages/repo/tests/car-file-fixtures.json", &fx)
	if len(fx) == 0 {
		t.Fatal("car-file-fixtures.json has no fixtures")
	}
	return fx
}

func TestCARFixtures(t *testing.T) {
	t.Parallel()
	for _, fx := range readCARFixtures(t) {
		t.Run(fx.Root, func(t *testing.T) {
			t.Parallel()
			raw := decodeB64(t, fx.CAR)
			f, err := ReadCAR(bytes.NewReader(raw), DefaultCARLimits())
			if err != nil {
				t.Fatalf("ReadCAR = %v", err)
			}
			if len(f.Roots) != 1 || f.Roots[0].String() != fx.Root {
				t.Errorf("ReadCAR roots = %v, want [%s]", f.Roots, fx.Root)
			}
			if len(f.Blocks) != len(fx.Blocks) {
				t.Errorf("ReadCAR has %d blocks, want %d", len(f.Blocks), len(fx.Blocks))
			}
			for i, want := range fx.Blocks {
				if i < len(f.Blocks) && f.Blocks[i].CID.String() != want.CID {
					t.Errorf("block %d = %s, want %s (order kept)", i, f.Blocks[i].CID, want.CID)
				}
				c, err := cid.Parse(want.CID)
				if err != nil {
					t.Fatal(err)
				}
				got, ok := f.Get(c)
				if !ok || !bytes.Equal(got, decodeB64(t, want.Bytes)) {
					t.Errorf("Get(%s) = %x, %v; want the fixture bytes", c, got, ok)
				}
			}

			// Writing the same roots and blocks gives the same bytes.
			var buf bytes.Buffer
			if err := WriteCARHeader(&buf, f.Roots...); err != nil {
				t.Fatal(err)
			}
			for _, b := range f.Blocks {
				if err := WriteCARBlock(&buf, b.CID, b.Data); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(buf.Bytes(), raw) {
				t.Errorf("written CAR =\n%x\nwant\n%x", buf.Bytes(), raw)
			}
		})
	}
}

// TestCARReadByIndigo writes a commit CAR and loads it with indigo's reader.
func TestCARReadByIndigo(t *testing.T) {
	t.Parallel()
	key := testKeys(t)["k256"]
	c := testCommit()
	if err := c.Sign(key); err != nil {
		t.Fatal(err)
	}
	raw, id, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := RecordFromJSON([]byte(`{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2024-01-01T00:00:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteCARHeader(&buf, id); err != nil {
		t.Fatal(err)
	}
	for _, b := range []Block{{rec.CID, rec.CBOR}, {id, raw}, {rec.CID, rec.CBOR}} {
		if err := WriteCARBlock(&buf, b.CID, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	ic, root, err := indigorepo.LoadCommitFromCAR(t.Context(), bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("indigo LoadCommitFromCAR = %v", err)
	}
	if *root != id || ic.Rev != string(c.Rev) || ic.Data != c.Data {
		t.Errorf("indigo read commit %s rev %s data %s, want %s %s %s", root, ic.Rev, ic.Data, id, c.Rev, c.Data)
	}
	// Our reader keeps the first copy of a duplicate.
	f, err := ReadCAR(bytes.NewReader(buf.Bytes()), DefaultCARLimits())
	if err != nil {
		t.Fatalf("ReadCAR = %v", err)
	}
	if len(f.Blocks) != 2 {
		t.Errorf("ReadCAR kept %d blocks, want 2", len(f.Blocks))
	}
}

func TestReadCARRejects(t *testing.T) {
	t.Parallel()
	good := decodeB64(t, readCARFixtures(t)[0].CAR)
	hlen, hn := binary.Uvarint(good)
	headerEnd := hn + int(hlen)

	block := func(c cid.Cid, data []byte) []byte {
		var b bytes.Buffer
		if err := WriteCARBlock(&b, c, data); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	header := good[:headerEnd]
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	rawBlock := RawCID([]byte("blob"))
	sha1CID := cid.NewCidV1(cid.Raw, []byte{0x11, 0x14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})

	tests := []struct {
		name    string
		in      []byte
		lim     CARLimits
		wantErr error
	}{
		{"empty", nil, DefaultCARLimits(), ErrInvalidCAR},
		{"zero header", []byte{0}, DefaultCARLimits(), ErrInvalidCAR},
		{"truncated header", good[:headerEnd-1], DefaultCARLimits(), ErrInvalidCAR},
		{"truncated block", good[:len(good)-1], DefaultCARLimits(), ErrInvalidCAR},
		{"hash mismatch", cat(header, block(CBORCID([]byte{0xa0}), []byte{0xa1})), DefaultCARLimits(), ErrInvalidCAR},
		{"sha1 cid", cat(header, block(sha1CID, []byte("x"))), DefaultCARLimits(), ErrInvalidCAR},
		{"header version 2", cat([]byte{0x12}, []byte{0xa2, 0x65, 'r', 'o', 'o', 't', 's', 0x80, 0x67, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x02}), DefaultCARLimits(), ErrInvalidCAR},
		{"header not map", []byte{0x01, 0x01}, DefaultCARLimits(), ErrInvalidCAR},
		{"varint overflow", cat(header, bytes.Repeat([]byte{0xff}, 10), []byte{0x01}), DefaultCARLimits(), ErrInvalidCAR},
		{"total limit", good, CARLimits{MaxBytes: int64(len(good) - 1)}, ErrTooLarge},
		{"block count", good, CARLimits{MaxBlocks: 4}, ErrTooLarge},
		{"block size", cat(header, block(rawBlock, []byte("blob"))), CARLimits{MaxBlockSize: 3}, ErrTooLarge},
		{"header size", good, CARLimits{MaxHeaderSize: int(hlen) - 1}, ErrTooLarge},
		{"lying length", cat(header, []byte{0xff, 0xff, 0xff, 0xff, 0x0f}), CARLimits{}, ErrInvalidCAR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := ReadCAR(bytes.NewReader(tt.in), tt.lim); !errors.Is(err, tt.wantErr) {
				t.Errorf("ReadCAR(%s) = %v, want %v", tt.name, err, tt.wantErr)
			}
		})
	}
}

func TestCARNoRoots(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := WriteCARHeader(&buf); err != nil {
		t.Fatal(err)
	}
	blob := []byte("some blob")
	if err := WriteCARBlock(&buf, RawCID(blob), blob); err != nil {
		t.Fatal(err)
	}
	f, err := ReadCAR(&buf, DefaultCARLimits())
	if err != nil {
		t.Fatalf("ReadCAR = %v", err)
	}
	if len(f.Roots) != 0 || len(f.Blocks) != 1 {
		t.Errorf("ReadCAR = %d roots %d blocks, want 0 and 1", len(f.Roots), len(f.Blocks))
	}
}

func FuzzReadCAR(f *testing.F) {
	for _, fx := range readCARFixtures(f) {
		f.Add(decodeB64(f, fx.CAR))
	}
	var buf bytes.Buffer
	if err := WriteCARHeader(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	lim := CARLimits{MaxBytes: 1 << 20, MaxBlocks: 100, MaxBlockSize: 1 << 16, MaxHeaderSize: 1 << 10}
	f.Fuzz(func(t *testing.T, in []byte) {
		cf, err := ReadCAR(bytes.NewReader(in), lim)
		if err != nil {
			return
		}
		if len(cf.Blocks) > lim.MaxBlocks {
			t.Fatalf("ReadCAR returned %d blocks over the limit", len(cf.Blocks))
		}
		for _, b := range cf.Blocks {
			if len(b.Data) > lim.MaxBlockSize {
				t.Fatalf("ReadCAR returned a %d-byte block over the limit", len(b.Data))
			}
			if err := verifyBlock(b.CID, b.Data); err != nil {
				t.Fatalf("ReadCAR returned unverified block %s: %v", b.CID, err)
			}
		}
	})
}
