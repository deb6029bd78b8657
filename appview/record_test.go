package appview

import (
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"
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
