package repo

import (
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

var syntaxSeeds = []string{
	"app.bsky.feed.post", "com.atproto.server.createSession", "com.example.fooBar", "a.b.c",
	"a-0.b-1.c", "a.b", "a", "", ".", "..", "a..b.c", "a.b.c.", ".a.b.c", "1a.b.c", "a.1b.c",
	"a.b.1c", "a.b-.c", "a.-b.c", "a.b.c-d", "-a.b.c", "com.example.x" + strings.Repeat("y", 60),
	strings.Repeat("a", 63) + ".b.c", strings.Repeat("a", 64) + ".b.c", "a.b.c\n", "a.b.ć",
	"3jzfcijpj2z2a", "self", "a:b~c_d.e-f", "a/b", "a b", strings.Repeat("k", 512),
	strings.Repeat("k", 513), "%41",
}

func TestSyntaxMatchesIndigo(t *testing.T) {
	for _, s := range syntaxSeeds {
		checkSyntax(t, s)
	}
	checkSyntax(t, strings.Repeat("ab.", 105)+"c") // 316 characters
	checkSyntax(t, strings.Repeat("ab.", 106)+"c") // 319
}

func FuzzSyntaxMatchesIndigo(f *testing.F) {
	for _, s := range syntaxSeeds {
		f.Add(s)
	}
	f.Fuzz(checkSyntax)
}

func checkSyntax(t *testing.T, s string) {
	_, err := syntax.ParseNSID(s)
	if got := ValidNSID(s); got != (err == nil) {
		t.Errorf("ValidNSID(%q) = %v, syntax.ParseNSID says %v", s, got, err)
	}
	_, err = syntax.ParseRecordKey(s)
	if got := ValidRecordKey(s); got != (err == nil) {
		t.Errorf("ValidRecordKey(%q) = %v, syntax.ParseRecordKey says %v", s, got, err)
	}
}
