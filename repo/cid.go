package repo

import (
	"crypto/sha256"
	"hash"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// Multicodec codes of the two CID forms atproto blesses (atproto-reference.md §1.3).
const (
	// CodecDAGCBOR is the multicodec of records, commits and MST nodes.
	CodecDAGCBOR = cid.DagCBOR
	// CodecRaw is the multicodec of blobs.
	CodecRaw = cid.Raw
)

// CBORCID returns the CIDv1 (dag-cbor, sha2-256) of DAG-CBOR bytes: the
// identifier of records, commits and MST nodes.
func CBORCID(data []byte) cid.Cid {
	return sumCID(CodecDAGCBOR, data)
}

// RawCID returns the CIDv1 (raw, sha2-256) of blob bytes.
func RawCID(data []byte) cid.Cid {
	return sumCID(CodecRaw, data)
}

// sumCID builds the multihash by hand (code 0x12, length 0x20, digest):
// the digest length is fixed, so unlike multihash.Sum there is no error path.
func sumCID(codec uint64, data []byte) cid.Cid {
	sum := sha256.Sum256(data)
	return digestCID(codec, sum[:])
}

func digestCID(codec uint64, digest []byte) cid.Cid {
	mh := make([]byte, 0, 2+sha256.Size)
	mh = append(mh, multihash.SHA2_256, sha256.Size)
	mh = append(mh, digest...)
	return cid.NewCidV1(codec, mh)
}

// RawCIDHasher computes the raw-codec CID of a blob streamed through Write,
// so an upload need not be held in memory to be named. It also counts bytes.
// The zero value is not usable; call NewRawCIDHasher.
type RawCIDHasher struct {
	h    hash.Hash
	size int64
}

// NewRawCIDHasher returns a hasher for one blob.
func NewRawCIDHasher() *RawCIDHasher {
	return &RawCIDHasher{h: sha256.New()}
}

// Write adds p to the blob; it never fails.
func (r *RawCIDHasher) Write(p []byte) (int, error) {
	r.size += int64(len(p))
	return r.h.Write(p)
}

// Size returns the number of bytes written so far.
func (r *RawCIDHasher) Size() int64 { return r.size }

// CID returns the raw-codec CID of the bytes written so far.
func (r *RawCIDHasher) CID() cid.Cid {
	return digestCID(CodecRaw, r.h.Sum(nil))
}
