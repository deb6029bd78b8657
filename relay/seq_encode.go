package relay

import (
	"errors"
	"fmt"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
)

// Limits cbor-gen enforces when it encodes a #commit; the hand encoder keeps them so both
// refuse the same bodies.
const (
	cborMaxText  = 1_000_000
	cborMaxSlice = 8192
	cborMaxBytes = 2_097_152
)

// Simple values of DAG-CBOR.
const (
	cborFalse = 0xf4
	cborTrue  = 0xf5
	cborNull  = 0xf6
)

// appendCommitBody appends the DAG-CBOR of a #commit body, byte for byte what indigo's
// cbor-gen MarshalCBOR writes (TestAppendCommitBodyMatchesCborGen holds it to that): the
// sequencer encodes every commit it logs, and cbor-gen's writer interface, one small
// Write per head and key, cost several times more than appending to one slice.
func appendCommitBody(b []byte, c *comatproto.SyncSubscribeRepos_Commit) ([]byte, error) {
	n := uint64(12)
	if c.Blocks == nil {
		n--
	}
	if c.PrevData == nil {
		n--
	}
	b = appendHead(b, majMap, n)
	// Keys in cbor-gen's order, which is DAG-CBOR's: shorter first, then bytewise.
	b = appendText(b, "ops")
	if len(c.Ops) > cborMaxSlice {
		return nil, fmt.Errorf("ops: %d elements, limit %d", len(c.Ops), cborMaxSlice)
	}
	b = appendHead(b, majArray, uint64(len(c.Ops)))
	var err error
	for _, op := range c.Ops {
		if b, err = appendRepoOp(b, op); err != nil {
			return nil, err
		}
	}
	if b, err = appendLimitedText(b, "rev", c.Rev); err != nil {
		return nil, err
	}
	b = appendText(b, "seq")
	if c.Seq >= 0 {
		b = appendHead(b, majUint, uint64(c.Seq))
	} else {
		b = appendHead(b, majNegInt, uint64(-c.Seq-1))
	}
	if b, err = appendLimitedText(b, "repo", c.Repo); err != nil {
		return nil, err
	}
	if b, err = appendLimitedText(b, "time", c.Time); err != nil {
		return nil, err
	}
	b = appendText(b, "blobs")
	if len(c.Blobs) > cborMaxSlice {
		return nil, fmt.Errorf("blobs: %d elements, limit %d", len(c.Blobs), cborMaxSlice)
	}
	b = appendHead(b, majArray, uint64(len(c.Blobs)))
	for i := range c.Blobs {
		if b, err = appendLexLink(b, &c.Blobs[i]); err != nil {
			return nil, fmt.Errorf("blobs: %w", err)
		}
	}
	if c.Since == nil {
		b = append(appendText(b, "since"), cborNull)
	} else if b, err = appendLimitedText(b, "since", *c.Since); err != nil {
		return nil, err
	}
	if c.Blocks != nil {
		if len(c.Blocks) > cborMaxBytes {
			return nil, fmt.Errorf("blocks: %d bytes, limit %d", len(c.Blocks), cborMaxBytes)
		}
		b = appendText(b, "blocks")
		b = appendHead(b, majBytes, uint64(len(c.Blocks)))
		b = append(b, c.Blocks...)
	}
	b = appendText(b, "commit")
	if b, err = appendLexLink(b, &c.Commit); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	b = appendBool(appendText(b, "rebase"), c.Rebase)
	b = appendBool(appendText(b, "tooBig"), c.TooBig)
	if c.PrevData != nil {
		b = appendText(b, "prevData")
		if b, err = appendLexLink(b, c.PrevData); err != nil {
			return nil, fmt.Errorf("prevData: %w", err)
		}
	}
	return b, nil
}

// appendRepoOp appends one op as cbor-gen writes SyncSubscribeRepos_RepoOp.
func appendRepoOp(b []byte, op *comatproto.SyncSubscribeRepos_RepoOp) ([]byte, error) {
	if op == nil {
		return append(b, cborNull), nil
	}
	n := uint64(4)
	if op.Prev == nil {
		n--
	}
	b = appendHead(b, majMap, n)
	b = appendText(b, "cid")
	var err error
	if b, err = appendLexLink(b, op.Cid); err != nil {
		return nil, fmt.Errorf("op cid: %w", err)
	}
	if b, err = appendLimitedText(b, "path", op.Path); err != nil {
		return nil, err
	}
	if op.Prev != nil {
		b = appendText(b, "prev")
		if b, err = appendLexLink(b, op.Prev); err != nil {
			return nil, fmt.Errorf("op prev: %w", err)
		}
	}
	return appendLimitedText(b, "action", op.Action)
}

// appendLexLink appends a link, or null for a nil one; an undefined CID is an error.
func appendLexLink(b []byte, l *lexutil.LexLink) ([]byte, error) {
	if l == nil {
		return append(b, cborNull), nil
	}
	c := cid.Cid(*l)
	if !c.Defined() {
		return nil, errors.New("undefined cid-link")
	}
	return appendCIDLink(b, c.Bytes()), nil
}

// appendLimitedText appends the key and then the text value v, refusing what cbor-gen
// refuses.
func appendLimitedText(b []byte, key, v string) ([]byte, error) {
	if len(v) > cborMaxText {
		return nil, fmt.Errorf("%s: %d bytes, limit %d", key, len(v), cborMaxText)
	}
	return appendText(appendText(b, key), v), nil
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, cborTrue)
	}
	return append(b, cborFalse)
}
