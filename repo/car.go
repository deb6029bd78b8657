package repo

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// CARLimits bounds what a CAR reader accepts from an untrusted source. A zero
// field means no limit for that field; DefaultCARLimits is the usual start.
type CARLimits struct {
	// MaxBytes bounds the whole stream: header and every block section.
	MaxBytes int64
	// MaxBlocks bounds the number of block sections, duplicates included.
	MaxBlocks int
	// MaxBlockSize bounds one block's data (not counting its CID).
	MaxBlockSize int
	// MaxHeaderSize bounds the encoded header.
	MaxHeaderSize int
}

// DefaultCARLimits returns limits for a whole-repo import: 256 MiB and one
// million blocks in total (a large account is tens of MiB), blocks up to
// 2 MiB (a 1 MiB record with room to spare) and a 64 KiB header.
func DefaultCARLimits() CARLimits {
	return CARLimits{
		MaxBytes:      256 << 20,
		MaxBlocks:     1_000_000,
		MaxBlockSize:  2 << 20,
		MaxHeaderSize: 64 << 10,
	}
}

// carHeaderDepth is the nesting of {roots: [...], version: 1}.
const carHeaderDepth = 2

// maxCIDSize bounds a CID in a block section (§1.6).
const maxCIDSize = 100

// WriteCARHeader writes a CAR v1 header naming roots (atproto-reference.md
// §5.5): a varint length, then the DAG-CBOR map {roots, version: 1}. No roots
// is valid (getBlocks).
func WriteCARHeader(w io.Writer, roots ...cid.Cid) error {
	h := make([]byte, 0, 16+len(roots)*41)
	h = appendCBORHead(h, majMap, 2)
	h = appendCBORText(h, "roots")
	h = appendCBORHead(h, majArray, uint64(len(roots)))
	for _, r := range roots {
		h = appendCBORLink(h, r)
	}
	h = appendCBORText(h, "version")
	h = appendCBORHead(h, majUint, 1)
	out := binary.AppendUvarint(make([]byte, 0, len(h)+binary.MaxVarintLen64), uint64(len(h)))
	out = append(out, h...)
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("write CAR header: %w", err)
	}
	return nil
}

// WriteCARBlock writes one block section: varint(len(CID)+len(data)), the
// binary CID, the data. It trusts that c names data.
func WriteCARBlock(w io.Writer, c cid.Cid, data []byte) error {
	raw := c.Bytes()
	var pre [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(pre[:], uint64(len(raw)+len(data)))
	// Two writes, not one concatenation: data may be a 1 MiB record and w is
	// usually buffered.
	if _, err := w.Write(append(pre[:n:n], raw...)); err != nil {
		return fmt.Errorf("write CAR block %s: %w", c, err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("write CAR block %s: %w", c, err)
	}
	return nil
}

// CARFile is a whole CAR held in memory: its roots and its blocks (Block is
// the MST's block type), each once, in the order first seen; every block's
// data hashes to its CID.
type CARFile struct {
	Roots  []cid.Cid
	Blocks []Block
	index  map[cid.Cid]int
}

// Get returns the data of block c and whether the CAR holds it.
func (f *CARFile) Get(c cid.Cid) ([]byte, bool) {
	i, ok := f.index[c]
	if !ok {
		return nil, false
	}
	return f.Blocks[i].Data, true
}

// ReadCAR reads a whole CAR v1 from r within lim. Blocks may come in any
// order, repeat (the first copy is kept; all copies hash to the same bytes)
// or be unreferenced. Every block's data must hash to its CID. Errors wrap
// ErrInvalidCAR or ErrTooLarge.
func ReadCAR(r io.Reader, lim CARLimits) (*CARFile, error) {
	cr, err := NewCARReader(r, lim)
	if err != nil {
		return nil, err
	}
	f := &CARFile{Roots: cr.Roots(), index: make(map[cid.Cid]int)}
	for {
		b, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return f, nil
		}
		if err != nil {
			return nil, err
		}
		if _, dup := f.index[b.CID]; dup {
			continue
		}
		f.index[b.CID] = len(f.Blocks)
		f.Blocks = append(f.Blocks, b)
	}
}

// CARReader reads a CAR v1 stream block by block, verifying each block, so
// an import need not hold the whole file. It is not safe for concurrent use.
type CARReader struct {
	r      *bufio.Reader
	lim    CARLimits
	roots  []cid.Cid
	read   int64 // bytes consumed so far
	blocks int
}

// NewCARReader reads and checks the header of the CAR on r. Errors wrap
// ErrInvalidCAR or ErrTooLarge.
func NewCARReader(r io.Reader, lim CARLimits) (*CARReader, error) {
	cr := &CARReader{r: bufio.NewReader(r), lim: lim}
	n, err := cr.uvarint()
	if err != nil {
		return nil, fmt.Errorf("read CAR header length: %w", err)
	}
	if err := checkCARHeaderLen(n, lim); err != nil {
		return nil, err
	}
	h, err := cr.bytes(n)
	if err != nil {
		return nil, fmt.Errorf("read CAR header: %w", err)
	}
	if cr.roots, err = carHeaderRoots(h); err != nil {
		return nil, err
	}
	return cr, nil
}

// checkCARHeaderLen checks the length a CAR declares for its header.
func checkCARHeaderLen(n uint64, lim CARLimits) error {
	if n == 0 {
		return fmt.Errorf("read CAR header: %w: empty header", ErrInvalidCAR)
	}
	if lim.MaxHeaderSize > 0 && n > uint64(lim.MaxHeaderSize) {
		return fmt.Errorf("read CAR header: %w: %d bytes, at most %d", ErrTooLarge, n, lim.MaxHeaderSize)
	}
	return nil
}

// carHeaderRoots decodes a CAR header and returns its roots.
func carHeaderRoots(h []byte) ([]cid.Cid, error) {
	v, err := decodeDAGCBOR(h, carHeaderDepth)
	if err != nil {
		return nil, fmt.Errorf("read CAR header: %w: %w", ErrInvalidCAR, err)
	}
	roots, err := carRoots(v)
	if err != nil {
		return nil, fmt.Errorf("read CAR header: %w: %w", ErrInvalidCAR, err)
	}
	return roots, nil
}

// carRoots checks a decoded header is exactly {roots: [links], version: 1}.
func carRoots(v any) ([]cid.Cid, error) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 2 {
		return nil, errors.New("header is not a map of roots and version")
	}
	if ver, ok := m["version"].(int64); !ok || ver != 1 {
		return nil, fmt.Errorf("version %v, want 1", m["version"])
	}
	list, ok := m["roots"].([]any)
	if !ok {
		return nil, errors.New("roots is not an array")
	}
	roots := make([]cid.Cid, 0, len(list))
	for i, r := range list {
		c, ok := r.(cid.Cid)
		if !ok {
			return nil, fmt.Errorf("root %d is not a link", i)
		}
		roots = append(roots, c)
	}
	return roots, nil
}

// Roots returns the header's roots; the first is the commit for repo exports.
func (cr *CARReader) Roots() []cid.Cid { return cr.roots }

// Next returns the next block, io.EOF after the last, or an error wrapping
// ErrInvalidCAR (bad section, unsupported CID, hash mismatch) or ErrTooLarge.
func (cr *CARReader) Next() (Block, error) {
	if _, err := cr.r.Peek(1); errors.Is(err, io.EOF) {
		return Block{}, io.EOF
	}
	n, err := cr.uvarint()
	if err != nil {
		return Block{}, fmt.Errorf("read CAR block length: %w", err)
	}
	if cr.lim.MaxBlocks > 0 && cr.blocks >= cr.lim.MaxBlocks {
		return Block{}, fmt.Errorf("read CAR block: %w: more than %d blocks", ErrTooLarge, cr.lim.MaxBlocks)
	}
	cr.blocks++
	if cr.lim.MaxBlockSize > 0 && n > uint64(cr.lim.MaxBlockSize)+maxCIDSize {
		return Block{}, fmt.Errorf("read CAR block: %w: section of %d bytes, blocks at most %d", ErrTooLarge, n, cr.lim.MaxBlockSize)
	}
	sec, err := cr.bytes(n)
	if err != nil {
		return Block{}, fmt.Errorf("read CAR block: %w", err)
	}
	cl, c, err := cid.CidFromBytes(sec)
	if err != nil {
		return Block{}, fmt.Errorf("read CAR block: %w: CID: %w", ErrInvalidCAR, err)
	}
	data := sec[cl:]
	if cr.lim.MaxBlockSize > 0 && len(data) > cr.lim.MaxBlockSize {
		return Block{}, fmt.Errorf("read CAR block %s: %w: %d bytes, at most %d", c, ErrTooLarge, len(data), cr.lim.MaxBlockSize)
	}
	if err := verifyBlock(c, data); err != nil {
		return Block{}, fmt.Errorf("read CAR block %s: %w", c, err)
	}
	return Block{CID: c, Data: data}, nil
}

// verifyBlock checks data hashes to c. Only CIDv1 with sha2-256 is accepted:
// atproto blesses no other hash (§1.3), and refusing the rest keeps a hostile
// CAR from making us run arbitrary hash functions.
func verifyBlock(c cid.Cid, data []byte) error {
	if c.Version() != 1 {
		return fmt.Errorf("%w: CID version %d", ErrInvalidCAR, c.Version())
	}
	dm, err := multihash.Decode(c.Hash())
	if err != nil {
		return fmt.Errorf("%w: multihash: %w", ErrInvalidCAR, err)
	}
	if dm.Code != multihash.SHA2_256 || len(dm.Digest) != sha256.Size {
		return fmt.Errorf("%w: hash 0x%x is not sha2-256", ErrInvalidCAR, dm.Code)
	}
	sum := sha256.Sum256(data)
	if !bytes.Equal(sum[:], dm.Digest) {
		return fmt.Errorf("%w: data does not hash to its CID", ErrInvalidCAR)
	}
	return nil
}

// uvarint reads a section length, counting it against MaxBytes.
func (cr *CARReader) uvarint() (uint64, error) {
	var n uint64
	var shift uint
	for i := 0; ; i++ {
		b, err := cr.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("%w: varint: %w", ErrInvalidCAR, err)
		}
		if err := cr.count(1); err != nil {
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && b > 1 {
			return 0, fmt.Errorf("%w: varint overflows 64 bits", ErrInvalidCAR)
		}
		n |= uint64(b&0x7f) << shift
		if b < 0x80 {
			if b == 0 && i > 0 {
				return 0, fmt.Errorf("%w: varint not in shortest form", ErrInvalidCAR)
			}
			return n, nil
		}
		shift += 7
	}
}

// bytes reads exactly n bytes, checking MaxBytes before allocating so a
// lying length cannot make us allocate more than the limit allows.
func (cr *CARReader) bytes(n uint64) ([]byte, error) {
	if n > uint64(1<<62) {
		return nil, fmt.Errorf("%w: section of %d bytes", ErrTooLarge, n)
	}
	if err := cr.count(int64(n)); err != nil {
		return nil, err
	}
	if n > 1<<20 {
		// A large claimed length is only believed as the bytes arrive.
		b, err := io.ReadAll(io.LimitReader(cr.r, int64(n)))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidCAR, err)
		}
		if uint64(len(b)) != n {
			return nil, fmt.Errorf("%w: %w", ErrInvalidCAR, io.ErrUnexpectedEOF)
		}
		return b, nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(cr.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidCAR, err)
	}
	return b, nil
}

func (cr *CARReader) count(n int64) error {
	cr.read += n
	if cr.lim.MaxBytes > 0 && cr.read > cr.lim.MaxBytes {
		return fmt.Errorf("%w: CAR longer than %d bytes", ErrTooLarge, cr.lim.MaxBytes)
	}
	return nil
}
