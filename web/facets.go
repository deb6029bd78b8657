package web

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Rich text (app.bsky.richtext.facet): a post's text is plain, and mentions and links are
// facets that point at byte ranges of its UTF-8 encoding.
// https://docs.bsky.app/docs/advanced-guides/post-richtext

var (
	// mentionRE finds @handle after the start of the text or a space or opening bracket,
	// so that an email address is not a mention.
	mentionRE = regexp.MustCompile(`(?:^|[\s(\[])(@[a-zA-Z0-9][a-zA-Z0-9.-]*[a-zA-Z0-9])`)
	// linkRE finds http(s) URLs; trailing punctuation is trimmed afterwards.
	linkRE = regexp.MustCompile(`(?:^|[\s(\[])(https?://[^\s<>"]+)`)
)

// span is a facet found in text: bytes [Start, End) mention a handle or link a URL.
type span struct {
	Start, End int
	Handle     string // a mention, without the @
	URI        string // a link
}

// findSpans returns the mentions and links of text in order. Handles are syntactically
// valid; whether they resolve is for the caller.
func findSpans(text string) []span {
	var out []span
	for _, m := range mentionRE.FindAllStringSubmatchIndex(text, -1) {
		h := text[m[2]+1 : m[3]]
		if _, err := syntax.ParseHandle(h); err != nil {
			continue
		}
		out = append(out, span{Start: m[2], End: m[2] + 1 + len(h), Handle: h})
	}
	for _, m := range linkRE.FindAllStringSubmatchIndex(text, -1) {
		u := strings.TrimRight(text[m[2]:m[3]], ".,;:!?'\"")
		// A closing bracket belongs to the URL only when the URL opened one, as in
		// Wikipedia links.
		for strings.HasSuffix(u, ")") && strings.Count(u, "(") < strings.Count(u, ")") {
			u = u[:len(u)-1]
		}
		if p, err := url.Parse(u); err != nil || p.Host == "" {
			continue
		}
		out = append(out, span{Start: m[2], End: m[2] + len(u), URI: u})
	}
	slices.SortFunc(out, func(a, b span) int { return a.Start - b.Start })
	return out
}

// facetsFor turns the spans of a post into facet records, mentions carrying the DID
// resolve found (unresolved mentions stay plain text).
func facetsFor(spans []span, resolve func(handle string) string) []map[string]any {
	var out []map[string]any
	for _, sp := range spans {
		var feature map[string]any
		switch {
		case sp.Handle != "":
			did := resolve(sp.Handle)
			if did == "" {
				continue
			}
			feature = map[string]any{"$type": "app.bsky.richtext.facet#mention", "did": did}
		default:
			feature = map[string]any{"$type": "app.bsky.richtext.facet#link", "uri": sp.URI}
		}
		out = append(out, map[string]any{
			"$type":    "app.bsky.richtext.facet",
			"index":    map[string]any{"byteStart": sp.Start, "byteEnd": sp.End},
			"features": []any{feature},
		})
	}
	return out
}

type facetJSON struct {
	Index struct {
		ByteStart int `json:"byteStart"`
		ByteEnd   int `json:"byteEnd"`
	} `json:"index"`
	Features []struct {
		Type string `json:"$type"`
		DID  string `json:"did"`
		URI  string `json:"uri"`
		Tag  string `json:"tag"`
	} `json:"features"`
}

// Segment is a run of a post's text, linked when Href is set.
type Segment struct {
	Text string
	Href string
}

// segments splits text by its facets for rendering. Facets come from any client, so a
// range that is out of bounds, overlaps an earlier one or cuts a UTF-8 sequence is
// ignored, and only http(s) links become links.
func segments(text string, facets []facetJSON) []Segment {
	slices.SortStableFunc(facets, func(a, b facetJSON) int { return a.Index.ByteStart - b.Index.ByteStart })
	var out []Segment
	pos := 0
	for _, f := range facets {
		s, e := f.Index.ByteStart, f.Index.ByteEnd
		if s < pos || e <= s || e > len(text) || !boundary(text, s) || !boundary(text, e) || len(f.Features) == 0 {
			continue
		}
		href := featureHref(f.Features[0].Type, f.Features[0].DID, f.Features[0].URI, f.Features[0].Tag)
		if href == "" {
			continue
		}
		if s > pos {
			out = append(out, Segment{Text: text[pos:s]})
		}
		out = append(out, Segment{Text: text[s:e], Href: href})
		pos = e
	}
	if pos < len(text) {
		out = append(out, Segment{Text: text[pos:]})
	}
	return out
}

func boundary(text string, i int) bool {
	return i == len(text) || utf8.RuneStart(text[i])
}

func featureHref(typ, did, uri, tag string) string {
	switch typ {
	case "app.bsky.richtext.facet#mention":
		if _, err := syntax.ParseDID(did); err == nil {
			return "/profile/" + did
		}
	case "app.bsky.richtext.facet#link":
		if u, err := url.Parse(uri); err == nil && (u.Scheme == "https" || u.Scheme == "http") {
			return u.String()
		}
	case "app.bsky.richtext.facet#tag":
		if tag != "" {
			return "/search?q=" + url.QueryEscape("#"+tag)
		}
	}
	return ""
}
