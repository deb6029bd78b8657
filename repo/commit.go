package repo

import (
	"bytes"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	indigorepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// CommitVersion is the repo format version every commit carries (repo v3).
const CommitVersion = 3

// Limits on commit objects, so DecodeCommit rejects junk early.
const (
	// maxCommitSize bounds an encoded commit: a DID (at most 2 KiB), a TID, a
	// 64-byte signature and two CIDs fit many times over.
	maxCommitSize = 8 << 10
	// sigSize is the length of a compact r||s signature (atproto-reference.md §3).
	sigSize = 64
)

// Commit is a signed repo commit (atproto-reference.md §5.2). Prev is nil in
// every commit we write (the key is still encoded, as null).
type Commit struct {
	DID     syntax.DID
	Version int64
	Data    cid.Cid
	Rev     syntax.TID
	Prev    *cid.Cid
	Sig     []byte
}

// UnsignedBytes returns the DAG-CBOR encoding of the commit without its sig
// key: the bytes that are hashed and signed.
func (c *Commit) UnsignedBytes() ([]byte, error) {
	return c.encode(false)
}

// Sign signs the commit with key (SHA-256, compact low-S signature; indigo's
// atcrypto normalises S) and stores the signature in Sig.
func (c *Commit) Sign(key atcrypto.PrivateKey) error {
	unsigned, err := c.UnsignedBytes()
	if err != nil {
		return fmt.Errorf("encode unsigned commit: %w", err)
	}
	sig, err := key.HashAndSign(unsigned)
	if err != nil {
		return fmt.Errorf("sign commit: %w", err)
	}
	c.Sig = sig
	return nil
}

// Verify checks Sig against pub. It returns an error wrapping ErrBadSignature
// when the signature is missing, not 64 bytes, high-S, DER-encoded or simply
// wrong (indigo's strict HashAndVerify rejects the malleable forms).
func (c *Commit) Verify(pub atcrypto.PublicKey) error {
	if len(c.Sig) != sigSize {
		return fmt.Errorf("verify commit %s: %w: signature is %d bytes, want %d", c.Rev, ErrBadSignature, len(c.Sig), sigSize)
	}
	unsigned, err := c.UnsignedBytes()
	if err != nil {
		return fmt.Errorf("encode unsigned commit: %w", err)
	}
	if err := pub.HashAndVerify(unsigned, c.Sig); err != nil {
		return fmt.Errorf("verify commit %s: %w: %w", c.Rev, ErrBadSignature, err)
	}
	return nil
}

// Encode returns the signed commit's DAG-CBOR bytes and its CID. The commit
// must be signed.
func (c *Commit) Encode() ([]byte, cid.Cid, error) {
	if len(c.Sig) == 0 {
		return nil, cid.Undef, fmt.Errorf("encode commit: %w: not signed", ErrInvalidCommit)
	}
	b, err := c.encode(true)
	if err != nil {
		return nil, cid.Undef, err
	}
	return b, CBORCID(b), nil
}

// encode writes the commit map by hand in DAG-CBOR key order (length first,
// then bytewise): did, rev, sig, data, prev, version. A hand encoder is both
// exact and allocation-light; TestCommitMatchesIndigo pins it to indigo's
// cbor-gen output.
func (c *Commit) encode(withSig bool) ([]byte, error) {
	if !c.Data.Defined() {
		return nil, fmt.Errorf("encode commit: %w: no data CID", ErrInvalidCommit)
	}
	if c.Prev != nil && !c.Prev.Defined() {
		return nil, fmt.Errorf("encode commit: %w: undefined prev CID", ErrInvalidCommit)
	}
	n := uint64(5)
	if withSig {
		n = 6
	}
	b := make([]byte, 0, 160+len(c.DID)+len(c.Sig))
	b = appendCBORHead(b, majMap, n)
	b = appendCBORText(b, "did")
	b = appendCBORText(b, string(c.DID))
	b = appendCBORText(b, "rev")
	b = appendCBORText(b, string(c.Rev))
	if withSig {
		b = appendCBORText(b, "sig")
		b = appendCBORHead(b, majBytes, uint64(len(c.Sig)))
		b = append(b, c.Sig...)
	}
	b = appendCBORText(b, "data")
	b = appendCBORLink(b, c.Data)
	b = appendCBORText(b, "prev")
	if c.Prev == nil {
		b = append(b, simpleNull)
	} else {
		b = appendCBORLink(b, *c.Prev)
	}
	b = appendCBORText(b, "version")
	if c.Version < 0 {
		return nil, fmt.Errorf("encode commit: %w: negative version", ErrInvalidCommit)
	}
	b = appendCBORHead(b, majUint, uint64(c.Version))
	return b, nil
}

// DecodeCommit parses a signed commit strictly: canonical DAG-CBOR with
// exactly the six commit keys, version 3, a valid DID, a TID rev and a 64-byte
// signature. Errors wrap ErrInvalidCommit (ErrTooLarge past 8 KiB).
func DecodeCommit(data []byte) (*Commit, error) {
	if len(data) > maxCommitSize {
		return nil, fmt.Errorf("decode commit: %w: %d bytes", ErrTooLarge, len(data))
	}
	// The strict scan runs first so cbor-gen only ever sees well-formed,
	// shallow input.
	if err := checkDAGCBOR(data, 2); err != nil {
		return nil, fmt.Errorf("decode commit: %w: %w", ErrInvalidCommit, err)
	}
	// indigo's cbor-gen type does the field mapping; the re-encode check
	// below rejects anything it tolerates that a strict decoder must not
	// (unknown or missing keys, non-canonical forms).
	var ic indigorepo.Commit
	if err := ic.UnmarshalCBOR(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("decode commit: %w: %w", ErrInvalidCommit, err)
	}
	if ic.Version != CommitVersion {
		return nil, fmt.Errorf("decode commit: %w: version %d, want %d", ErrInvalidCommit, ic.Version, CommitVersion)
	}
	did, err := syntax.ParseDID(ic.DID)
	if err != nil {
		return nil, fmt.Errorf("decode commit: %w: did: %w", ErrInvalidCommit, err)
	}
	rev, err := syntax.ParseTID(ic.Rev)
	if err != nil {
		return nil, fmt.Errorf("decode commit: %w: rev: %w", ErrInvalidCommit, err)
	}
	if len(ic.Sig) != sigSize {
		return nil, fmt.Errorf("decode commit: %w: signature is %d bytes, want %d", ErrInvalidCommit, len(ic.Sig), sigSize)
	}
	c := &Commit{DID: did, Version: ic.Version, Data: ic.Data, Rev: rev, Prev: ic.Prev, Sig: ic.Sig}
	again, err := c.encode(true)
	if err != nil {
		return nil, fmt.Errorf("decode commit: %w", err)
	}
	if !bytes.Equal(again, data) {
		return nil, fmt.Errorf("decode commit: %w: not the canonical encoding of a commit", ErrInvalidCommit)
	}
	return c, nil
}
