package appview

import (
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/repo"
)

// FuzzIsDID checks isDID against indigo's parser, which it replaces on the hot path.
func FuzzIsDID(f *testing.F) {
	for _, s := range []string{"did:plc:abc123", "did:web:example.com", "did:web:localhost%3A2583", "did:plc:",
		"did:PLC:abc", "did:plc:abc:", "did:plc:abc%", "did::abc", "did:plc:a/b", "DID:plc:abc", "did:key:z6Mk:x.y_z-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := syntax.ParseDID(s)
		if got, want := isDID(s), err == nil; got != want {
			t.Errorf("isDID(%q) = %v, syntax.ParseDID says %v", s, got, want)
		}
	})
}

// FuzzValidATURI checks validATURI against indigo's parser, which it replaces on the hot
// path for URIs with a DID authority.
func FuzzValidATURI(f *testing.F) {
	for _, s := range []string{"at://did:plc:abc/app.bsky.feed.post/3k", "at://did:plc:abc", "at://did:plc:abc/",
		"at://did:plc:abc/app.bsky.feed.post", "at://did:plc:abc/app.bsky.feed.post/", "at://alice.test/app.bsky.feed.post/3k",
		"at://did:plc:abc/app.bsky/3k", "at://did:plc:abc/app.bsky.feed.post/3k/x", "at://did:plc:abc/app.bsky.feed.post/..",
		"at://did:web:localhost%3A2583/app.bsky.feed.like/a:b", "at://did:plc:abc/app.bsky.feed.post/3k#frag",
		"at://did:plc:abc/app.bsky.feed.post/3k?q", "AT://did:plc:abc", "at:///app.bsky.feed.post/3k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := syntax.ParseATURI(s)
		if got, want := validATURI(s), err == nil; got != want {
			t.Errorf("validATURI(%q) = %v, syntax.ParseATURI says %v", s, got, err)
		}
	})
}

func TestURIAuthority(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, uri, want string }{
		{"record", "at://did:plc:abc/app.bsky.feed.post/3k", "did:plc:abc"},
		{"repo", "at://did:web:example.com", "did:web:example.com"},
		{"handle", "at://alice.test/app.bsky.feed.post/3k", ""},
		{"not at", "https://did:plc:abc/x", ""},
		{"bad did", "at://did:plc:/x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := uriAuthority(tt.uri); got != tt.want {
				t.Errorf("uriAuthority(%q) = %q, want %q", tt.uri, got, tt.want)
			}
		})
	}
}

// TestRecordJSONMatchesRepo checks that the indexer's JSON of a parsed record is byte for
// byte what repo.RecordJSON (getRecord) renders from its CBOR.
func TestRecordJSONMatchesRepo(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, json string }{
		{"post", `{"$type":"app.bsky.feed.post","text":"a <b> & c \u00e9 \ud83d\ude00","createdAt":"2026-05-01T00:00:00.000Z","langs":["en","fr"]}`},
		{"reply with facets", `{"$type":"app.bsky.feed.post","text":"hi @b","createdAt":"2026-05-01T00:00:00Z",
			"reply":{"root":{"uri":"at://did:plc:a/app.bsky.feed.post/3k","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
				"parent":{"uri":"at://did:plc:a/app.bsky.feed.post/3k","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}},
			"facets":[{"index":{"byteStart":3,"byteEnd":5},"features":[{"$type":"app.bsky.richtext.facet#mention","did":"did:plc:b"}]}]}`},
		{"blob, link and bytes", `{"$type":"app.bsky.feed.post","text":"","createdAt":"2026-05-01T00:00:00Z",
			"embed":{"$type":"app.bsky.embed.images","images":[{"alt":"x","image":{"$type":"blob","ref":{"$link":"bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"},"mimeType":"image/png","size":1234}}]},
			"extra":{"link":{"$link":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},"raw":{"$bytes":"aGVsbG8"},"n":-7,"ok":true,"none":null}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := repo.RecordFromJSON([]byte(tt.json))
			if err != nil {
				t.Fatalf("RecordFromJSON = %v", err)
			}
			want, err := repo.RecordJSON(rec.CBOR)
			if err != nil {
				t.Fatalf("repo.RecordJSON = %v", err)
			}
			got, err := recordJSON(rec)
			if err != nil {
				t.Fatalf("recordJSON = %v", err)
			}
			if string(got) != string(want) {
				t.Errorf("recordJSON = %s\nrepo.RecordJSON = %s", got, want)
			}
		})
	}
}
