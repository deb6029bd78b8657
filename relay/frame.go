package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// CBOR major types used by the hand-written frame headers. The headers are two tiny fixed
// maps, so writing them directly avoids a reflection-based encoder on the hot path and keeps
// DAG-CBOR's rules (shortest heads, length-first key order) visible.
const (
	majUint   = 0
	majNegInt = 1
	majBytes  = 2
	majText   = 3
	majArray  = 4
	majMap    = 5
	majTag    = 6
)

// Frame operations (atproto-reference §6.2).
const (
	opMessage = 1
	opError   = -1
)

// maxHeaderSize bounds what DecodeFrame reads as a header: real ones are under 20 bytes.
const maxHeaderSize = 256

// FrameError is an error frame ({op: -1} + {error, message}) read by DecodeFrame, or the
// reason a stream ended.
type FrameError struct {
	// Name is the error name, such as FutureCursor or ConsumerTooSlow.
	Name string
	// Message is the optional human-readable text.
	Message string
}

// Error returns the name and message.
func (e *FrameError) Error() string {
	if e.Message == "" {
		return "relay: error frame " + e.Name
	}
	return "relay: error frame " + e.Name + ": " + e.Message
}

func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), n)
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, majText, uint64(len(s))), s...)
}

// appendCIDLink appends a DAG-CBOR link: tag 42 over bytes 0x00 + binary CID.
func appendCIDLink(b []byte, cidBytes []byte) []byte {
	b = appendHead(b, majTag, 42)
	b = appendHead(b, majBytes, uint64(len(cidBytes)+1))
	b = append(b, 0)
	return append(b, cidBytes...)
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

// appendMessageHeader appends {t: kind, op: 1}; "t" sorts before "op" (shorter key first).
func appendMessageHeader(b []byte, kind string) []byte {
	b = appendHead(b, majMap, 2)
	b = appendText(b, "t")
	b = appendText(b, kind)
	b = appendText(b, "op")
	return appendHead(b, majUint, opMessage)
}

// ErrorFrame returns the frame {op: -1} + {error: name, message}; message may be empty.
// The server closes the stream after sending one.
func ErrorFrame(name, message string) []byte {
	b := appendHead(nil, majMap, 1)
	b = appendText(b, "op")
	b = appendHead(b, majNegInt, 0) // -1 is encoded as negative-integer 0
	n := uint64(1)
	if message != "" {
		n = 2
	}
	b = appendHead(b, majMap, n)
	b = appendText(b, "error")
	b = appendText(b, name)
	if message != "" {
		b = appendText(b, "message")
		b = appendText(b, message)
	}
	return b
}

// InfoFrame returns an #info message frame such as {name: "OutdatedCursor", message}.
func InfoFrame(name, message string) []byte {
	ev := &Event{Info: &comatproto.SyncSubscribeRepos_Info{Name: name}}
	if message != "" {
		ev.Info.Message = &message
	}
	// An #info body has no links or byte strings; encoding it cannot fail.
	if err := ev.encode(); err != nil {
		return ErrorFrame("InternalError", "")
	}
	return ev.frame
}

// DecodeFrame parses one event stream frame from untrusted bytes. It returns the decoded
// event (with Seq and Time from the body; Frame returns b), a *FrameError for an error
// frame, ErrUnknownType (wrapped) for a message type it does not know, or ErrMalformedFrame
// (wrapped) for anything else: bad CBOR, a bad header, trailing bytes, more than
// MaxFrameSize bytes.
func DecodeFrame(b []byte) (*Event, error) {
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformedFrame, len(b), MaxFrameSize)
	}
	hdr, rest, err := decodeHeader(b)
	if err != nil {
		return nil, err
	}
	r := bytes.NewReader(rest)
	if hdr.op == opError {
		m, tail, err := decodeStringMap(rest, "error", "message")
		if err != nil || len(tail) != 0 || m["error"] == "" {
			return nil, fmt.Errorf("%w: bad error body", ErrMalformedFrame)
		}
		return nil, &FrameError{Name: m["error"], Message: m["message"]}
	}
	if hdr.op != opMessage {
		return nil, fmt.Errorf("%w: op %d", ErrUnknownType, hdr.op)
	}
	ev := &Event{frame: b}
	switch hdr.t {
	case KindCommit:
		ev.Commit = new(comatproto.SyncSubscribeRepos_Commit)
		err = ev.Commit.UnmarshalCBOR(r)
	case KindIdentity:
		ev.Identity = new(comatproto.SyncSubscribeRepos_Identity)
		err = ev.Identity.UnmarshalCBOR(r)
	case KindAccount:
		ev.Account = new(comatproto.SyncSubscribeRepos_Account)
		err = ev.Account.UnmarshalCBOR(r)
	case KindSync:
		ev.Sync = new(comatproto.SyncSubscribeRepos_Sync)
		err = ev.Sync.UnmarshalCBOR(r)
	case KindInfo:
		ev.Info = new(comatproto.SyncSubscribeRepos_Info)
		err = ev.Info.UnmarshalCBOR(r)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, hdr.t)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s body: %w", ErrMalformedFrame, hdr.t, err)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the %s body", ErrMalformedFrame, r.Len(), hdr.t)
	}
	var ts string
	switch {
	case ev.Commit != nil:
		ev.Seq, ts = ev.Commit.Seq, ev.Commit.Time
	case ev.Identity != nil:
		ev.Seq, ts = ev.Identity.Seq, ev.Identity.Time
	case ev.Account != nil:
		ev.Seq, ts = ev.Account.Seq, ev.Account.Time
	case ev.Sync != nil:
		ev.Seq, ts = ev.Sync.Seq, ev.Sync.Time
	}
	// A remote host's malformed time is its problem, not a reason to drop the event.
	if t, err := syntax.ParseDatetimeLenient(ts); err == nil {
		ev.Time = t.Time()
	}
	return ev, nil
}

type frameHeader struct {
	op int64
	t  string
}

// decodeHeader reads the header map: op (required) and t (required for messages). Unknown
// keys with integer or text values are skipped, as clients must ignore unknown fields.
func decodeHeader(b []byte) (frameHeader, []byte, error) {
	var h frameHeader
	major, n, rest, err := readHead(b)
	if err != nil || major != majMap || n > 8 {
		return h, nil, fmt.Errorf("%w: header is not a small map", ErrMalformedFrame)
	}
	haveOp := false
	for range n {
		var key string
		key, rest, err = readText(rest)
		if err != nil {
			return h, nil, fmt.Errorf("%w: header key: %w", ErrMalformedFrame, err)
		}
		major, v, tail, err := readHead(rest)
		if err != nil {
			return h, nil, fmt.Errorf("%w: header value: %w", ErrMalformedFrame, err)
		}
		switch major {
		case majUint, majNegInt:
			if v > 1<<53 {
				return h, nil, fmt.Errorf("%w: header integer out of range", ErrMalformedFrame)
			}
			iv := int64(v)
			if major == majNegInt {
				iv = -1 - iv
			}
			if key == "op" {
				h.op, haveOp = iv, true
			}
			rest = tail
		case majText:
			var s string
			s, rest, err = readText(rest)
			if err != nil {
				return h, nil, fmt.Errorf("%w: header value: %w", ErrMalformedFrame, err)
			}
			if key == "t" {
				h.t = s
			}
		default:
			return h, nil, fmt.Errorf("%w: header value for %q has major type %d", ErrMalformedFrame, key, major)
		}
	}
	if !haveOp {
		return h, nil, fmt.Errorf("%w: header has no op", ErrMalformedFrame)
	}
	if h.op == opMessage && h.t == "" {
		return h, nil, fmt.Errorf("%w: message header has no t", ErrMalformedFrame)
	}
	return h, rest, nil
}

// decodeStringMap reads a map whose values are text, keeping the keys in want and rejecting
// other value types.
func decodeStringMap(b []byte, want ...string) (map[string]string, []byte, error) {
	major, n, rest, err := readHead(b)
	if err != nil || major != majMap || n > 16 {
		return nil, nil, fmt.Errorf("not a small map")
	}
	m := make(map[string]string, len(want))
	for range n {
		var k, v string
		if k, rest, err = readText(rest); err != nil {
			return nil, nil, err
		}
		if v, rest, err = readText(rest); err != nil {
			return nil, nil, err
		}
		for _, w := range want {
			if k == w {
				m[k] = v
			}
		}
	}
	return m, rest, nil
}

// readHead reads one CBOR item head with a definite argument. Indefinite lengths, floats and
// simple values are rejected: DAG-CBOR headers never use them.
func readHead(b []byte) (major byte, n uint64, rest []byte, err error) {
	if len(b) == 0 {
		return 0, 0, nil, errors.New("unexpected end")
	}
	major, info := b[0]>>5, b[0]&0x1f
	b = b[1:]
	switch {
	case info < 24:
		return major, uint64(info), b, nil
	case info == 24 && len(b) >= 1:
		return major, uint64(b[0]), b[1:], nil
	case info == 25 && len(b) >= 2:
		return major, uint64(binary.BigEndian.Uint16(b)), b[2:], nil
	case info == 26 && len(b) >= 4:
		return major, uint64(binary.BigEndian.Uint32(b)), b[4:], nil
	case info == 27 && len(b) >= 8:
		return major, binary.BigEndian.Uint64(b), b[8:], nil
	}
	return 0, 0, nil, fmt.Errorf("bad item head 0x%02x", major<<5|info)
}

func readText(b []byte) (string, []byte, error) {
	major, n, rest, err := readHead(b)
	if err != nil {
		return "", nil, err
	}
	if major != majText || n > uint64(len(rest)) || n > maxHeaderSize {
		return "", nil, errors.New("want a short text string")
	}
	return string(rest[:n]), rest[n:], nil
}
