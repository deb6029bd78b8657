package repo

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/aerie-social/aerie/node/interop"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/google/go-cmp/cmp"
)

type dataModelFixture struct {
	JSON       json.RawMessage `json:"json"`
	CBORBase64 string          `json:"cbor_base64"`
	CID        string          `json:"cid"`
}

func readDataModelFixtures(t testing.TB) []dataModelFixture {
	t.Helper()
	var fx []dataModelFixture
	interop.JSON(t, "data-model/data-model-fixtures.json", &fx)
	if len(fx) == 0 {
		t.Fatal("data-model-fixtures.json has no fixtures")
	}
	return fx
}

func decodeB64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		t.Fatalf("decode base64 %q: %v", s, err)
	}
	return b
}

// withType adds a $type to a fixture object so the record entry points accept it.
func withType(t testing.TB, raw json.RawMessage) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("decode fixture: %v", err)
	}
	m["$type"] = json.RawMessage(`"com.example.fixture"`)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDataModelFixtures(t *testing.T) {
	t.Parallel()
	for i, fx := range readDataModelFixtures(t) {
		t.Run(fx.CID, func(t *testing.T) {
			t.Parallel()
			want := decodeB64(t, fx.CBORBase64)

			data, err := parseJSONData(fx.JSON)
			if err != nil {
				t.Fatalf("fixture %d: parseJSONData = %v", i, err)
			}
			got, err := atdata.MarshalCBOR(data)
			if err != nil {
				t.Fatalf("MarshalCBOR = %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("CBOR of fixture %d =\n%x\nwant\n%x", i, got, want)
			}
			if c := CBORCID(got); c.String() != fx.CID {
				t.Errorf("CBORCID = %s, want %s", c, fx.CID)
			}
			if err := checkDAGCBOR(want, MaxRecordDepth); err != nil {
				t.Errorf("checkDAGCBOR(fixture %d) = %v", i, err)
			}

			// CBOR -> JSON -> CBOR is the identity on canonical bytes.
			js, err := RecordJSON(want)
			if err != nil {
				t.Fatalf("RecordJSON = %v", err)
			}
			again, err := parseJSONData(js)
			if err != nil {
				t.Fatalf("parseJSONData(RecordJSON) = %v", err)
			}
			back, err := atdata.MarshalCBOR(again)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, want) {
				t.Errorf("CBOR after JSON round trip =\n%x\nwant\n%x", back, want)
			}

			// Through the record entry points, with a $type added.
			rec, err := RecordFromJSON(withType(t, fx.JSON))
			if err != nil {
				t.Fatalf("RecordFromJSON = %v", err)
			}
			rec2, err := RecordFromCBOR(rec.CBOR)
			if err != nil {
				t.Fatalf("RecordFromCBOR = %v", err)
			}
			if rec2.CID != rec.CID || rec2.Type != "com.example.fixture" {
				t.Errorf("RecordFromCBOR = %s %s, want %s com.example.fixture", rec2.CID, rec2.Type, rec.CID)
			}
		})
	}
}

type dataModelCase struct {
	Note string          `json:"note"`
	JSON json.RawMessage `json:"json"`
}

func TestDataModelValidInvalid(t *testing.T) {
	t.Parallel()
	var valid, invalid []dataModelCase
	interop.JSON(t, "data-model/data-model-valid.json", &valid)
	interop.JSON(t, "data-model/data-model-invalid.json", &invalid)
	for _, tt := range valid {
		t.Run("valid/"+tt.Note, func(t *testing.T) {
			t.Parallel()
			if _, err := parseJSONData(tt.JSON); err != nil {
				t.Errorf("parseJSONData(%s) = %v, want nil", tt.JSON, err)
			}
		})
	}
	for _, tt := range invalid {
		t.Run("invalid/"+tt.Note, func(t *testing.T) {
			t.Parallel()
			_, err := parseJSONData(tt.JSON)
			if !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("parseJSONData(%s) = %v, want ErrInvalidRecord", tt.JSON, err)
			}
		})
	}
}

func TestRecordFromJSON(t *testing.T) {
	t.Parallel()
	deep := `{"$type":"com.example.x","a":` + strings.Repeat("[", MaxRecordDepth) + strings.Repeat("]", MaxRecordDepth) + `}`
	okDeep := `{"$type":"com.example.x","a":` + strings.Repeat("[", MaxRecordDepth-1) + strings.Repeat("]", MaxRecordDepth-1) + `}`
	big := `{"$type":"com.example.x","a":"` + strings.Repeat("x", MaxRecordSize) + `"}`
	tests := []struct {
		name    string
		in      string
		wantErr error
	}{
		{"post", `{"$type":"app.bsky.feed.post","text":"hello <world> & you","createdAt":"2024-01-01T00:00:00Z"}`, nil},
		{"integral float", `{"$type":"com.example.x","n":123.0}`, nil},
		{"max depth", okDeep, nil},
		{"no type", `{"text":"x"}`, ErrInvalidRecord},
		{"type not nsid", `{"$type":"post"}`, ErrInvalidRecord},
		{"type with fragment", `{"$type":"app.bsky.feed.post#main"}`, ErrInvalidRecord},
		{"type not string", `{"$type":7}`, ErrInvalidRecord},
		{"float", `{"$type":"com.example.x","n":1.5}`, ErrInvalidRecord},
		{"exponent fraction", `{"$type":"com.example.x","n":1e-3}`, ErrInvalidRecord},
		{"unsafe integer", `{"$type":"com.example.x","n":9007199254740993}`, ErrInvalidRecord},
		{"not object", `[1]`, ErrInvalidRecord},
		{"syntax", `{"$type":`, ErrInvalidRecord},
		{"too deep", deep, ErrTooLarge},
		{"too large", big, ErrTooLarge},
		{"legacy blob", `{"$type":"com.example.x","b":{"cid":"bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity","mimeType":"image/png"}}`, ErrInvalidRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec, err := RecordFromJSON([]byte(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("RecordFromJSON(%.80s) = %v, want %v", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("RecordFromJSON(%.80s) = %v", tt.in, err)
			}
			if rec.CID != CBORCID(rec.CBOR) {
				t.Errorf("CID %s does not hash CBOR", rec.CID)
			}
		})
	}
}

func TestRecordJSONKeepsText(t *testing.T) {
	t.Parallel()
	in := `{"$type":"app.bsky.feed.post","createdAt":"2024-01-01T00:00:00Z","text":"a <b> & c"}`
	rec, err := RecordFromJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := RecordJSON(rec.CBOR)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Errorf("RecordJSON = %s, want %s", out, in)
	}
}

func TestRecordFromCBORRejects(t *testing.T) {
	t.Parallel()
	valid, err := RecordFromJSON([]byte(`{"$type":"com.example.x","a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	// a2 65 $type ... ; swap to make variants by hand.
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"not a map", []byte{0x01}},
		{"trailing", append(bytes.Clone(valid.CBOR), 0x00)},
		{"float", []byte{0xa2, 0x61, 0x61, 0xfb, 0, 0, 0, 0, 0, 0, 0, 0, 0x65, '$', 't', 'y', 'p', 'e', 0x61, 'x'}},
		{"unsorted keys", []byte{0xa2, 0x65, '$', 't', 'y', 'p', 'e', 0x6d, 'c', 'o', 'm', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'x', 0x61, 'a', 0x01}},
		{"duplicate keys", []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}},
		{"indefinite map", []byte{0xbf, 0x61, 'a', 0x01, 0xff}},
		{"non-shortest int", []byte{0xa1, 0x61, 'a', 0x18, 0x01}},
		{"undefined", []byte{0xa1, 0x61, 'a', 0xf7}},
		{"other tag", []byte{0xa1, 0x61, 'a', 0xc1, 0x01}},
		{"bad utf8", []byte{0xa1, 0x61, 'a', 0x61, 0xff}},
		{"huge array claim", []byte{0xa1, 0x61, 'a', 0x9a, 0xff, 0xff, 0xff, 0xff}},
		{"no type", []byte{0xa1, 0x61, 'a', 0x01}},
		{"too deep", append(append([]byte{0xa2, 0x61, 'a'}, bytes.Repeat([]byte{0x81}, MaxRecordDepth)...), 0x01, 0x65, '$', 't', 'y', 'p', 'e', 0x61, 'x')},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := RecordFromCBOR(tt.in)
			if !errors.Is(err, ErrInvalidRecord) {
				t.Errorf("RecordFromCBOR(%x) = %v, want ErrInvalidRecord", tt.in, err)
			}
		})
	}
}

func TestBlobRefs(t *testing.T) {
	t.Parallel()
	img := "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"
	other := "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"
	in := `{"$type":"app.bsky.feed.post","text":"x","createdAt":"2024-01-01T00:00:00Z",
	"embed":{"$type":"app.bsky.embed.images","images":[
	 {"alt":"a","image":{"$type":"blob","ref":{"$link":"` + img + `"},"mimeType":"image/jpeg","size":10}},
	 {"alt":"b","image":{"$type":"blob","ref":{"$link":"` + other + `"},"mimeType":"image/png","size":20}},
	 {"alt":"c","image":{"$type":"blob","ref":{"$link":"` + img + `"},"mimeType":"image/jpeg","size":10}}]}}`
	rec, err := RecordFromJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range BlobRefs(rec.Data) {
		got[c.String()] = true
	}
	if diff := cmp.Diff(map[string]bool{img: true, other: true}, got); diff != "" {
		t.Errorf("BlobRefs (-want +got):\n%s", diff)
	}
	// Legacy blobs in stored data count too.
	legacy := []byte{}
	legacy = appendCBORHead(legacy, majMap, 2)
	legacy = appendCBORText(legacy, "b")
	legacy = appendCBORHead(legacy, majMap, 2)
	legacy = appendCBORText(legacy, "cid")
	legacy = appendCBORText(legacy, img)
	legacy = appendCBORText(legacy, "mimeType")
	legacy = appendCBORText(legacy, "image/png")
	legacy = appendCBORText(legacy, "$type")
	legacy = appendCBORText(legacy, "com.example.x")
	old, err := RecordFromCBOR(legacy)
	if err != nil {
		t.Fatalf("RecordFromCBOR(legacy blob) = %v", err)
	}
	if refs := BlobRefs(old.Data); len(refs) != 1 || refs[0].String() != img {
		t.Errorf("BlobRefs(legacy) = %v, want [%s]", refs, img)
	}
	if BlobRefs(map[string]any{"a": "b"}) == nil {
		t.Error("BlobRefs(no blobs) = nil, want empty")
	}
}

func BenchmarkRecordFromJSON(b *testing.B) {
	post := []byte(`{"$type":"app.bsky.feed.post","text":"Hello from Aerie! This is a typical post with a link https://example.com and some words.","langs":["en"],"createdAt":"2026-11-25T21:00:00.000Z","reply":{"root":{"uri":"at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3kznmn7xqxl22","cid":"bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"},"parent":{"uri":"at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3kznmn7xqxl22","cid":"bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"}}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(post)))
	for b.Loop() {
		if _, err := RecordFromJSON(post); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzRecordFromJSON(f *testing.F) {
	for _, fx := range readDataModelFixtures(f) {
		f.Add([]byte(fx.JSON))
	}
	var cases []dataModelCase
	interop.JSON(f, "data-model/data-model-invalid.json", &cases)
	for _, c := range cases {
		f.Add([]byte(c.JSON))
	}
	f.Add([]byte(`{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2024-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		rec, err := RecordFromJSON(in)
		if err != nil {
			return
		}
		if len(rec.CBOR) > MaxRecordSize {
			t.Fatalf("RecordFromJSON accepted %d CBOR bytes", len(rec.CBOR))
		}
		// What we produce we must read back, to the same CID.
		back, err := RecordFromCBOR(rec.CBOR)
		if err != nil {
			t.Fatalf("RecordFromCBOR(RecordFromJSON(%q)) = %v", in, err)
		}
		if back.CID != rec.CID {
			t.Fatalf("CID changed on re-read: %s != %s", back.CID, rec.CID)
		}
	})
}

func FuzzRecordFromCBOR(f *testing.F) {
	for _, fx := range readDataModelFixtures(f) {
		f.Add(decodeB64(f, fx.CBORBase64))
	}
	f.Add([]byte{0xa1, 0x65, '$', 't', 'y', 'p', 'e', 0x61, 'x'})
	f.Fuzz(func(t *testing.T, in []byte) {
		rec, err := RecordFromCBOR(in)
		if err != nil {
			return
		}
		if _, err := RecordJSON(rec.CBOR); err != nil {
			t.Fatalf("RecordJSON of accepted record %x = %v", in, err)
		}
	})
}

// FuzzRecordDataMatchesAtdata holds parseCBORData to what it replaced: the strict check,
// then atdata.UnmarshalCBOR. Both accept the same bytes, into equal values.
func FuzzRecordDataMatchesAtdata(f *testing.F) {
	for _, fx := range readDataModelFixtures(f) {
		f.Add(decodeB64(f, fx.CBORBase64))
	}
	for _, js := range []string{
		`{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2024-01-01T00:00:00Z","embed":{"$type":"app.bsky.embed.images","images":[{"alt":"","image":{"$type":"blob","ref":{"$link":"bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},"mimeType":"image/png","size":1234}}]}}`,
		`{"$type":"x.y.z","b":{"$bytes":"aGVsbG8"},"l":[1,-2,null,true]}`,
	} {
		rec, err := RecordFromJSON([]byte(js))
		if err != nil {
			f.Fatalf("seed %s: %v", js, err)
		}
		f.Add(rec.CBOR)
	}
	// A legacy blob, and a $link spelled out in CBOR: other servers' records may hold them.
	for _, m := range []map[string]any{
		{"$type": "x.y.z", "legacy": map[string]any{"cid": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy", "mimeType": "image/png"}},
		{"$type": "x.y.z", "l": map[string]any{"$link": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"}},
	} {
		cb, err := atdata.MarshalCBOR(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(cb)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := parseCBORData(in)
		var want map[string]any
		wantErr := checkDAGCBOR(in, MaxRecordDepth)
		if wantErr == nil && len(in) > 0 && in[0]>>5 == majMap {
			want, wantErr = atdata.UnmarshalCBOR(in)
		} else if wantErr == nil {
			wantErr = errors.New("not a map")
		}
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("parseCBORData(%x) error = %v, atdata says %v", in, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("parseCBORData(%x) =\n%#v\natdata gives\n%#v", in, got, want)
		}
	})
}
