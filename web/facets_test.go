package web

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFindSpans(t *testing.T) {
	for _, tt := range []struct {
		name string
		text string
		want []span
	}{
		{"mention", "hi @alice.test!", []span{{Start: 3, End: 14, Handle: "alice.test"}}},
		{"mention after multibyte text", "héllo 🎉 @bob.test", []span{{Start: 12, End: 21, Handle: "bob.test"}}},
		{"email is no mention", "write to me@alice.test", nil},
		{"handle without a dot", "@alice is here", nil},
		{"link with trailing dot", "see https://example.com/a.", []span{{Start: 4, End: 25, URI: "https://example.com/a"}}},
		{"link in brackets", "(https://en.wikipedia.org/wiki/Go_(game))", []span{{Start: 1, End: 40, URI: "https://en.wikipedia.org/wiki/Go_(game)"}}},
		{"both in order", "https://a.example @c.test", []span{{Start: 0, End: 17, URI: "https://a.example"}, {Start: 18, End: 25, Handle: "c.test"}}},
		{"no scheme", "example.com", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, findSpans(tt.text)); diff != "" {
				t.Errorf("findSpans(%q) (-want +got):\n%s", tt.text, diff)
			}
		})
	}
}

func TestSegments(t *testing.T) {
	facet := func(start, end int, typ, did, uri string) facetJSON {
		var f facetJSON
		f.Index.ByteStart, f.Index.ByteEnd = start, end
		f.Features = append(f.Features, struct {
			Type string `json:"$type"`
			DID  string `json:"did"`
			URI  string `json:"uri"`
			Tag  string `json:"tag"`
		}{Type: typ, DID: did, URI: uri})
		return f
	}
	const mention, link = "app.bsky.richtext.facet#mention", "app.bsky.richtext.facet#link"
	for _, tt := range []struct {
		name   string
		text   string
		facets []facetJSON
		want   []Segment
	}{
		{"plain", "hello", nil, []Segment{{Text: "hello"}}},
		{"mention and link", "hi @a.test https://x.example", []facetJSON{
			facet(11, 28, link, "", "https://x.example"), facet(3, 10, mention, "did:plc:abc", ""),
		}, []Segment{{Text: "hi "}, {Text: "@a.test", Href: "/profile/did:plc:abc"}, {Text: " "}, {Text: "https://x.example", Href: "https://x.example"}}},
		{"javascript link ignored", "click", []facetJSON{facet(0, 5, link, "", "javascript:alert(1)")}, []Segment{{Text: "click"}}},
		{"out of range ignored", "short", []facetJSON{facet(2, 50, link, "", "https://x.example")}, []Segment{{Text: "short"}}},
		{"cut rune ignored", "é!", []facetJSON{facet(1, 3, link, "", "https://x.example")}, []Segment{{Text: "é!"}}},
		{"overlap ignored", "abcdef", []facetJSON{facet(0, 4, link, "", "https://x.example"), facet(2, 6, link, "", "https://y.example")},
			[]Segment{{Text: "abcd", Href: "https://x.example"}, {Text: "ef"}}},
		{"bad did ignored", "@x.test", []facetJSON{facet(0, 7, mention, "nope", "")}, []Segment{{Text: "@x.test"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, segments(tt.text, tt.facets)); diff != "" {
				t.Errorf("segments(%q) (-want +got):\n%s", tt.text, diff)
			}
		})
	}
}
