package xrpc

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/aerie-social/aerie/node/interop"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// vectorFile is one syntax/*.txt list and whether its vectors are valid.
type vectorFile struct {
	name  string // file name without ".txt", e.g. "handle_syntax_valid"
	valid bool
}

// syntaxFormat ties a vector set to indigo's parser and to ours.
type syntaxFormat struct {
	name   string
	files  []vectorFile
	indigo func(string) error
	ours   func(string) error
}

// syntaxFormats lists every vector file in node/interop/testdata/syntax.
// TestSyntaxVectorFilesCovered checks that none is left out.
var syntaxFormats = []syntaxFormat{
	{
		name:   "atidentifier",
		files:  pair("atidentifier"),
		indigo: func(s string) error { _, err := syntax.ParseAtIdentifier(s); return err },
		ours:   func(s string) error { _, err := ParseATIdentifier(s); return err },
	},
	{
		name:   "aturi",
		files:  pair("aturi"),
		indigo: func(s string) error { _, err := syntax.ParseATURI(s); return err },
		ours:   func(s string) error { _, err := ParseATURI(s); return err },
	},
	{
		name:   "cid",
		files:  pair("cid"),
		indigo: func(s string) error { _, err := syntax.ParseCID(s); return err },
		ours:   func(s string) error { _, err := ParseCID(s); return err },
	},
	{
		// The valid file must also convert to a real instant, so indigo is
		// checked through ParseDatetimeTime and ours through time.Parse.
		name:   "datetime",
		files:  append(pair("datetime"), vectorFile{"datetime_parse_invalid", false}),
		indigo: func(s string) error { _, err := syntax.ParseDatetimeTime(s); return err },
		ours: func(s string) error {
			d, err := ParseDatetime(s)
			if err != nil {
				return err
			}
			_, err = time.Parse(time.RFC3339Nano, d.String())
			return err
		},
	},
	{
		name:   "did",
		files:  pair("did"),
		indigo: func(s string) error { _, err := syntax.ParseDID(s); return err },
		ours:   func(s string) error { _, err := ParseDID(s); return err },
	},
	{
		name:   "handle",
		files:  pair("handle"),
		indigo: func(s string) error { _, err := syntax.ParseHandle(s); return err },
		ours:   func(s string) error { _, err := ParseHandle(s); return err },
	},
	{
		name:   "language",
		files:  append(pair("language"), vectorFile{"language_parse_invalid", false}),
		indigo: func(s string) error { _, err := syntax.ParseLanguage(s); return err },
		ours:   func(s string) error { _, err := ParseLanguage(s); return err },
	},
	{
		name:   "nsid",
		files:  pair("nsid"),
		indigo: func(s string) error { _, err := syntax.ParseNSID(s); return err },
		ours:   func(s string) error { _, err := ParseNSID(s); return err },
	},
	{
		name:   "recordkey",
		files:  pair("recordkey"),
		indigo: func(s string) error { _, err := syntax.ParseRecordKey(s); return err },
		ours:   func(s string) error { _, err := ParseRecordKey(s); return err },
	},
	{
		name:   "tid",
		files:  pair("tid"),
		indigo: func(s string) error { _, err := syntax.ParseTID(s); return err },
		ours:   func(s string) error { _, err := ParseTID(s); return err },
	},
	{
		name:   "uri",
		files:  pair("uri"),
		indigo: func(s string) error { _, err := syntax.ParseURI(s); return err },
		ours:   func(s string) error { _, err := ParseURI(s); return err },
	},
}

func pair(format string) []vectorFile {
	return []vectorFile{{format + "_syntax_valid", true}, {format + "_syntax_invalid", false}}
}

// indigoDisagreement is a vector on which the pinned indigo gives the wrong
// answer, so our Parse* adds its own check.
type indigoDisagreement struct {
	file   string
	vector string
}

// indigoDisagreements lists every vector the pinned indigo
// (v0.0.0-20260605210604-af2fec94f34c) gets wrong. TestIndigoSyntaxVectors
// asserts indigo is still wrong on each, so an indigo upgrade that fixes one
// fails the test and the entry (and perhaps our extra check) can go.
var indigoDisagreements = map[indigoDisagreement]string{
	// indigo's language regex is ^(i|[a-z]{2,3})(-[a-zA-Z0-9]+)*$. It wants
	// a 2–3 letter primary subtag, so it rejects every tag that is all
	// private use ("x-…" or, RFC 5646 §2.1.1 being case-insensitive,
	// "X-…"). indigo's own copy of this file predates the vector.
	{"language_syntax_valid", "X-fr-CH"}: "private-use tag with upper-case X",
	// The regex checks only the shape of each subtag, not RFC 5646 §2.2.5
	// and §2.2.6 (a variant or an extension singleton may not repeat,
	// case-insensitively); indigo does not use this file at all.
	{"language_parse_invalid", "de-DE-1901-1901"}:               "repeated variant",
	{"language_parse_invalid", "en-rozaj-ROZAJ"}:                "repeated variant, other case",
	{"language_parse_invalid", "en-a-foo-a-bar"}:                "repeated extension singleton",
	{"language_parse_invalid", "en-u-co-phonebk-U-ca-buddhist"}: "repeated extension singleton, other case",
}

// TestIndigoSyntaxVectors runs indigo's parsers over every vector: each
// must agree with the vector unless it is listed in indigoDisagreements,
// and then it must still disagree.
func TestIndigoSyntaxVectors(t *testing.T) {
	t.Parallel()
	seen := make(map[indigoDisagreement]bool)
	for _, tt := range syntaxFormats {
		for _, f := range tt.files {
			for _, v := range interop.Lines(t, "syntax/"+f.name+".txt") {
				key := indigoDisagreement{f.name, v}
				accepted := tt.indigo(v) == nil
				why, known := indigoDisagreements[key]
				switch {
				case known && accepted == f.valid:
					t.Errorf("indigo %s(%q) now agrees with %s (accepted = %t); remove %q from indigoDisagreements", tt.name, v, f.name, accepted, why)
				case !known && accepted != f.valid:
					t.Errorf("indigo %s(%q) accepted = %t, want %t (%s); fix or list in indigoDisagreements", tt.name, v, accepted, f.valid, f.name)
				}
				seen[key] = true
			}
		}
	}
	for key := range indigoDisagreements {
		if !seen[key] {
			t.Errorf("indigoDisagreements entry %+v names no vector", key)
		}
	}
}

// TestParseSyntaxVectors checks that our Parse* agrees with every vector.
func TestParseSyntaxVectors(t *testing.T) {
	t.Parallel()
	for _, tt := range syntaxFormats {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, f := range tt.files {
				for _, v := range interop.Lines(t, "syntax/"+f.name+".txt") {
					err := tt.ours(v)
					if f.valid && err != nil {
						t.Errorf("Parse %s(%q) = %v, want valid (%s)", tt.name, v, err, f.name)
					}
					if !f.valid && err == nil {
						t.Errorf("Parse %s(%q) = nil error, want invalid (%s)", tt.name, v, f.name)
					}
					if err != nil && !errors.Is(err, ErrInvalidSyntax) {
						t.Errorf("Parse %s(%q) = %v, want it to wrap ErrInvalidSyntax", tt.name, v, err)
					}
				}
			}
		})
	}
}

// TestSyntaxVectorFilesCovered fails when a syntax vector file is added
// that syntaxFormats does not run.
func TestSyntaxVectorFilesCovered(t *testing.T) {
	t.Parallel()
	covered := make(map[string]bool)
	for _, tt := range syntaxFormats {
		for _, f := range tt.files {
			covered[f.name+".txt"] = true
		}
	}
	entries, err := fs.ReadDir(interop.FS(), "syntax")
	if err != nil {
		t.Fatalf("fs.ReadDir(interop.FS(), %q): %v", "syntax", err)
	}
	for _, e := range entries {
		if !covered[e.Name()] {
			t.Errorf("syntax/%s is not in syntaxFormats", e.Name())
		}
	}
}

// TestParseExtraCases covers what the vectors do not: the extra TIDs in
// the TypeScript monorepo's copy of the vectors (testdata/README.md), the
// edges of our language check, and CIDv0 strings other than the vector's.
func TestParseExtraCases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		parse func(string) error
		in    string
		valid bool
	}{
		{"TID first letter a", tidErr, "a222222222222", true},
		{"TID first letter j", tidErr, "j222222222222", true},
		{"TID max", tidErr, "azzzzzzzzzzzz", true},
		{"TID upper case", tidErr, "3JZFCIJPJ2Z2A", false},
		{"TID short", tidErr, "222", false},
		{"TID first letter k", tidErr, "k222222222222", false},

		{"language extlang and region", langErr, "zh-yue-HK", true},
		{"language private use suffix", langErr, "en-US-x-twain", true},
		{"language private use only", langErr, "x-whatever", true},
		{"language private use repeats", langErr, "en-x-a-a", true},
		{"language singleton then private a", langErr, "en-a-bbb-x-a-ccc", true},
		{"language grandfathered irregular", langErr, "en-GB-oed", true},
		{"language grandfathered other case", langErr, "sgn-be-nl", true},
		{"language digit variant", langErr, "de-1996", true},
		{"language region then two letters", langErr, "de-419-DE", false},
		{"language singleton without subtag", langErr, "en-a", false},
		{"language singleton before private use", langErr, "en-a-x-foo", false},
		{"language private use without subtag", langErr, "en-x", false},
		{"language x alone", langErr, "x", false},
		{"language empty subtag", langErr, "en--US", false},
		{"language leading hyphen", langErr, "-en", false},
		{"language upper-case primary", langErr, "EN-us", false},
		{"language upper-case grandfathered i", langErr, "I-default", false},
		{"language four-letter primary", langErr, "jaja-x-foo", false},
		{"language two scripts", langErr, "en-Latn-Cyrl", false},
		{"language nine-char subtag", langErr, "en-abcdefghi", false},
		{"language non-ASCII", langErr, "en-ü", false},
		{"language Kelvin sign folds to k", langErr, "i-\u212alingon", false},
		{"language long s folds to s", langErr, "\u017fgn-BE-NL", false},
		{"language too long", langErr, "en" + strings.Repeat("-abcdefgh", 14), false},
		{"language empty", langErr, "", false},

		{"CIDv0 other than Qmb", cidErr, "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.parse(tt.in)
			if (err == nil) != tt.valid {
				t.Errorf("parse(%q) = %v, want valid %t", tt.in, err, tt.valid)
			}
			if err != nil && !errors.Is(err, ErrInvalidSyntax) {
				t.Errorf("parse(%q) = %v, want it to wrap ErrInvalidSyntax", tt.in, err)
			}
		})
	}
}

func tidErr(s string) error  { _, err := ParseTID(s); return err }
func langErr(s string) error { _, err := ParseLanguage(s); return err }
func cidErr(s string) error  { _, err := ParseCID(s); return err }

// TestIndigoAcceptsCIDv0 records that indigo's ParseCID lets a CIDv0 through
// unless it starts "Qmb", which is why ParseCID checks "Qm" itself. If this
// fails, indigo has fixed it and our check may go.
func TestIndigoAcceptsCIDv0(t *testing.T) {
	t.Parallel()
	const v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
	if _, err := syntax.ParseCID(v0); err != nil {
		t.Errorf("syntax.ParseCID(%q) = %v, want nil (known indigo gap)", v0, err)
	}
}

func TestParseNormalizes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		parse func(string) (string, error)
		in    string
		want  string
	}{
		{"handle lower-cased", str(ParseHandle), "XX.LCS.MIT.EDU", "xx.lcs.mit.edu"},
		{"at-identifier handle lower-cased", str(ParseATIdentifier), "Alice.Example.COM", "alice.example.com"},
		{"at-identifier DID kept", str(ParseATIdentifier), "did:web:Example.com", "did:web:Example.com"},
		{"DID kept", str(ParseDID), "did:method:VAL%BB", "did:method:VAL%BB"},
		{"NSID kept", str(ParseNSID), "Com.Example.fooBar", "Com.Example.fooBar"},
		{"AT-URI kept", str(ParseATURI), "at://Alice.Example.COM/Com.Example.foo/Abc", "at://Alice.Example.COM/Com.Example.foo/Abc"},
		{"language kept", str(ParseLanguage), "X-fr-CH", "X-fr-CH"},
		{"datetime kept", str(ParseDatetime), "1985-04-12T23:20:50.1+01:00", "1985-04-12T23:20:50.1+01:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.parse(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("parse(%q) = %q, %v, want %q, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

// str adapts a Parse* returning a string type to one returning string.
func str[T ~string](parse func(string) (T, error)) func(string) (string, error) {
	return func(s string) (string, error) {
		v, err := parse(s)
		return string(v), err
	}
}

func TestDecodeCID(t *testing.T) {
	t.Parallel()
	// These valid cid-format vectors are contrived strings that pass the
	// loose syntax check but are not CIDs go-cid can decode, so DecodeCID
	// rejects them by design.
	undecodable := map[string]string{
		"mBcDxtdWx0aWhhc2g+":                 "base64 with a stray '+' tail",
		"z7x3CtScH765HvShXT":                 "truncated multihash",
		"7134036155352661643226414134664076": "base8 multibase, which go-cid does not support",
	}
	seen := 0
	for _, v := range interop.Lines(t, "syntax/cid_syntax_valid.txt") {
		c, err := DecodeCID(v)
		if _, skip := undecodable[v]; skip {
			seen++
			if err == nil {
				t.Errorf("DecodeCID(%q) = %v, want error (listed as undecodable)", v, c)
			}
			continue
		}
		if err != nil {
			t.Errorf("DecodeCID(%q) = %v, want valid", v, err)
			continue
		}
		if c.Version() != 1 {
			t.Errorf("DecodeCID(%q).Version() = %d, want 1", v, c.Version())
		}
		again, err := DecodeCID(c.String())
		if err != nil || !again.Equals(c) {
			t.Errorf("DecodeCID(%q) = %v, %v, want %v", c.String(), again, err, c)
		}
	}
	if seen != len(undecodable) {
		t.Errorf("found %d of the %d undecodable vectors in cid_syntax_valid.txt", seen, len(undecodable))
	}
	invalid := append(interop.Lines(t, "syntax/cid_syntax_invalid.txt"), "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")
	for _, v := range invalid {
		if c, err := DecodeCID(v); err == nil || !errors.Is(err, ErrInvalidSyntax) {
			t.Errorf("DecodeCID(%q) = %v, %v, want ErrInvalidSyntax", v, c, err)
		}
	}
}

// seedSyntax adds every vector of a format's valid and invalid lists.
func seedSyntax(f *testing.F, format string) {
	f.Helper()
	for _, vf := range pair(format) {
		for _, v := range interop.Lines(f, "syntax/"+vf.name+".txt") {
			f.Add(v)
		}
	}
}

func FuzzParseHandle(f *testing.F) {
	seedSyntax(f, "handle")
	f.Fuzz(func(t *testing.T, in string) {
		h, err := ParseHandle(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidSyntax) {
				t.Fatalf("ParseHandle(%q) = %v, want it to wrap ErrInvalidSyntax", in, err)
			}
			return
		}
		if h.String() != strings.ToLower(in) {
			t.Fatalf("ParseHandle(%q) = %q, want the input lower-cased", in, h)
		}
		again, err := ParseHandle(h.String())
		if err != nil || again != h {
			t.Fatalf("ParseHandle(%q) = %q, %v, want %q, nil", h, again, err, h)
		}
	})
}

func FuzzParseDID(f *testing.F) {
	seedSyntax(f, "did")
	f.Fuzz(func(t *testing.T, in string) {
		d, err := ParseDID(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidSyntax) {
				t.Fatalf("ParseDID(%q) = %v, want it to wrap ErrInvalidSyntax", in, err)
			}
			return
		}
		if d.String() != in {
			t.Fatalf("ParseDID(%q) = %q, want it unchanged", in, d)
		}
		if d.Method() == "" || d.Identifier() == "" {
			t.Fatalf("ParseDID(%q): method %q, identifier %q, want both", in, d.Method(), d.Identifier())
		}
		again, err := ParseDID(d.String())
		if err != nil || again != d {
			t.Fatalf("ParseDID(%q) = %q, %v, want %q, nil", d, again, err, d)
		}
	})
}

func FuzzParseATURI(f *testing.F) {
	seedSyntax(f, "aturi")
	f.Fuzz(func(t *testing.T, in string) {
		u, err := ParseATURI(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidSyntax) {
				t.Fatalf("ParseATURI(%q) = %v, want it to wrap ErrInvalidSyntax", in, err)
			}
			return
		}
		if u.String() != in {
			t.Fatalf("ParseATURI(%q) = %q, want it unchanged", in, u)
		}
		if u.Authority() == "" {
			t.Fatalf("ParseATURI(%q).Authority() is empty", in)
		}
		again, err := ParseATURI(u.String())
		if err != nil || again != u {
			t.Fatalf("ParseATURI(%q) = %q, %v, want %q, nil", u, again, err, u)
		}
	})
}

// FuzzParseLanguage exercises our own RFC 5646 check, the one parser here
// that is not indigo's.
func FuzzParseLanguage(f *testing.F) {
	for _, name := range []string{"language_syntax_valid", "language_syntax_invalid", "language_parse_invalid"} {
		for _, v := range interop.Lines(f, "syntax/"+name+".txt") {
			f.Add(v)
		}
	}
	f.Fuzz(func(t *testing.T, in string) {
		l, err := ParseLanguage(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidSyntax) {
				t.Fatalf("ParseLanguage(%q) = %v, want it to wrap ErrInvalidSyntax", in, err)
			}
			return
		}
		if l.String() != in {
			t.Fatalf("ParseLanguage(%q) = %q, want it unchanged", in, l)
		}
		if !isAlnum(strings.ReplaceAll(in, "-", "")) {
			t.Fatalf("ParseLanguage(%q) accepted a character other than ASCII letters, digits and '-'", in)
		}
	})
}
