package node

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func testIssuer(now time.Time) *tokenIssuer {
	return &tokenIssuer{secret: []byte("0123456789abcdef0123456789abcdef"), serviceDID: "did:web:pds.example.com",
		now: func() time.Time { return now }}
}

func TestTokenTypesAreSeparate(t *testing.T) {
	t.Parallel()
	now := time.Now()
	ti := testIssuer(now)
	access, _ := ti.accessToken("did:plc:a", scopeAccess)
	refresh, _ := ti.refreshToken("did:plc:a", "jti1", now.Add(time.Hour))
	other := testIssuer(now)
	other.serviceDID = "did:web:elsewhere.example"
	foreign, _ := other.accessToken("did:plc:a", scopeAccess)
	otherKey := testIssuer(now)
	otherKey.secret = []byte("another secret of thirty-two by")
	forged, _ := otherKey.accessToken("did:plc:a", scopeAccess)

	tests := []struct {
		name    string
		token   string
		typ     string
		wantErr error
	}{
		{"access as access", access, typAccess, nil},
		{"refresh as refresh", refresh, typRefresh, nil},
		{"refresh as access", refresh, typAccess, errTokenInvalid},
		{"access as refresh", access, typRefresh, errTokenInvalid},
		{"other audience", foreign, typAccess, errTokenInvalid},
		{"other key", forged, typAccess, errTokenInvalid},
		{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJkaWQ6cGxjOmEifQ.", typAccess, errTokenInvalid},
	}
	for _, tt := range tests {
		_, err := ti.parse(tt.token, tt.typ)
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("%s: parse = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
	later := testIssuer(now.Add(accessTokenTTL + time.Second))
	if _, err := later.parse(access, typAccess); !errors.Is(err, errTokenExpired) {
		t.Errorf("expired access token: parse = %v, want errTokenExpired", err)
	}
}

// TestRememberedTokensStillExpire checks that a token accepted once is still refused
// once it expires, and as the other type, while parse serves it from memory.
func TestRememberedTokensStillExpire(t *testing.T) {
	t.Parallel()
	now := time.Now()
	ti := &tokenIssuer{secret: []byte("0123456789abcdef0123456789abcdef"), serviceDID: "did:web:pds.example.com",
		now: func() time.Time { return now }}
	access, _ := ti.accessToken("did:plc:a", scopeAccess)
	for range 2 {
		if c, err := ti.parse(access, typAccess); err != nil || c.Sub != "did:plc:a" {
			t.Fatalf("parse = %v, %v", c, err)
		}
	}
	if _, ok := ti.verified[access]; !ok {
		t.Fatal("an accepted token is not remembered")
	}
	if _, err := ti.parse(access, typRefresh); !errors.Is(err, errTokenInvalid) {
		t.Errorf("remembered access token as refresh: parse = %v, want errTokenInvalid", err)
	}
	now = now.Add(accessTokenTTL)
	if _, err := ti.parse(access, typAccess); !errors.Is(err, errTokenExpired) {
		t.Errorf("remembered token at its expiry: parse = %v, want errTokenExpired", err)
	}
}

// FuzzParseSessionToken feeds arbitrary strings to the token parser: it must never panic
// and must accept only tokens it signed.
func FuzzParseSessionToken(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	ti := testIssuer(now)
	access, _ := ti.accessToken("did:plc:a", scopeAccess)
	refresh, _ := ti.refreshToken("did:plc:a", "jti", now.Add(time.Hour))
	for _, s := range []string{access, refresh, "", "a.b.c", "....", access + "x", strings.Repeat("e", 500)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, typ := range []string{typAccess, typRefresh} {
			c, err := ti.parse(raw, typ)
			if err == nil && raw != access && raw != refresh && c.Sub == "" {
				t.Errorf("parse(%q) accepted a token without a subject", raw)
			}
		}
	})
}
