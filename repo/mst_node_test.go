package repo

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/aerie-social/aerie/node/interop"
)

// rawEntry is an entry with its prefix compression given explicitly, to build bad nodes.
type rawEntry struct {
	p     int
	k     string
	v, t  cid.Cid
	pHead []byte // if set, the encoded p field as given
}

// rawNode encodes a node as encodeNode does, but with the prefixes as given.
func rawNode(left cid.Cid, entries ...rawEntry) []byte {
	b := []byte{cborMap2, cborText1, 'e'}
	b = appendHeader(b, majorArray, uint64(len(entries)))
	for _, e := range entries {
		b = append(b, cborMap4, cborText1, 'k')
		b = appendHeader(b, majorBytes, uint64(len(e.k)))
		b = append(b, e.k...)
		b = append(b, cborText1, 'p')
		if e.pHead != nil {
			b = append(b, e.pHead...)
		} else {
			b = appendHeader(b, majorUint, uint64(e.p))
		}
		b = append(b, cborText1, 't')
		b = appendLink(b, e.t)
		b = append(b, cborText1, 'v')
		b = appendLink(b, e.v)
	}
	b = append(b, cborText1, 'l')
	return appendLink(b, left)
}

// keyOfHeight returns the first key "coll.x/<prefix><n>" of height h.
func keyOfHeight(t testing.TB, prefix string, h int) string {
	t.Helper()
	for i := range 1 << 22 {
		if k := fmt.Sprintf("coll.x/%s%d", prefix, i); KeyHeight(k) == h {
			return k
		}
	}
	t.Fatalf("no key of height %d", h)
	return ""
}

func TestBadNodes(t *testing.T) {
	t.Parallel()
	v := valueCID(1)
	k0a, k0b := keyOfHeight(t, "a", 0), keyOfHeight(t, "b", 0)
	k1a, k1b := keyOfHeight(t, "a", 1), keyOfHeight(t, "b", 1)
	k2 := keyOfHeight(t, "m", 2)
	leaf := func(keys ...string) []byte {
		var es []rawEntry
		prev := ""
		for _, k := range keys {
			p := commonPrefixLen(prev, k)
			es = append(es, rawEntry{p: p, k: k[p:], v: v})
			prev = k
		}
		return rawNode(cid.Undef, es...)
	}
	good := leaf(k0a, k0b)
	emptyNode := rawNode(cid.Undef)

	tests := []struct {
		name string
		// blocks of the tree, the first being the root; a block may refer to the next
		// one through the CID next.
		build func(next cid.Cid) [][]byte
	}{
		{"garbage", func(cid.Cid) [][]byte { return [][]byte{{0x01, 0x02, 0x03}} }},
		{"empty bytes", func(cid.Cid) [][]byte { return [][]byte{{}} }},
		{"truncated", func(cid.Cid) [][]byte { return [][]byte{good[:len(good)-3]} }},
		{"trailing byte", func(cid.Cid) [][]byte { return [][]byte{append(slices.Clone(good), 0)} }},
		{"huge entry count", func(cid.Cid) [][]byte {
			return [][]byte{{cborMap2, cborText1, 'e', majorArray | 26, 0xff, 0xff, 0xff, 0xff}}
		}},
		{"keys out of order", func(cid.Cid) [][]byte {
			return [][]byte{rawNode(cid.Undef, rawEntry{k: k0b, v: v}, rawEntry{k: k0a, v: v})}
		}},
		{"duplicate key", func(cid.Cid) [][]byte {
			return [][]byte{rawNode(cid.Undef, rawEntry{k: k0a, v: v}, rawEntry{p: len(k0a), v: v})}
		}},
		{"prefix not maximal", func(cid.Cid) [][]byte {
			return [][]byte{rawNode(cid.Undef, rawEntry{k: k0a, v: v}, rawEntry{p: 0, k: k0b, v: v})}
		}},
		{"prefix too long", func(cid.Cid) [][]byte {
			return [][]byte{rawNode(cid.Undef, rawEntry{k: k0a, v: v}, rawEntry{p: 200, k: "x", v: v})}
		}},
		{"first prefix not zero", func(cid.Cid) [][]byte {
			return [][]byte{rawNode(cid.Undef, rawEntry{p: 1, k: k0a, v: v})}
		}},
		{"non-minimal integer", func(cid.Cid) [][]byte {
			return [][]byte{rawNode(cid.Undef, rawEntry{k: k0a, v: v, pHead: []byte{majorUint | 24, 0}})}
		}},
		{"invalid key", func(cid.Cid) [][]byte { return [][]byte{rawNode(cid.Undef, rawEntry{k: "no slash", v: v})} }},
		{"mixed heights", func(cid.Cid) [][]byte { return [][]byte{leaf(k0a, k1b)} }},
		{"layer 0 with a child", func(next cid.Cid) [][]byte {
			return [][]byte{rawNode(next, rawEntry{k: k0a, v: v}), good}
		}},
		{"child at wrong layer", func(next cid.Cid) [][]byte {
			return [][]byte{rawNode(next, rawEntry{k: k2, v: v}), leaf(k0a)}
		}},
		{"child keys outside its range", func(next cid.Cid) [][]byte {
			// k1a's left subtree holds only keys before k1a.
			return [][]byte{rawNode(next, rawEntry{k: k1a, v: v}), leaf(keyOfHeight(t, "z", 0))}
		}},
		{"empty non-root node", func(next cid.Cid) [][]byte {
			return [][]byte{rawNode(next, rawEntry{k: k1b, v: v}), emptyNode}
		}},
		{"empty root pointing down", func(next cid.Cid) [][]byte { return [][]byte{rawNode(next), leaf(k0a)} }},
		{"chain of empty nodes down to layer 0", func(next cid.Cid) [][]byte {
			// Layers are what bounds depth: an empty node cannot sit at layer 0.
			bottom := rawNode(cid.Undef)
			mid := rawNode(CBORCID(rawNode(CBORCID(bottom))))
			return [][]byte{rawNode(CBORCID(mid), rawEntry{k: k2, v: v}), mid, rawNode(CBORCID(bottom)), bottom}
		}},
		{"null value", func(cid.Cid) [][]byte {
			b := rawNode(cid.Undef, rawEntry{k: k0a, v: v})
			// Replace the value link by null: the last link before "l".
			i := len(b) - 3 - len(appendLink(nil, v))
			return [][]byte{append(append(slices.Clone(b[:i]), cborNull), b[len(b)-3:]...)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			// Build bottom-up: each block's "next" is the CID of the following block.
			blocks := tt.build(cid.Undef)
			if len(blocks) > 1 {
				blocks = tt.build(CBORCID(blocks[1]))
			}
			store := memBlocks{}
			for _, b := range blocks {
				store[CBORCID(b)] = b
			}
			root := CBORCID(blocks[0])
			tree := NewTree(store, NewNodeCache(8), root)
			var errs []error
			for _, k := range []string{k0a, k0b, k1a, k1b, k2, "coll.x/zzzz"} {
				_, err := tree.Get(ctx, k)
				errs = append(errs, err)
			}
			errs = append(errs, tree.Walk(ctx, "", false, func(string, cid.Cid) error { return nil }))
			if err := errors.Join(errs...); !errors.Is(err, ErrInvalidMST) {
				t.Errorf("reading the tree = %v, want ErrInvalidMST", err)
			}
			_, _, err := Diff(ctx, store, nil, cid.Undef, root)
			if !errors.Is(err, ErrInvalidMST) {
				t.Errorf("Diff() = %v, want ErrInvalidMST", err)
			}
		})
	}
	t.Run("hash mismatch", func(t *testing.T) {
		t.Parallel()
		c := CBORCID(good)
		store := memBlocks{c: leaf(k0a)}
		if _, err := NewTree(store, nil, c).Get(context.Background(), k0a); !errors.Is(err, ErrInvalidMST) {
			t.Errorf("Get() over a block not matching its CID = %v, want ErrInvalidMST", err)
		}
	})
	t.Run("missing block", func(t *testing.T) {
		t.Parallel()
		if _, err := NewTree(memBlocks{}, nil, CBORCID(good)).Get(context.Background(), k0a); !errors.Is(err, ErrBlockNotFound) {
			t.Errorf("Get() over a missing root = %v, want ErrBlockNotFound", err)
		}
	})
}

// fuzzSeeds returns real node encodings: the trees of the interop vectors.
func fuzzSeeds(t testing.TB) [][]byte {
	var fixtures []commitProofFixture
	interop.JSON(t, "firehose/commit-proof-fixtures.json", &fixtures)
	var out [][]byte
	for _, f := range fixtures {
		m := map[string]cid.Cid{}
		for _, k := range slices.Concat(f.Keys, f.Adds) {
			m[k] = mustCID(t, f.LeafValue)
		}
		store := memBlocks{}
		buildTree(t, store, nil, m)
		out = slices.AppendSeq(out, maps.Values(store))
	}
	m := map[string]cid.Cid{}
	for i, k := range interop.Lines(t, "mst/example_keys.txt") {
		m[k] = valueCID(i)
	}
	store := memBlocks{}
	buildTree(t, store, nil, m)
	return slices.AppendSeq(out, maps.Values(store))
}

func TestNodeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, data := range fuzzSeeds(t) {
		n, err := decodeNode(data)
		if err != nil {
			t.Fatalf("decodeNode(%x) = %v", data, err)
		}
		if got := encodeNode(n); !slices.Equal(got, data) {
			t.Errorf("encodeNode(decodeNode(%x)) = %x", data, got)
		}
	}
}

// FuzzMSTNodeDecode checks that decoding untrusted node bytes never panics and that
// whatever it accepts is the canonical encoding of what it decoded.
func FuzzMSTNodeDecode(f *testing.F) {
	for _, data := range fuzzSeeds(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := decodeNode(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidMST) {
				t.Fatalf("decodeNode() = %v, want ErrInvalidMST", err)
			}
			return
		}
		if got := encodeNode(n); !slices.Equal(got, data) {
			t.Fatalf("decodeNode accepted non-canonical %x (canonical %x)", data, got)
		}
		_ = checkPlace(n, -1, "", "")
	})
}
