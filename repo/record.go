package repo

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
)

// Data-model limits (atproto-reference.md §1.6, the reference PDS's values).
const (
	// MaxRecordSize is the largest record we accept, in DAG-CBOR bytes.
	MaxRecordSize = atdata.MAX_CBOR_RECORD_SIZE
	// MaxRecordJSONSize is the largest record we accept, in JSON bytes.
	MaxRecordJSONSize = atdata.MAX_JSON_RECORD_SIZE
	// MaxRecordDepth is the deepest nesting of objects and arrays in a record;
	// the record itself is level 1.
	MaxRecordDepth = 32
	// maxContainerLen bounds the elements of one array or map.
	maxContainerLen = atdata.MAX_CBOR_CONTAINER_LEN
	// maxSafeInteger is the largest integer a JSON number (float64 in the
	// reference implementation) carries exactly.
	maxSafeInteger = atdata.MAX_SAFE_INTEGER
)

// Record is one repo record in the forms Aerie needs: its collection NSID,
// the exact DAG-CBOR bytes that are stored and hashed, their CID, and the
// parsed value (atdata types: atdata.CIDLink, atdata.Bytes, atdata.Blob) for
// lexicon validation and indexing. CBOR is the truth; Data is derived.
type Record struct {
	Type string
	CBOR []byte
	CID  cid.Cid
	Data map[string]any
}

// RecordFromJSON converts a record from a client (the JSON of a createRecord
// value) into its canonical DAG-CBOR form through indigo's atdata, so the
// bytes match what any other implementation stores for the same JSON; the
// record is never re-encoded through a typed struct, which would drop unknown
// fields. It rejects, wrapping ErrInvalidRecord: fractions and unsafe
// integers, nesting deeper than MaxRecordDepth, a missing or invalid $type,
// malformed $link/$bytes/blob objects and legacy blobs (read-only, §1.4).
// Records over MaxRecordJSONSize or MaxRecordSize wrap ErrTooLarge.
func RecordFromJSON(raw []byte) (*Record, error) {
	data, err := parseJSONData(raw)
	if err != nil {
		return nil, err
	}
	typ, err := recordType(data)
	if err != nil {
		return nil, err
	}
	for _, b := range atdata.ExtractBlobs(data) {
		if b.Size < 0 {
			return nil, fmt.Errorf("%w: legacy blob reference %s: write the {$type: blob} form", ErrInvalidRecord, b.Ref)
		}
	}
	cb, err := atdata.MarshalCBOR(data)
	if err != nil {
		return nil, fmt.Errorf("%w: encode CBOR: %w", ErrInvalidRecord, err)
	}
	if len(cb) > MaxRecordSize {
		return nil, fmt.Errorf("record: %w: %d CBOR bytes, at most %d", ErrTooLarge, len(cb), MaxRecordSize)
	}
	return &Record{Type: typ, CBOR: cb, CID: CBORCID(cb), Data: data}, nil
}

// RecordFromCBOR parses stored or imported record bytes: strict DAG-CBOR
// (no floats, canonical key order, only tag 42), a map with a valid $type,
// within MaxRecordSize and MaxRecordDepth. The bytes are kept as given (the
// caller's slice is retained), so CID is the hash of exactly what was read.
// Errors wrap ErrInvalidRecord or ErrTooLarge.
func RecordFromCBOR(cb []byte) (*Record, error) {
	data, err := parseCBORData(cb)
	if err != nil {
		return nil, err
	}
	typ, err := recordType(data)
	if err != nil {
		return nil, err
	}
	return &Record{Type: typ, CBOR: cb, CID: CBORCID(cb), Data: data}, nil
}

// RecordJSON renders stored record CBOR as JSON for getRecord and
// listRecords: links as {"$link"}, bytes as {"$bytes"}, blobs in their
// stored form. Errors wrap ErrInvalidRecord or ErrTooLarge.
func RecordJSON(cb []byte) ([]byte, error) {
	data, err := parseCBORData(cb)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Text is the author's: <, > and & stay as written rather than \u003c.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(data); err != nil {
		return nil, fmt.Errorf("%w: encode JSON: %w", ErrInvalidRecord, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// BlobRefs returns the CID of every blob reference anywhere in a parsed
// record (modern and legacy forms), each once, in no particular order.
func BlobRefs(data map[string]any) []cid.Cid {
	blobs := atdata.ExtractBlobs(data)
	out := make([]cid.Cid, 0, len(blobs))
	seen := make(map[cid.Cid]bool, len(blobs))
	for _, b := range blobs {
		c := b.Ref.CID()
		if !c.Defined() || seen[c] {
			continue
		}
		seen[c] = true
		out = append(out, c)
	}
	return out
}

// recordType returns a record's $type after checking it is an NSID with no
// fragment (never "app.bsky.feed.post#main", §1.1).
func recordType(data map[string]any) (string, error) {
	v, ok := data["$type"]
	if !ok {
		return "", fmt.Errorf("%w: missing $type", ErrInvalidRecord)
	}
	typ, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: $type is not a string", ErrInvalidRecord)
	}
	if !ValidNSID(typ) {
		return "", fmt.Errorf("%w: $type %q is not an NSID", ErrInvalidRecord, typ)
	}
	return typ, nil
}

// parseJSONData checks JSON against the data model (integers only, depth
// limit) and parses it with atdata. Unlike RecordFromJSON it does not
// require $type, so the interop data-model vectors can drive it.
func parseJSONData(raw []byte) (map[string]any, error) {
	if len(raw) > MaxRecordJSONSize {
		return nil, fmt.Errorf("record: %w: %d JSON bytes, at most %d", ErrTooLarge, len(raw), MaxRecordJSONSize)
	}
	if err := checkJSON(raw); err != nil {
		return nil, err
	}
	data, err := atdata.UnmarshalJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return data, nil
}

// parseCBORData checks CBOR strictly and then parses it with atdata; the
// strict pass runs first so the generic decoder only sees bounded, well-formed
// input.
func parseCBORData(cb []byte) (map[string]any, error) {
	if len(cb) > MaxRecordSize {
		return nil, fmt.Errorf("record: %w: %d CBOR bytes, at most %d", ErrTooLarge, len(cb), MaxRecordSize)
	}
	if len(cb) == 0 || cb[0]>>5 != majMap {
		return nil, fmt.Errorf("%w: not a CBOR map", ErrInvalidRecord)
	}
	raw, err := decodeDAGCBOR(cb, MaxRecordDepth)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	data, err := atdataValue(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return data.(map[string]any), nil // the first byte was checked to open a map
}

// atdataValue turns what decodeDAGCBOR built into the values atdata.UnmarshalCBOR gives
// for the same bytes (FuzzRecordDataMatchesAtdata holds it to that): links become
// atdata.CIDLink, byte strings atdata.Bytes, blob objects atdata.Blob, with atdata's
// rules and limits. atdata decodes through a reflective CBOR library that took a third of
// the time of indexing a like; our strict decoder has already checked everything else.
func atdataValue(v any) (any, error) {
	switch v := v.(type) {
	case string:
		if len(v) > atdata.MAX_RECORD_STRING_LEN {
			return nil, fmt.Errorf("string too long: %d", len(v))
		}
		return v, nil
	case cid.Cid:
		return atdata.CIDLink(v), nil
	case []byte:
		return atdata.Bytes(v), nil
	case []any:
		if len(v) > atdata.MAX_CBOR_CONTAINER_LEN {
			return nil, fmt.Errorf("data array length too long: %d", len(v))
		}
		for i, e := range v {
			a, err := atdataValue(e)
			if err != nil {
				return nil, err
			}
			v[i] = a
		}
		return v, nil
	case map[string]any:
		return atdataMap(v)
	}
	return v, nil // nil, bool, int64
}

// atdataMap is atdataValue for an object: the special forms first ($link, $bytes, blobs,
// legacy blobs), in atdata's order, then every field.
func atdataMap(m map[string]any) (any, error) {
	if len(m) > atdata.MAX_CBOR_CONTAINER_LEN {
		return nil, fmt.Errorf("data object has too many fields: %d", len(m))
	}
	if _, ok := m["$link"]; ok {
		return atdataLink(m)
	}
	if b, ok := m["$bytes"]; ok {
		s, isStr := b.(string)
		if len(m) != 1 || !isStr {
			return nil, errors.New("$bytes objects must have a single string field")
		}
		raw, err := base64.RawStdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("decoding $bytes value: %w", err)
		}
		return atdata.Bytes(raw), nil
	}
	if t, ok := m["$type"]; ok {
		typ, isStr := t.(string)
		if !isStr || typ == "" {
			return nil, errors.New("$type field must contain a non-empty string")
		}
		if typ == "blob" {
			return atdataBlob(m)
		}
	}
	if len(m) == 2 {
		_, hasMime := m["mimeType"]
		if c, hasCID := m["cid"]; hasMime && hasCID {
			mime, ok := m["mimeType"].(string)
			if !ok {
				return nil, errors.New("blob 'mimeType' missing or not a string")
			}
			ref, err := cid.Parse(c)
			if err != nil {
				return nil, fmt.Errorf("invalid CID: %w", err)
			}
			return atdata.Blob{Size: -1, MimeType: mime, Ref: atdata.CIDLink(ref)}, nil
		}
	}
	for k, e := range m {
		if len(k) > atdata.MAX_OBJECT_KEY_LEN {
			return nil, fmt.Errorf("data object key too long: %d", len(k))
		}
		a, err := atdataValue(e)
		if err != nil {
			return nil, err
		}
		m[k] = a
	}
	return m, nil
}

func atdataLink(m map[string]any) (atdata.CIDLink, error) {
	s, ok := m["$link"].(string)
	if len(m) != 1 || !ok {
		return atdata.CIDLink{}, errors.New("$link objects must have a single string field")
	}
	c, err := cid.Parse(s)
	if err != nil {
		return atdata.CIDLink{}, fmt.Errorf("invalid $link CID: %w", err)
	}
	if !c.Defined() {
		return atdata.CIDLink{}, errors.New("undefined (null) CID in $link")
	}
	return atdata.CIDLink(c), nil
}

func atdataBlob(m map[string]any) (atdata.Blob, error) {
	if len(m) != 4 {
		return atdata.Blob{}, errors.New("blobs expected to have 4 fields")
	}
	size, ok := m["size"].(int64)
	if !ok {
		return atdata.Blob{}, errors.New("blob 'size' missing or not a number")
	}
	mime, ok := m["mimeType"].(string)
	if !ok {
		return atdata.Blob{}, errors.New("blob 'mimeType' missing or not a string")
	}
	var ref atdata.CIDLink
	switch r := m["ref"].(type) {
	case cid.Cid:
		ref = atdata.CIDLink(r)
	case map[string]any:
		l, err := atdataLink(r)
		if err != nil {
			return atdata.Blob{}, err
		}
		ref = l
	default:
		return atdata.Blob{}, errors.New("blob 'ref' missing or not a link")
	}
	return atdata.Blob{Size: size, MimeType: mime, Ref: ref}, nil
}

// checkJSON walks the JSON tokens once, before atdata parses it, for what
// atdata's float64-based parse cannot see: nesting depth, and numbers that
// are fractions or too large to be exact. An integral float such as 123.0 is
// accepted, as the interop vectors require.
func checkJSON(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	depth := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				depth++
				if depth > MaxRecordDepth {
					return fmt.Errorf("record: %w: nested deeper than %d", ErrTooLarge, MaxRecordDepth)
				}
			default:
				depth--
			}
		case json.Number:
			if err := checkJSONNumber(v); err != nil {
				return err
			}
		}
	}
}

func checkJSONNumber(n json.Number) error {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil || i > maxSafeInteger || i < -maxSafeInteger {
			return fmt.Errorf("%w: integer %s outside ±(2^53-1)", ErrInvalidRecord, s)
		}
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != float64(int64(f)) || f > maxSafeInteger || f < -maxSafeInteger {
		return fmt.Errorf("%w: number %s is not an integer (floats are not allowed)", ErrInvalidRecord, s)
	}
	return nil
}

// CBOR major types and simple values used by the encoder and the checker.
const (
	majUint   = 0
	majNegInt = 1
	majBytes  = 2
	majText   = 3
	majArray  = 4
	majMap    = 5
	majTag    = 6
	majSimple = 7

	simpleFalse = 0xf4
	simpleTrue  = 0xf5
	simpleNull  = 0xf6

	// tagCID is the only tag DAG-CBOR allows (§1.2).
	tagCID = 42
)

// appendCBORHead appends the shortest head for major type m and argument n.
func appendCBORHead(b []byte, m byte, n uint64) []byte {
	m <<= 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return append(b, m|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(b, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func appendCBORText(b []byte, s string) []byte {
	b = appendCBORHead(b, majText, uint64(len(s)))
	return append(b, s...)
}

// appendCBORLink appends a CID as tag 42 over a byte string whose first byte
// is the 0x00 identity multibase prefix (§1.3).
func appendCBORLink(b []byte, c cid.Cid) []byte {
	raw := c.Bytes()
	b = append(b, 0xd8, tagCID)
	b = appendCBORHead(b, majBytes, uint64(len(raw)+1))
	b = append(b, 0)
	return append(b, raw...)
}

// checkDAGCBOR reports whether data is exactly one strict DAG-CBOR item:
// definite lengths, shortest heads, text map keys in canonical order (which
// also rules out duplicates), valid UTF-8, tag 42 only (over a well-formed
// CID), no floats or simple values besides false/true/null, containers at most
// maxDepth deep and maxContainerLen long, and no trailing bytes.
func checkDAGCBOR(data []byte, maxDepth int) error {
	d := cborDecoder{data: data, maxDepth: maxDepth}
	if _, err := d.item(0, false); err != nil {
		return err
	}
	if d.off != len(data) {
		return fmt.Errorf("%d trailing bytes", len(data)-d.off)
	}
	return nil
}

// decodeDAGCBOR is checkDAGCBOR that also builds the value: map[string]any,
// []any, int64, string, []byte, cid.Cid, bool or nil. Records go on through
// atdataValue.
func decodeDAGCBOR(data []byte, maxDepth int) (any, error) {
	d := cborDecoder{data: data, maxDepth: maxDepth}
	v, err := d.item(0, true)
	if err != nil {
		return nil, err
	}
	if d.off != len(data) {
		return nil, fmt.Errorf("%d trailing bytes", len(data)-d.off)
	}
	return v, nil
}

// cborDecoder is a strict DAG-CBOR reader over a byte slice. It recurses at
// most maxDepth levels and never allocates more than the input can justify.
type cborDecoder struct {
	data     []byte
	off      int
	maxDepth int
}

var errCBORShort = errors.New("unexpected end of CBOR")

// head reads an item head and returns its major type and argument, rejecting
// indefinite lengths, reserved values and non-shortest forms.
func (d *cborDecoder) head() (major byte, arg uint64, info byte, err error) {
	if d.off >= len(d.data) {
		return 0, 0, 0, errCBORShort
	}
	ib := d.data[d.off]
	d.off++
	major, info = ib>>5, ib&0x1f
	if info < 24 {
		return major, uint64(info), info, nil
	}
	var size int
	switch info {
	case 24:
		size = 1
	case 25:
		size = 2
	case 26:
		size = 4
	case 27:
		size = 8
	default:
		return 0, 0, 0, fmt.Errorf("indefinite or reserved CBOR head 0x%02x", ib)
	}
	if len(d.data)-d.off < size {
		return 0, 0, 0, errCBORShort
	}
	for _, c := range d.data[d.off : d.off+size] {
		arg = arg<<8 | uint64(c)
	}
	d.off += size
	if major == majSimple {
		// Floats (25–27) and two-byte simple values are all forbidden.
		return 0, 0, 0, fmt.Errorf("CBOR float or simple value 0x%02x not allowed", ib)
	}
	minimal := (size == 1 && arg >= 24) || (size == 2 && arg > 0xff) ||
		(size == 4 && arg > 0xffff) || (size == 8 && arg > 0xffffffff)
	if !minimal {
		return 0, 0, 0, fmt.Errorf("CBOR integer or length not in shortest form")
	}
	return major, arg, info, nil
}

// take returns the next n bytes, which must be present.
func (d *cborDecoder) take(n uint64) ([]byte, error) {
	if n > uint64(len(d.data)-d.off) {
		return nil, errCBORShort
	}
	b := d.data[d.off : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

func (d *cborDecoder) item(depth int, build bool) (any, error) {
	major, arg, info, err := d.head()
	if err != nil {
		return nil, err
	}
	switch major {
	case majUint:
		if arg > 1<<63-1 {
			return nil, fmt.Errorf("CBOR integer %d overflows int64", arg)
		}
		return int64(arg), nil
	case majNegInt:
		if arg > 1<<63-1 {
			return nil, fmt.Errorf("CBOR negative integer overflows int64")
		}
		return -1 - int64(arg), nil
	case majBytes:
		b, err := d.take(arg)
		if err != nil {
			return nil, err
		}
		if build {
			return bytes.Clone(b), nil
		}
		return nil, nil
	case majText:
		b, err := d.take(arg)
		if err != nil {
			return nil, err
		}
		if !utf8.Valid(b) {
			return nil, errors.New("CBOR text is not valid UTF-8")
		}
		if build {
			return string(b), nil
		}
		return nil, nil
	case majArray, majMap:
		return d.container(major, arg, depth+1, build)
	case majTag:
		if arg != tagCID {
			return nil, fmt.Errorf("CBOR tag %d not allowed", arg)
		}
		return d.link()
	default: // majSimple with a one-byte head
		switch info {
		case simpleFalse & 0x1f:
			return false, nil
		case simpleTrue & 0x1f:
			return true, nil
		case simpleNull & 0x1f:
			return nil, nil
		}
		return nil, fmt.Errorf("CBOR simple value %d not allowed", info)
	}
}

func (d *cborDecoder) container(major byte, n uint64, depth int, build bool) (any, error) {
	if depth > d.maxDepth {
		return nil, fmt.Errorf("CBOR nested deeper than %d", d.maxDepth)
	}
	// Every element takes at least one byte (a map entry two), so a count
	// larger than what is left is a lie, whatever the limit.
	if n > maxContainerLen || n > uint64(len(d.data)-d.off) {
		return nil, fmt.Errorf("CBOR container of %d elements too long", n)
	}
	if major == majArray {
		var arr []any
		if build {
			arr = make([]any, 0, n)
		}
		for range n {
			v, err := d.item(depth, build)
			if err != nil {
				return nil, err
			}
			if build {
				arr = append(arr, v)
			}
		}
		return arr, nil
	}
	var m map[string]any
	if build {
		m = make(map[string]any, n)
	}
	var prev []byte
	for i := range n {
		kMajor, kLen, _, err := d.head()
		if err != nil {
			return nil, err
		}
		if kMajor != majText {
			return nil, errors.New("CBOR map key is not text")
		}
		key, err := d.take(kLen)
		if err != nil {
			return nil, err
		}
		if !utf8.Valid(key) {
			return nil, errors.New("CBOR map key is not valid UTF-8")
		}
		if i > 0 && !keyLess(prev, key) {
			return nil, fmt.Errorf("CBOR map key %q out of canonical order or repeated", key)
		}
		prev = key
		v, err := d.item(depth, build)
		if err != nil {
			return nil, err
		}
		if build {
			m[string(key)] = v
		}
	}
	return m, nil
}

// keyLess is DAG-CBOR map key order: shorter first, then bytewise.
func keyLess(a, b []byte) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return bytes.Compare(a, b) < 0
}

// link reads the byte string under tag 42: a 0x00 prefix and a binary CID.
func (d *cborDecoder) link() (any, error) {
	major, n, _, err := d.head()
	if err != nil {
		return nil, err
	}
	if major != majBytes {
		return nil, errors.New("CBOR tag 42 is not over a byte string")
	}
	b, err := d.take(n)
	if err != nil {
		return nil, err
	}
	if len(b) < 2 || b[0] != 0 {
		return nil, errors.New("CBOR link lacks the 0x00 multibase prefix")
	}
	if len(b)-1 > atdata.MAX_CID_BYTES {
		return nil, fmt.Errorf("CBOR link of %d bytes too long", len(b)-1)
	}
	c, err := cid.Cast(b[1:])
	if err != nil {
		return nil, fmt.Errorf("CBOR link: %w", err)
	}
	return c, nil
}
