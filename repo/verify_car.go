package repo

import (
	"encoding/binary"
	"fmt"

	"github.com/ipfs/go-cid"
)

// ParseCAR is ReadCAR for a CAR already in memory (a #commit's blocks): the same checks
// and errors, but blocks are sub-slices of b instead of copies read through a bufio.Reader,
// which for a commit of four small blocks cost more than hashing them. b must not be
// modified while the result is in use.
func ParseCAR(b []byte, lim CARLimits) (*CARFile, error) {
	if lim.MaxBytes > 0 && int64(len(b)) > lim.MaxBytes {
		return nil, fmt.Errorf("%w: CAR longer than %d bytes", ErrTooLarge, lim.MaxBytes)
	}
	n, rest, err := carUvarint(b)
	if err != nil {
		return nil, fmt.Errorf("read CAR header length: %w", err)
	}
	if err := checkCARHeaderLen(n, lim); err != nil {
		return nil, err
	}
	if n > uint64(len(rest)) {
		return nil, fmt.Errorf("read CAR header: %w: unexpected EOF", ErrInvalidCAR)
	}
	roots, err := carHeaderRoots(rest[:n])
	if err != nil {
		return nil, err
	}
	rest = rest[n:]
	f := &CARFile{Roots: roots, index: make(map[cid.Cid]int, 8)}
	for blocks := 0; len(rest) > 0; blocks++ {
		if n, rest, err = carUvarint(rest); err != nil {
			return nil, fmt.Errorf("read CAR block length: %w", err)
		}
		if lim.MaxBlocks > 0 && blocks >= lim.MaxBlocks {
			return nil, fmt.Errorf("read CAR block: %w: more than %d blocks", ErrTooLarge, lim.MaxBlocks)
		}
		if lim.MaxBlockSize > 0 && n > uint64(lim.MaxBlockSize)+maxCIDSize {
			return nil, fmt.Errorf("read CAR block: %w: section of %d bytes, blocks at most %d", ErrTooLarge, n, lim.MaxBlockSize)
		}
		if n > uint64(len(rest)) {
			return nil, fmt.Errorf("read CAR block: %w: unexpected EOF", ErrInvalidCAR)
		}
		// The full slice expression keeps a caller's append to one block's data from
		// overwriting the next section.
		sec := rest[:n:n]
		rest = rest[n:]
		cl, c, err := cid.CidFromBytes(sec)
		if err != nil {
			return nil, fmt.Errorf("read CAR block: %w: CID: %w", ErrInvalidCAR, err)
		}
		data := sec[cl:]
		if lim.MaxBlockSize > 0 && len(data) > lim.MaxBlockSize {
			return nil, fmt.Errorf("read CAR block %s: %w: %d bytes, at most %d", c, ErrTooLarge, len(data), lim.MaxBlockSize)
		}
		if err := verifyBlock(c, data); err != nil {
			return nil, fmt.Errorf("read CAR block %s: %w", c, err)
		}
		if _, dup := f.index[c]; dup {
			continue
		}
		f.index[c] = len(f.Blocks)
		f.Blocks = append(f.Blocks, Block{CID: c, Data: data})
	}
	return f, nil
}

// carUvarint reads a section length with the rules of CARReader.uvarint: at most 64 bits,
// shortest form.
func carUvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, nil, fmt.Errorf("%w: varint: unexpected EOF", ErrInvalidCAR)
	case n < 0:
		return 0, nil, fmt.Errorf("%w: varint overflows 64 bits", ErrInvalidCAR)
	case n > 1 && b[n-1] == 0:
		return 0, nil, fmt.Errorf("%w: varint not in shortest form", ErrInvalidCAR)
	}
	return v, b[n:], nil
}
