package relay

import (
	"bytes"
	"fmt"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
)

// Message types of com.atproto.sync.subscribeRepos, as the frame header's t field spells
// them (atproto-reference §6.4).
const (
	KindCommit   = "#commit"
	KindIdentity = "#identity"
	KindAccount  = "#account"
	KindSync     = "#sync"
	KindInfo     = "#info"
)

// MaxFrameSize is the largest frame the firehose sends or DecodeFrame accepts: the 5 MB
// WebSocket message cap of atproto-reference §6.2.
const MaxFrameSize = 5_000_000

// Size limits of atproto-reference §6.4, checked on Submit so that the log never holds an
// event its consumers must reject. repo enforces the same limits on local commits.
const (
	maxSyncBlocks   = 10_000
	maxCommitBlocks = 2_000_000
	maxCommitOps    = 200
)

// Event is one firehose message. Exactly one body pointer is set. The bodies are indigo's
// generated lexicon types, so the in-process indexer reads the same values a remote consumer
// decodes from the wire.
//
// Build events with NewCommit, NewIdentity, NewAccount or NewSync and pass them to
// Sequencer.Submit, which fills Seq and Time (and the bodies' seq and time). Events returned
// by a Subscription or DecodeFrame are shared and read-only.
type Event struct {
	// Seq is the position in the log, set by the sequencer.
	Seq int64
	// Time is when the event was sequenced.
	Time time.Time

	Commit   *comatproto.SyncSubscribeRepos_Commit
	Identity *comatproto.SyncSubscribeRepos_Identity
	Account  *comatproto.SyncSubscribeRepos_Account
	Sync     *comatproto.SyncSubscribeRepos_Sync
	// Info is only set on frames read by DecodeFrame: #info is never sequenced.
	Info *comatproto.SyncSubscribeRepos_Info

	// Remote marks an event the crawler verified from another host. The log keeps it with
	// the local ones (the indexer reads one stream), but the PDS firehose leaves it out:
	// that stream speaks only for this node's accounts.
	Remote bool

	// frame is the encoded header and body, set once by the sequencer or DecodeFrame.
	frame []byte
}

// Kind returns the message type (KindCommit, …), or "" for an event without a body.
func (e *Event) Kind() string {
	switch {
	case e.Commit != nil:
		return KindCommit
	case e.Identity != nil:
		return KindIdentity
	case e.Account != nil:
		return KindAccount
	case e.Sync != nil:
		return KindSync
	case e.Info != nil:
		return KindInfo
	}
	return ""
}

// DID returns the account the event is about (#commit calls it repo, the others did).
func (e *Event) DID() string {
	switch {
	case e.Commit != nil:
		return e.Commit.Repo
	case e.Identity != nil:
		return e.Identity.Did
	case e.Account != nil:
		return e.Account.Did
	case e.Sync != nil:
		return e.Sync.Did
	}
	return ""
}

// Frame returns the event's wire frame (header then body, atproto-reference §6.2), or nil
// before the event is sequenced. The bytes are shared and must not be modified.
func (e *Event) Frame() []byte { return e.frame }

// NewIdentity returns an #identity event: did's identity may have changed. An empty handle
// leaves the optional handle field out; pass "handle.invalid" when validation failed.
func NewIdentity(did syntax.DID, handle syntax.Handle) *Event {
	body := &comatproto.SyncSubscribeRepos_Identity{Did: did.String()}
	if handle != "" {
		h := handle.String()
		body.Handle = &h
	}
	return &Event{Identity: body}
}

// NewAccount returns an #account event: did's hosting status at this node. status is empty
// for an active account, else one of takendown, suspended, deleted, deactivated, ….
func NewAccount(did syntax.DID, active bool, status string) *Event {
	body := &comatproto.SyncSubscribeRepos_Account{Did: did.String(), Active: active}
	if status != "" {
		body.Status = &status
	}
	return &Event{Account: body}
}

// NewSync returns a #sync event declaring commit (whose bytes are block) did's current state
// at rev. Its blocks field is a CAR holding just that block, as the lexicon asks. It returns
// ErrInvalidEvent when block does not hash to commit or the CAR exceeds 10,000 bytes.
func NewSync(did syntax.DID, rev syntax.TID, commit cid.Cid, block []byte) (*Event, error) {
	got, err := commit.Prefix().Sum(block)
	if err != nil || !got.Equals(commit) {
		return nil, fmt.Errorf("%w: #sync commit block does not match %s", ErrInvalidEvent, commit)
	}
	car := appendCAR(nil, commit, block)
	if len(car) > maxSyncBlocks {
		return nil, fmt.Errorf("%w: #sync blocks is %d bytes, limit %d", ErrInvalidEvent, len(car), maxSyncBlocks)
	}
	return &Event{Sync: &comatproto.SyncSubscribeRepos_Sync{
		Did:    did.String(),
		Rev:    rev.String(),
		Blocks: lexutil.LexBytes(car),
	}}, nil
}

// appendCAR appends a CAR v1 file with root c and the single block (c, data): a varint-framed
// DAG-CBOR header {roots: [c], version: 1}, then one varint-framed CID+data section.
func appendCAR(b []byte, c cid.Cid, data []byte) []byte {
	cb := c.Bytes()
	var hdr []byte
	hdr = appendHead(hdr, majMap, 2)
	hdr = appendText(hdr, "roots") // length-first key order: "roots" (5) before "version" (7)
	hdr = appendHead(hdr, majArray, 1)
	hdr = appendCIDLink(hdr, cb)
	hdr = appendText(hdr, "version")
	hdr = appendHead(hdr, majUint, 1)
	b = appendUvarint(b, uint64(len(hdr)))
	b = append(b, hdr...)
	b = appendUvarint(b, uint64(len(cb)+len(data)))
	b = append(b, cb...)
	return append(b, data...)
}

// setSeq writes seq and t into the body, where the wire format carries them.
func (e *Event) setSeq(seq int64, t time.Time) {
	e.Seq, e.Time = seq, t
	ts := t.UTC().Format(syntax.AtprotoDatetimeLayout)
	switch {
	case e.Commit != nil:
		e.Commit.Seq, e.Commit.Time = seq, ts
	case e.Identity != nil:
		e.Identity.Seq, e.Identity.Time = seq, ts
	case e.Account != nil:
		e.Account.Seq, e.Account.Time = seq, ts
	case e.Sync != nil:
		e.Sync.Seq, e.Sync.Time = seq, ts
	}
}

// check reports ErrInvalidEvent unless exactly one sequenceable body is set and its DID
// parses: a malformed event must fail its submitter, not every consumer of the log.
func (e *Event) check() error {
	n := 0
	for _, set := range []bool{e.Commit != nil, e.Identity != nil, e.Account != nil, e.Sync != nil} {
		if set {
			n++
		}
	}
	if n != 1 || e.Info != nil {
		return fmt.Errorf("%w: want exactly one of #commit, #identity, #account, #sync", ErrInvalidEvent)
	}
	if _, err := syntax.ParseDID(e.DID()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	switch {
	case e.Commit != nil && len(e.Commit.Blocks) > maxCommitBlocks:
		return fmt.Errorf("%w: #commit blocks are %d bytes, limit %d", ErrInvalidEvent, len(e.Commit.Blocks), maxCommitBlocks)
	case e.Commit != nil && len(e.Commit.Ops) > maxCommitOps:
		return fmt.Errorf("%w: #commit has %d ops, limit %d", ErrInvalidEvent, len(e.Commit.Ops), maxCommitOps)
	case e.Sync != nil && len(e.Sync.Blocks) > maxSyncBlocks:
		return fmt.Errorf("%w: #sync blocks are %d bytes, limit %d", ErrInvalidEvent, len(e.Sync.Blocks), maxSyncBlocks)
	}
	return nil
}

// encode sets e.frame to the header for e's kind followed by the DAG-CBOR body. Called once,
// by the sequencer, after setSeq.
func (e *Event) encode() error {
	kind := e.Kind()
	var err error
	if e.Commit != nil {
		// Commits are nearly every event: encoded by hand into one allocation.
		b := appendMessageHeader(make([]byte, 0, 64+e.sizeHint()), kind)
		b, err = appendCommitBody(b, e.Commit)
		if err != nil {
			return fmt.Errorf("%w: encode %s: %w", ErrInvalidEvent, kind, err)
		}
		return e.setFrame(kind, b)
	}
	var buf bytes.Buffer
	buf.Grow(64 + e.sizeHint())
	buf.Write(appendMessageHeader(nil, kind))
	switch {
	case e.Identity != nil:
		err = e.Identity.MarshalCBOR(&buf)
	case e.Account != nil:
		err = e.Account.MarshalCBOR(&buf)
	case e.Sync != nil:
		err = e.Sync.MarshalCBOR(&buf)
	case e.Info != nil:
		err = e.Info.MarshalCBOR(&buf)
	}
	if err != nil {
		// cbor-gen refuses only out-of-bounds content (lengths, undefined links).
		return fmt.Errorf("%w: encode %s: %w", ErrInvalidEvent, kind, err)
	}
	return e.setFrame(kind, buf.Bytes())
}

// setFrame sets e.frame to b unless it is longer than a frame may be.
func (e *Event) setFrame(kind string, b []byte) error {
	if len(b) > MaxFrameSize {
		return fmt.Errorf("%w: %s frame is %d bytes, limit %d", ErrInvalidEvent, kind, len(b), MaxFrameSize)
	}
	e.frame = b
	return nil
}

// sizeHint is roughly the body's encoded size, so encode allocates once.
func (e *Event) sizeHint() int {
	switch {
	case e.Commit != nil:
		return len(e.Commit.Blocks) + 128*len(e.Commit.Ops) + 256
	case e.Sync != nil:
		return len(e.Sync.Blocks) + 128
	}
	return 128
}

// rev returns the repo rev a #commit or #sync moves to, or "".
func (e *Event) rev() string {
	switch {
	case e.Commit != nil:
		return e.Commit.Rev
	case e.Sync != nil:
		return e.Sync.Rev
	}
	return ""
}

// link returns c as a lexicon link, or nil for cid.Undef (null or absent on the wire).
func link(c cid.Cid) *lexutil.LexLink {
	if !c.Defined() {
		return nil
	}
	l := lexutil.LexLink(c)
	return &l
}
