package repo

import (
	"fmt"
	"math/bits"

	"github.com/ipfs/go-cid"
)

// Limits applied to MST nodes read from untrusted blocks (atproto-reference.md §5.3:
// "cap entries per node and tree depth against key-mining attacks").
const (
	// maxMSTKeyLen is the longest key accepted, as in the reference implementations.
	maxMSTKeyLen = 1024
	// maxNodeEntries caps a node's entries. Random (TID) keys give nodes of a handful of
	// entries and fewer than 200 even in huge repos; only mined keys make more, and the
	// cap keeps one such node from costing megabytes. Flush refuses to write a larger node.
	maxNodeEntries = 2048
	// maxMSTLayer is the highest layer a SHA-256 key height can give (256 bits / 2). It
	// bounds every descent, so a chain of nodes can never be deeper than this.
	maxMSTLayer = 128
)

// ref points at a child node: n when the node is in memory (loaded or built here),
// else c when it is only known by CID; both unset means a null pointer.
type ref struct {
	c cid.Cid
	n *tnode
}

// present reports whether r is a non-null pointer.
func (r ref) present() bool { return r.n != nil || r.c.Defined() }

// cid returns the CID r points at; for an in-memory node it is valid once flushed.
func (r ref) cid() cid.Cid {
	if r.n != nil {
		return r.n.cid
	}
	return r.c
}

// nodeRef returns a pointer to n, or a null pointer for nil.
func nodeRef(n *tnode) ref {
	if n == nil {
		return ref{}
	}
	return ref{c: n.cid, n: n}
}

// tentry is one key of a node with the subtree that follows it.
type tentry struct {
	key   string
	val   cid.Cid
	right ref
}

// tnode is a decoded MST node. Nodes in a NodeCache are immutable and shared; a Tree
// works on its own copies. cid is the CID of the node's encoding while the node is
// unchanged, and cid.Undef once it has been modified and not yet flushed.
type tnode struct {
	cid cid.Cid
	// layer is the node's layer; -1 in a cached node without entries, whose layer only
	// its parent knows.
	layer   int
	left    ref
	entries []tentry
	// lo and hi bound the keys of this node's subtree (exclusive; "" is unbounded),
	// as its parent said when it was loaded; children are checked against them.
	lo, hi string
}

// ptr returns the pointer before entry i (the left pointer for i == 0).
func (n *tnode) ptr(i int) ref {
	if i == 0 {
		return n.left
	}
	return n.entries[i-1].right
}

// setPtr sets the pointer before entry i.
func (n *tnode) setPtr(i int, r ref) {
	if i == 0 {
		n.left = r
		return
	}
	n.entries[i-1].right = r
}

// bounds returns the key bounds of the subtree before entry i.
func (n *tnode) bounds(i int) (lo, hi string) {
	lo, hi = n.lo, n.hi
	if i > 0 {
		lo = n.entries[i-1].key
	}
	if i < len(n.entries) {
		hi = n.entries[i].key
	}
	return lo, hi
}

// empty reports whether n has neither entries nor a left subtree.
func (n *tnode) empty() bool { return len(n.entries) == 0 && !n.left.present() }

// search returns the index of the first entry whose key is >= key.
func (n *tnode) search(key string) int {
	lo, hi := 0, len(n.entries)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if n.entries[m].key < key {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// KeyHeight returns the MST layer of key: the number of leading zero bits of its SHA-256
// divided by two (fanout 4, atproto-reference.md §5.3).
func KeyHeight(key string) int {
	sum := sha256String(key)
	h := 0
	for _, b := range sum {
		if b == 0 {
			h += 4
			continue
		}
		h += bits.LeadingZeros8(b) / 2
		break
	}
	return h
}

// validMSTKey reports whether key is a repo path usable as an MST key: two non-empty
// segments joined by one '/', of the characters repo paths allow (§5.1), at most
// maxMSTKeyLen bytes.
func validMSTKey(key string) bool {
	if len(key) == 0 || len(key) > maxMSTKeyLen {
		return false
	}
	slash := -1
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '_', c == '~', c == ':':
		case c == '/':
			if slash >= 0 {
				return false
			}
			slash = i
		default:
			return false
		}
	}
	return slash > 0 && slash < len(key)-1
}

// commonPrefixLen returns the number of leading bytes a and b share.
func commonPrefixLen(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// CBOR bytes of the fixed parts of a node (DAG-CBOR key order: e, l; k, p, t, v).
const (
	cborMap2    = 0xa2
	cborMap4    = 0xa4
	cborNull    = 0xf6
	cborTag42a  = 0xd8
	cborTag42b  = 0x2a
	majorUint   = 0 << 5
	majorBytes  = 2 << 5
	majorArray  = 4 << 5
	cborText1   = 0x61 // text string of length 1
	linkMaxSize = 128  // generous bound on a CID's binary size
)

// encodeNode returns the DAG-CBOR encoding of n. Children must have CIDs (be flushed).
func encodeNode(n *tnode) []byte {
	// Links to sha2-256 CIDs take 41 bytes; a longer CID only costs a regrowth.
	const entryOverhead, linkSize = 16, 41
	size := 8 + linkSize
	for i := range n.entries {
		size += entryOverhead + len(n.entries[i].key) + 2*linkSize
	}
	b := make([]byte, 0, size)
	b = append(b, cborMap2, cborText1, 'e')
	b = appendHeader(b, majorArray, uint64(len(n.entries)))
	prev := ""
	for i := range n.entries {
		e := &n.entries[i]
		p := commonPrefixLen(prev, e.key)
		b = append(b, cborMap4, cborText1, 'k')
		b = appendHeader(b, majorBytes, uint64(len(e.key)-p))
		b = append(b, e.key[p:]...)
		b = append(b, cborText1, 'p')
		b = appendHeader(b, majorUint, uint64(p))
		b = append(b, cborText1, 't')
		b = appendLink(b, e.right.cid())
		b = append(b, cborText1, 'v')
		b = appendLink(b, e.val)
		prev = e.key
	}
	b = append(b, cborText1, 'l')
	return appendLink(b, n.left.cid())
}

// appendHeader appends a CBOR head of the given major type in its shortest form.
func appendHeader(b []byte, major byte, v uint64) []byte {
	switch {
	case v < 24:
		return append(b, major|byte(v))
	case v <= 0xff:
		return append(b, major|24, byte(v))
	case v <= 0xffff:
		return append(b, major|25, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(b, major|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	default:
		return append(b, major|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
			byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
}

// appendLink appends c as a DAG-CBOR link (tag 42, bytes 0x00 || CID), or null.
func appendLink(b []byte, c cid.Cid) []byte {
	if !c.Defined() {
		return append(b, cborNull)
	}
	raw := c.KeyString() // binary form without allocating a []byte
	b = append(b, cborTag42a, cborTag42b)
	b = appendHeader(b, majorBytes, uint64(len(raw)+1))
	b = append(b, 0)
	return append(b, raw...)
}

// nodeDecoder reads one node's bytes, accepting only the canonical encoding: any other
// byte string has a different CID than the node it would describe, so it cannot be part
// of a tree whose root matched.
type nodeDecoder struct {
	b   []byte
	off int
}

func (d *nodeDecoder) fail(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrInvalidMST, d.off, fmt.Sprintf(format, args...))
}

func (d *nodeDecoder) expect(want ...byte) error {
	if len(d.b)-d.off < len(want) {
		return d.fail("truncated")
	}
	for i, w := range want {
		if d.b[d.off+i] != w {
			return d.fail("unexpected byte 0x%02x", d.b[d.off+i])
		}
	}
	d.off += len(want)
	return nil
}

// header reads a CBOR head of the given major type and checks it is minimal.
func (d *nodeDecoder) header(major byte) (uint64, error) {
	if d.off >= len(d.b) {
		return 0, d.fail("truncated")
	}
	ib := d.b[d.off]
	if ib&0xe0 != major {
		return 0, d.fail("unexpected major type in 0x%02x", ib)
	}
	d.off++
	info := ib & 0x1f
	var n int
	switch {
	case info < 24:
		return uint64(info), nil
	case info == 24:
		n = 1
	case info == 25:
		n = 2
	case info == 26:
		n = 4
	case info == 27:
		n = 8
	default:
		return 0, d.fail("unsupported additional info %d", info)
	}
	if len(d.b)-d.off < n {
		return 0, d.fail("truncated")
	}
	var v uint64
	for i := 0; i < n; i++ {
		v = v<<8 | uint64(d.b[d.off+i])
	}
	d.off += n
	if minimal := len(appendHeader(nil, 0, v)) - 1; minimal != n {
		return 0, d.fail("non-minimal integer encoding")
	}
	return v, nil
}

// bytes reads a byte string of at most max bytes.
func (d *nodeDecoder) bytes(max int) ([]byte, error) {
	n, err := d.header(majorBytes)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) || n > uint64(len(d.b)-d.off) {
		return nil, d.fail("byte string of %d bytes too long or truncated", n)
	}
	s := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return s, nil
}

// link reads a link or, when nullable, null. Tree links must be CIDv1 dag-cbor sha2-256;
// record values any CIDv1.
func (d *nodeDecoder) link(nullable, treeLink bool) (cid.Cid, error) {
	if nullable && d.off < len(d.b) && d.b[d.off] == cborNull {
		d.off++
		return cid.Undef, nil
	}
	if err := d.expect(cborTag42a, cborTag42b); err != nil {
		return cid.Undef, err
	}
	raw, err := d.bytes(linkMaxSize)
	if err != nil {
		return cid.Undef, err
	}
	if len(raw) < 2 || raw[0] != 0 {
		return cid.Undef, d.fail("link without the 0x00 multibase prefix")
	}
	c, err := cid.Cast(raw[1:])
	if err != nil {
		return cid.Undef, d.fail("bad CID: %s", err)
	}
	if c.Version() != 1 {
		return cid.Undef, d.fail("CID %s is not version 1", c)
	}
	if treeLink {
		if p := c.Prefix(); p.Codec != cid.DagCBOR || p.MhType != 0x12 || p.MhLength != 32 {
			return cid.Undef, d.fail("node link %s is not dag-cbor sha2-256", c)
		}
	}
	return c, nil
}

// decodeNode parses and validates one node: canonical encoding, at most maxNodeEntries
// entries, valid keys in strictly increasing order, maximal prefix compression, one
// key height for all entries and no children below layer 0. What depends on the node's
// place in the tree (its layer, key range, emptiness) is checked by checkPlace.
func decodeNode(data []byte) (*tnode, error) {
	d := &nodeDecoder{b: data}
	if err := d.expect(cborMap2, cborText1, 'e'); err != nil {
		return nil, err
	}
	count, err := d.header(majorArray)
	if err != nil {
		return nil, err
	}
	// Each entry takes at least 10 bytes, which bounds the allocation by the input size.
	if count > maxNodeEntries || count > uint64(len(data)/10) {
		return nil, d.fail("%d entries", count)
	}
	n := &tnode{layer: -1}
	if count > 0 {
		n.entries = make([]tentry, count)
	}
	prev := ""
	for i := range n.entries {
		if err := d.expect(cborMap4, cborText1, 'k'); err != nil {
			return nil, err
		}
		suffix, err := d.bytes(maxMSTKeyLen)
		if err != nil {
			return nil, err
		}
		if err := d.expect(cborText1, 'p'); err != nil {
			return nil, err
		}
		p, err := d.header(majorUint)
		if err != nil {
			return nil, err
		}
		if p > uint64(len(prev)) || (i == 0 && p != 0) {
			return nil, d.fail("prefix length %d longer than the previous key", p)
		}
		key := prev[:p] + string(suffix)
		if !validMSTKey(key) {
			return nil, d.fail("invalid key %q", key)
		}
		if i > 0 && key <= prev {
			return nil, d.fail("key %q not after %q", key, prev)
		}
		if commonPrefixLen(prev, key) != int(p) {
			return nil, d.fail("prefix length %d of key %q is not maximal", p, key)
		}
		if err := d.expect(cborText1, 't'); err != nil {
			return nil, err
		}
		right, err := d.link(true, true)
		if err != nil {
			return nil, err
		}
		if err := d.expect(cborText1, 'v'); err != nil {
			return nil, err
		}
		val, err := d.link(false, false)
		if err != nil {
			return nil, err
		}
		h := KeyHeight(key)
		if i == 0 {
			n.layer = h
		} else if h != n.layer {
			return nil, d.fail("key %q of height %d in a node of layer %d", key, h, n.layer)
		}
		n.entries[i] = tentry{key: key, val: val, right: ref{c: right}}
		prev = key
	}
	if err := d.expect(cborText1, 'l'); err != nil {
		return nil, err
	}
	if n.left.c, err = d.link(true, true); err != nil {
		return nil, err
	}
	if d.off != len(data) {
		return nil, d.fail("%d trailing bytes", len(data)-d.off)
	}
	if n.layer == 0 {
		for i := 0; i <= len(n.entries); i++ {
			if n.ptr(i).present() {
				return nil, d.fail("layer 0 node with a child")
			}
		}
	}
	return n, nil
}

// checkPlace validates a decoded node against where its parent puts it: layer (-1 for
// the root, whose layer its keys set), key range (lo, hi) and the canonical-shape rules
// on empty nodes (§5.3: only the empty repo's root has no entries and no child; other
// empty nodes point down and never sit at layer 0 or at the root).
func checkPlace(n *tnode, layer int, lo, hi string) error {
	if len(n.entries) == 0 {
		switch {
		case layer < 0 && n.left.present():
			return fmt.Errorf("%w: root node has no entries but a child", ErrInvalidMST)
		case layer == 0:
			return fmt.Errorf("%w: empty node at layer 0", ErrInvalidMST)
		case layer > 0 && !n.left.present():
			return fmt.Errorf("%w: empty non-root node", ErrInvalidMST)
		}
		return nil
	}
	if layer >= 0 && n.layer != layer {
		return fmt.Errorf("%w: node of layer %d where layer %d belongs", ErrInvalidMST, n.layer, layer)
	}
	if lo != "" && n.entries[0].key <= lo {
		return fmt.Errorf("%w: key %q not after %q", ErrInvalidMST, n.entries[0].key, lo)
	}
	if last := n.entries[len(n.entries)-1].key; hi != "" && last >= hi {
		return fmt.Errorf("%w: key %q not before %q", ErrInvalidMST, last, hi)
	}
	return nil
}
