package xrpc

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// ParseHandle parses a handle (https://atproto.com/specs/handle) and returns
// it lower-cased: handles are case-insensitive and are only ever compared or
// resolved, so normalizing here lets everything past the edge use ==.
// Errors wrap ErrInvalidSyntax.
func ParseHandle(raw string) (syntax.Handle, error) {
	h, err := syntax.ParseHandle(raw)
	if err != nil {
		return "", invalid("handle", err)
	}
	return h.Normalize(), nil
}

// ParseDID parses a DID (https://atproto.com/specs/did) of any method. DIDs
// are case-sensitive, so the result is raw unchanged. Errors wrap
// ErrInvalidSyntax.
func ParseDID(raw string) (syntax.DID, error) {
	d, err := syntax.ParseDID(raw)
	if err != nil {
		return "", invalid("DID", err)
	}
	return d, nil
}

// ParseATIdentifier parses an at-identifier: a DID, or else a handle. A
// handle comes back lower-cased as from ParseHandle; a DID unchanged.
// Errors wrap ErrInvalidSyntax.
func ParseATIdentifier(raw string) (syntax.AtIdentifier, error) {
	id, err := syntax.ParseAtIdentifier(raw)
	if err != nil {
		return "", invalid("at-identifier", err)
	}
	return id.Normalize(), nil
}

// ParseNSID parses a namespaced identifier
// (https://atproto.com/specs/nsid). The result is raw unchanged: NSIDs name
// collections, which are stored and compared byte for byte. Errors wrap
// ErrInvalidSyntax.
func ParseNSID(raw string) (syntax.NSID, error) {
	n, err := syntax.ParseNSID(raw)
	if err != nil {
		return "", invalid("NSID", err)
	}
	return n, nil
}

// ParseRecordKey parses a record key
// (https://atproto.com/specs/record-key); "." and ".." are rejected. Errors
// wrap ErrInvalidSyntax.
func ParseRecordKey(raw string) (syntax.RecordKey, error) {
	k, err := syntax.ParseRecordKey(raw)
	if err != nil {
		return "", invalid("record key", err)
	}
	return k, nil
}

// ParseTID parses a timestamp identifier
// (https://atproto.com/specs/tid): 13 base32-sortable characters with the
// top bit clear. Errors wrap ErrInvalidSyntax.
func ParseTID(raw string) (syntax.TID, error) {
	t, err := syntax.ParseTID(raw)
	if err != nil {
		return "", invalid("TID", err)
	}
	return t, nil
}

// ParseATURI parses an AT-URI in the strict Lexicon at-uri form
// (https://atproto.com/specs/at-uri-scheme): at:// + authority, then an
// optional collection NSID and record key, and nothing else. The result is
// raw unchanged: a handle authority is resolved, not compared, and an AT-URI
// stored as a reference must keep its bytes. Errors wrap ErrInvalidSyntax.
func ParseATURI(raw string) (syntax.ATURI, error) {
	u, err := syntax.ParseATURI(raw)
	if err != nil {
		return "", invalid("AT-URI", err)
	}
	return u, nil
}

// ParseDatetime parses a Lexicon datetime
// (https://atproto.com/specs/lexicon#datetime): RFC 3339 and ISO 8601 at
// once, with seconds and a timezone, naming a real instant in year 0 or
// later. The result is raw unchanged, since records keep datetimes as
// strings. Errors wrap ErrInvalidSyntax.
func ParseDatetime(raw string) (syntax.Datetime, error) {
	d, err := syntax.ParseDatetime(raw)
	if err != nil {
		return "", invalid("datetime", err)
	}
	return d, nil
}

// ParseLanguage parses a BCP 47 language tag (RFC 5646), strictly: see
// checkLanguage for what that adds to indigo's check. The result is raw
// unchanged. Errors wrap ErrInvalidSyntax.
func ParseLanguage(raw string) (syntax.Language, error) {
	// indigo's regex rejects valid private-use tags such as "X-fr-CH" and
	// accepts repeated variants and singletons, so it is not consulted.
	if err := checkLanguage(raw); err != nil {
		return "", invalid("language", err)
	}
	return syntax.Language(raw), nil
}

// ParseURI parses a generic URI in the Lexicon uri format (scheme, colon,
// then printable ASCII, at most 8 KiB). Errors wrap ErrInvalidSyntax.
func ParseURI(raw string) (syntax.URI, error) {
	u, err := syntax.ParseURI(raw)
	if err != nil {
		return "", invalid("URI", err)
	}
	return u, nil
}

// ParseCID checks the Lexicon cid string format, which is deliberately loose
// (8–256 multibase characters, no CIDv0): it does not decode the CID. Use
// DecodeCID where the value must name a block. Errors wrap ErrInvalidSyntax.
func ParseCID(raw string) (syntax.CID, error) {
	c, err := syntax.ParseCID(raw)
	if err != nil {
		return "", invalid("CID", err)
	}
	// indigo rejects only the "Qmb" prefix of its test vector, but every
	// CIDv0 is "Qm" + base58, and multibase reserves 'Q' so that no CIDv1
	// string starts that way.
	if strings.HasPrefix(raw, "Qm") {
		return "", invalid("CID", errCIDv0)
	}
	return c, nil
}

// errCIDv0 is the cause for a CIDv0 string, which atproto does not allow.
var errCIDv0 = errors.New("CIDv0 not allowed")

// DecodeCID parses a CID that must name a block (a swapCommit, a blob's
// cid): it passes ParseCID, decodes with go-cid in any multibase, and is
// CIDv1. go-cid alone would accept CIDv0 ("Qm…"), which atproto forbids.
// Compare the returned cid.Cid values, not strings, since one CID has a
// spelling per multibase. Errors wrap ErrInvalidSyntax.
func DecodeCID(raw string) (cid.Cid, error) {
	if _, err := ParseCID(raw); err != nil {
		return cid.Undef, err
	}
	c, err := cid.Decode(raw)
	if err != nil {
		return cid.Undef, invalid("CID", err)
	}
	if c.Version() != 1 {
		// Unreachable while ParseCID rejects "Qm…", the only CIDv0 string
		// form; kept so the guarantee does not rest on a prefix test.
		return cid.Undef, invalid("CID", errCIDv0)
	}
	return c, nil
}

// invalid wraps a format parser's error with ErrInvalidSyntax and the name
// of the format.
func invalid(format string, err error) error {
	return fmt.Errorf("parse %s: %w: %w", format, ErrInvalidSyntax, err)
}

// maxLanguageLen caps language tags as indigo does; RFC 5646 sets no limit,
// and real tags are far shorter.
const maxLanguageLen = 128

// grandfathered are the RFC 5646 §2.2.8 tags that predate its grammar,
// compared case-insensitively. Some ("i-default", "sgn-BE-NL") do not match
// the langtag production at all.
var grandfathered = []string{
	// irregular
	"en-GB-oed", "i-ami", "i-bnn", "i-default", "i-enochian", "i-hak",
	"i-klingon", "i-lux", "i-mingo", "i-navajo", "i-pwn", "i-tao", "i-tay",
	"i-tsu", "sgn-BE-FR", "sgn-BE-NL", "sgn-CH-DE",
	// regular
	"art-lojban", "cel-gaulish", "no-bok", "no-nyn", "zh-guoyu", "zh-hakka",
	"zh-min", "zh-min-nan", "zh-xiang",
}

// errLanguage is the cause checkLanguage reports; its callers wrap it.
var errLanguage = errors.New("not a valid BCP 47 language tag")

// checkLanguage reports whether raw is a well-formed RFC 5646 language tag
// (§2.1 grammar) that is also valid in the two ways that need no registry:
// no variant subtag and no extension singleton appears twice, compared
// case-insensitively (§2.2.5, §2.2.6). Two atproto rules, which the interop
// vectors require ("JA" and "jaja" are invalid), make it stricter than the
// RFC: the primary language subtag is 2–3 lower-case letters (4–8 letter
// ones are reserved or unregistered), while later subtags and the
// private-use "x" may be any case ("X-fr-CH" is valid).
func checkLanguage(raw string) error {
	if raw == "" || len(raw) > maxLanguageLen {
		return errLanguage
	}
	tags := strings.Split(raw, "-")
	for _, s := range tags {
		if len(s) < 1 || len(s) > 8 || !isAlnum(s) {
			return errLanguage
		}
	}
	// Only now that raw is known to be ASCII: strings.EqualFold folds
	// Unicode, so "i-\u212Alingon" (Kelvin sign) would equal "i-klingon".
	for _, g := range grandfathered {
		if strings.EqualFold(raw, g) && isLower(tags[0]) {
			return nil
		}
	}
	if strings.EqualFold(tags[0], "x") {
		return checkPrivateUse(tags[1:])
	}
	if n := len(tags[0]); n < 2 || n > 3 || !isAlpha(tags[0]) || !isLower(tags[0]) {
		return errLanguage
	}
	i := 1
	// extlang: up to three 3-letter subtags.
	for j := 0; j < 3 && i < len(tags) && len(tags[i]) == 3 && isAlpha(tags[i]); j++ {
		i++
	}
	if i < len(tags) && len(tags[i]) == 4 && isAlpha(tags[i]) { // script
		i++
	}
	if i < len(tags) && (len(tags[i]) == 2 && isAlpha(tags[i]) || len(tags[i]) == 3 && isDigit(tags[i])) { // region
		i++
	}
	variants := map[string]bool{}
	for ; i < len(tags) && isVariant(tags[i]); i++ {
		v := strings.ToLower(tags[i])
		if variants[v] {
			return errLanguage
		}
		variants[v] = true
	}
	singletons := map[string]bool{}
	for i < len(tags) && len(tags[i]) == 1 && !strings.EqualFold(tags[i], "x") {
		s := strings.ToLower(tags[i])
		if singletons[s] {
			return errLanguage
		}
		singletons[s] = true
		i++
		n := 0
		for i < len(tags) && len(tags[i]) >= 2 {
			i++
			n++
		}
		if n == 0 {
			return errLanguage // a singleton needs at least one subtag
		}
	}
	if i < len(tags) && strings.EqualFold(tags[i], "x") {
		return checkPrivateUse(tags[i+1:])
	}
	if i != len(tags) {
		return errLanguage
	}
	return nil
}

// checkPrivateUse checks the subtags after an "x" singleton, each already
// known to be 1–8 alphanumerics: there must be at least one.
func checkPrivateUse(tags []string) error {
	if len(tags) == 0 {
		return errLanguage
	}
	return nil
}

// isVariant reports whether s matches RFC 5646 variant: 5–8 alphanumerics,
// or a digit and three alphanumerics.
func isVariant(s string) bool {
	return len(s) >= 5 && len(s) <= 8 || len(s) == 4 && isDigit(s[:1])
}

func isAlnum(s string) bool {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func isAlpha(s string) bool {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func isDigit(s string) bool {
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func isLower(s string) bool {
	return strings.ToLower(s) == s
}
