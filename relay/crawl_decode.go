package relay

import (
	"bytes"
	"errors"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	"github.com/ipfs/go-cid"
)

// decodeCrawledFrame is DecodeFrame with a fast path for what nearly every crawled frame
// is: a #commit in canonical DAG-CBOR with only the lexicon's fields. That path reads the
// byte slice directly instead of through cbor-gen's reader interface. Anything it does not
// take (other kinds, unknown fields, non-canonical forms, errors of any sort) goes to
// DecodeFrame, so the two never disagree on what a frame means: the fast path accepts only
// input cbor-gen decodes to the same values (FuzzDecodeCommitFast holds it to that).
func decodeCrawledFrame(b []byte) (*Event, error) {
	if ev := decodeCommitFast(b); ev != nil {
		return ev, nil
	}
	return DecodeFrame(b)
}

// errSlow sends a frame to DecodeFrame; it never leaves this file.
var errSlow = errors.New("not a canonical #commit")

// Limits of indigo's generated decoder for #commit, kept so that the fast path never takes
// what it would refuse.
const (
	cborMaxCIDLink = 512
	cborMaxFields  = 12
)

// decodeCommitFast returns the #commit event in b, or nil when b is anything else or not
// in the canonical form this decoder insists on.
func decodeCommitFast(b []byte) *Event {
	if len(b) > MaxFrameSize {
		return nil
	}
	hdr, rest, err := decodeHeader(b)
	if err != nil || hdr.op != opMessage || hdr.t != KindCommit {
		return nil
	}
	d := fastDecoder{b: rest}
	c, err := d.commit()
	if err != nil || len(d.b) != 0 {
		return nil
	}
	ev := &Event{Commit: c, Seq: c.Seq}
	// As DecodeFrame: a remote host's malformed time is not a reason to drop the event.
	if t, err := syntax.ParseDatetimeLenient(c.Time); err == nil {
		ev.Time = t.Time()
	}
	return ev
}

// fastDecoder reads canonical DAG-CBOR from b, consuming it.
type fastDecoder struct{ b []byte }

// head reads an item head with a definite argument in its shortest form.
func (d *fastDecoder) head() (major byte, n uint64, err error) {
	major, n, rest, err := readHead(d.b)
	if err != nil {
		return 0, 0, errSlow
	}
	if info := d.b[0] & 0x1f; info >= 24 {
		// Shortest form: a one-byte argument is 24 or more, a two-byte one above 0xff, ….
		if min := [...]uint64{24, 0x100, 0x10000, 0x100000000}[info-24]; n < min {
			return 0, 0, errSlow
		}
	}
	d.b = rest
	return major, n, nil
}

// null consumes a null if one is next.
func (d *fastDecoder) null() bool {
	if len(d.b) > 0 && d.b[0] == cborNull {
		d.b = d.b[1:]
		return true
	}
	return false
}

func (d *fastDecoder) text() (string, error) {
	major, n, err := d.head()
	if err != nil || major != majText || n > cborMaxText || n > uint64(len(d.b)) {
		return "", errSlow
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s, nil
}

// key reads a map key, which must sort after prev (so keys are canonical and unique). It
// returns a sub-slice of the input: keys are only compared, never kept.
func (d *fastDecoder) key(prev []byte) ([]byte, error) {
	major, n, err := d.head()
	if err != nil || major != majText || n > uint64(len(d.b)) {
		return nil, errSlow
	}
	k := d.b[:n]
	if len(k) < len(prev) || len(k) == len(prev) && bytes.Compare(k, prev) <= 0 {
		return nil, errSlow
	}
	d.b = d.b[n:]
	return k, nil
}

func (d *fastDecoder) link() (lexutil.LexLink, error) {
	major, n, err := d.head()
	if err != nil || major != majTag || n != 42 {
		return lexutil.LexLink{}, errSlow
	}
	major, n, err = d.head()
	if err != nil || major != majBytes || n < 2 || n > cborMaxCIDLink || n > uint64(len(d.b)) || d.b[0] != 0 {
		return lexutil.LexLink{}, errSlow
	}
	c, err := cid.Cast(d.b[1:n])
	if err != nil {
		return lexutil.LexLink{}, errSlow
	}
	d.b = d.b[n:]
	return lexutil.LexLink(c), nil
}

func (d *fastDecoder) optLink() (*lexutil.LexLink, error) {
	if d.null() {
		return nil, nil
	}
	l, err := d.link()
	if err != nil {
		return nil, err
	}
	return &l, nil
}

func (d *fastDecoder) boolean() (bool, error) {
	if len(d.b) > 0 && (d.b[0] == cborFalse || d.b[0] == cborTrue) {
		v := d.b[0] == cborTrue
		d.b = d.b[1:]
		return v, nil
	}
	return false, errSlow
}

// array reads an array head of at most cborMaxSlice elements.
func (d *fastDecoder) array() (int, error) {
	major, n, err := d.head()
	if err != nil || major != majArray || n > cborMaxSlice || n > uint64(len(d.b)) {
		return 0, errSlow
	}
	return int(n), nil
}

func (d *fastDecoder) commit() (*comatproto.SyncSubscribeRepos_Commit, error) {
	major, n, err := d.head()
	if err != nil || major != majMap || n > cborMaxFields {
		return nil, errSlow
	}
	c := &comatproto.SyncSubscribeRepos_Commit{}
	var k []byte
	for range n {
		if k, err = d.key(k); err != nil {
			return nil, err
		}
		switch string(k) {
		case "ops":
			var m int
			if m, err = d.array(); err == nil && m > 0 {
				c.Ops = make([]*comatproto.SyncSubscribeRepos_RepoOp, m)
				for i := range c.Ops {
					if !d.null() {
						if c.Ops[i], err = d.op(); err != nil {
							break
						}
					}
				}
			}
		case "rev":
			c.Rev, err = d.text()
		case "seq":
			c.Seq, err = d.int64()
		case "repo":
			c.Repo, err = d.text()
		case "time":
			c.Time, err = d.text()
		case "blobs":
			var m int
			if m, err = d.array(); err == nil && m > 0 {
				c.Blobs = make([]lexutil.LexLink, m)
				for i := range c.Blobs {
					if c.Blobs[i], err = d.link(); err != nil {
						break
					}
				}
			}
		case "since":
			if !d.null() {
				var s string
				s, err = d.text()
				c.Since = &s
			}
		case "blocks":
			var m uint64
			if major, m, err = d.head(); err == nil {
				if major != majBytes || m > cborMaxBytes || m > uint64(len(d.b)) {
					return nil, errSlow
				}
				if m > 0 {
					c.Blocks = lexutil.LexBytes(append(make([]byte, 0, m), d.b[:m]...))
				}
				d.b = d.b[m:]
			}
		case "commit":
			c.Commit, err = d.link()
		case "rebase":
			c.Rebase, err = d.boolean()
		case "tooBig":
			c.TooBig, err = d.boolean()
		case "prevData":
			c.PrevData, err = d.optLink()
		default:
			return nil, errSlow // an unknown field: DecodeFrame knows how to skip it
		}
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (d *fastDecoder) op() (*comatproto.SyncSubscribeRepos_RepoOp, error) {
	major, n, err := d.head()
	if err != nil || major != majMap || n > 4 {
		return nil, errSlow
	}
	op := &comatproto.SyncSubscribeRepos_RepoOp{}
	var k []byte
	for range n {
		if k, err = d.key(k); err != nil {
			return nil, err
		}
		switch string(k) {
		case "cid":
			op.Cid, err = d.optLink()
		case "path":
			op.Path, err = d.text()
		case "prev":
			op.Prev, err = d.optLink()
		case "action":
			op.Action, err = d.text()
		default:
			return nil, errSlow
		}
		if err != nil {
			return nil, err
		}
	}
	return op, nil
}

func (d *fastDecoder) int64() (int64, error) {
	major, n, err := d.head()
	if err != nil || n > 1<<63-1 {
		return 0, errSlow
	}
	switch major {
	case majUint:
		return int64(n), nil
	case majNegInt:
		return -1 - int64(n), nil
	}
	return 0, errSlow
}
