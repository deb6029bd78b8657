package node

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/auth"
	indigoid "github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/node/xrpc"
)

const uploadBlob = syntax.NSID("com.atproto.repo.uploadBlob")

// serviceToken asks base for a service token with the query q.
func serviceToken(t *testing.T, base, access string, q url.Values) string {
	t.Helper()
	status, body, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.server.getServiceAuth?"+q.Encode(), "", bearer(access))
	if status != 200 {
		t.Fatalf("getServiceAuth(%s) = %d %v", q.Encode(), status, body)
	}
	return body["token"].(string)
}

// xrpcErrorName returns the XRPC error name of err, or "".
func xrpcErrorName(err error) string {
	var xe *xrpc.Error
	if errors.As(err, &xe) {
		return xe.Name
	}
	return ""
}

func TestGetServiceAuthVerifiesWithIndigo(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	_, base := identityTestServer(t, n, &fakeDNS{})
	alice := createTestAccount(t, base, "alice.test")
	did, access := alice["did"].(string), alice["accessJwt"].(string)

	// indigo's validator is the oracle; it resolves alice through a mock directory holding
	// her document as our PLC directory serves it.
	var doc indigoid.DIDDocument
	raw, err := n.plc.Document(t.Context(), syntax.DID(did))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	dir := indigoid.NewMockDirectory()
	ident := indigoid.ParseIdentity(&doc)
	ident.Handle = "alice.test"
	dir.Insert(ident)

	const aud = "did:web:video.example.com"
	token := serviceToken(t, base, access, url.Values{"aud": {aud}, "lxm": {uploadBlob.String()},
		"exp": {strconv.FormatInt(time.Now().Add(30*time.Minute).Unix(), 10)}})
	v := auth.ServiceAuthValidator{Audience: aud, Dir: dir}
	nsid := uploadBlob
	iss, err := v.Validate(t.Context(), token, &nsid)
	if err != nil || iss.String() != did {
		t.Errorf("indigo Validate(getServiceAuth token) = %s, %v; want %s", iss, err, did)
	}
	other := syntax.NSID("com.atproto.repo.createRecord")
	if _, err := v.Validate(t.Context(), token, &other); err == nil {
		t.Error("indigo Validate with another lxm accepted the token")
	}
	// The header and claims are the reference's shape.
	parts := strings.Split(token, ".")
	header, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if string(header) != `{"typ":"JWT","alg":"ES256K"}` {
		t.Errorf("token header = %s", header)
	}
}

func TestServiceAuthVerifier(t *testing.T) {
	t.Parallel()
	n, _, clock := testNodeClock(t)
	ids, base := identityTestServer(t, n, &fakeDNS{})
	alice := createTestAccount(t, base, "alice.test")
	did, access := alice["did"].(string), alice["accessJwt"].(string)
	ours := n.serviceDID()
	// Ten minutes, so a loaded machine running parallel tests does not expire them.
	mint := func(aud, lxm string) string {
		return serviceToken(t, base, access, url.Values{"aud": {aud}, "lxm": {lxm},
			"exp": {strconv.FormatInt(clock.Now().Add(10*time.Minute).Unix(), 10)}})
	}

	good := mint(ours, uploadBlob.String())
	sa, err := ids.verifyServiceAuth(t.Context(), good, uploadBlob)
	if err != nil || sa.Iss.String() != did || sa.Lxm != uploadBlob.String() {
		t.Fatalf("verifyServiceAuth(good token) = %+v, %v", sa, err)
	}
	if _, err := ids.verifyServiceAuth(t.Context(), good, uploadBlob); xrpcErrorName(err) != "BadJwt" {
		t.Errorf("verifyServiceAuth(replayed token) = %v, want BadJwt", err)
	}

	// Sign a token for alice by hand, for shapes getServiceAuth never mints.
	key, err := n.repos.SigningKey(t.Context(), syntax.DID(did))
	if err != nil {
		t.Fatal(err)
	}
	handMade := func(header, claims string) string {
		in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
		sig, err := key.HashAndSign([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		return in + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	exp := strconv.FormatInt(time.Now().Add(10*time.Minute).Unix(), 10)
	otherKey, _ := atcrypto.GeneratePrivateKeyK256()
	forged, err := signServiceToken(otherKey, syntax.DID(did), ours, uploadBlob.String(), time.Now(), time.Now().Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	withService := mint(ours+"#atproto_pds", uploadBlob.String())
	tampered := mint(ours, uploadBlob.String())
	parts := strings.Split(tampered, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(claims), `"jti":"`, `"jti":"0`, 1)))
	tamperedClaims := strings.Join(parts, ".")
	tamperedSig := tampered[:len(tampered)-4] + flip(tampered[len(tampered)-4:])

	tests := []struct {
		name  string
		token string
		lxm   syntax.NSID
		want  string // error name, or "" for accepted
	}{
		{"audience with our #atproto_pds", withService, uploadBlob, ""},
		{"wrong audience", mint("did:web:elsewhere.example.com", uploadBlob.String()), uploadBlob, "BadJwtAudience"},
		{"our DID with a foreign service", mint(ours+"#bsky_chat", uploadBlob.String()), uploadBlob, "BadJwtAudience"},
		{"wrong lxm", mint(ours, "com.atproto.repo.createRecord"), uploadBlob, "BadJwtLexiconMethod"},
		{"no lxm", handMade(`{"typ":"JWT","alg":"ES256K"}`, `{"iss":"`+did+`","aud":"`+ours+`","exp":`+exp+`,"jti":"a"}`), uploadBlob, "BadJwtLexiconMethod"},
		{"signed by another key", forged, uploadBlob, "BadJwtSignature"},
		{"tampered claims", tamperedClaims, uploadBlob, "BadJwtSignature"},
		{"tampered signature", tamperedSig, uploadBlob, "BadJwtSignature"},
		{"access token", access, uploadBlob, "BadJwtType"},
		{"refresh token", alice["refreshJwt"].(string), uploadBlob, "BadJwtType"},
		{"dpop type", handMade(`{"typ":"dpop+jwt","alg":"ES256K"}`, `{"iss":"`+did+`","aud":"`+ours+`","exp":`+exp+`,"lxm":"`+uploadBlob.String()+`","jti":"b"}`), uploadBlob, "BadJwtType"},
		{"alg of the other curve", handMade(`{"alg":"ES256"}`, `{"iss":"`+did+`","aud":"`+ours+`","exp":`+exp+`,"lxm":"`+uploadBlob.String()+`","jti":"c"}`), uploadBlob, "BadJwtSignature"},
		{"alg none", handMade(`{"alg":"none"}`, `{"iss":"`+did+`","aud":"`+ours+`","exp":`+exp+`,"lxm":"`+uploadBlob.String()+`","jti":"d"}`), uploadBlob, "BadJwt"},
		{"aud as a one-element array", handMade(`{"alg":"ES256K"}`, `{"iss":"`+did+`","aud":["`+ours+`"],"exp":`+exp+`,"lxm":"`+uploadBlob.String()+`","jti":"e"}`), uploadBlob, ""},
		{"no jti", handMade(`{"alg":"ES256K"}`, `{"iss":"`+did+`","aud":"`+ours+`","exp":`+exp+`,"lxm":"`+uploadBlob.String()+`"}`), uploadBlob, "BadJwt"},
		{"far future", handMade(`{"alg":"ES256K"}`, `{"iss":"`+did+`","aud":"`+ours+`","exp":`+strconv.FormatInt(time.Now().Add(24*time.Hour).Unix(), 10)+`,"lxm":"`+uploadBlob.String()+`","jti":"f"}`), uploadBlob, "BadJwt"},
		{"unknown issuer", handMade(`{"alg":"ES256K"}`, `{"iss":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa","aud":"`+ours+`","exp":`+exp+`,"lxm":"`+uploadBlob.String()+`","jti":"g"}`), uploadBlob, "BadJwtIss"},
		{"issuer not a DID", handMade(`{"alg":"ES256K"}`, `{"iss":"alice","aud":"`+ours+`","exp":`+exp+`,"lxm":"`+uploadBlob.String()+`","jti":"h"}`), uploadBlob, "BadJwtIss"},
		{"two segments", "a.b", uploadBlob, "BadJwt"},
		{"empty", "", uploadBlob, "BadJwt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ids.verifyServiceAuth(t.Context(), tt.token, tt.lxm)
			if got := xrpcErrorName(err); got != tt.want || (tt.want == "" && err != nil) {
				t.Errorf("verifyServiceAuth = %v, want %q", err, tt.want)
			}
			var xe *xrpc.Error
			if errors.As(err, &xe) && xe.Status != 401 {
				t.Errorf("verifyServiceAuth status = %d, want 401", xe.Status)
			}
		})
	}

	// Expiry, by the node's clock.
	expiring := mint(ours, uploadBlob.String())
	clock.Advance(11 * time.Minute)
	if _, err := ids.verifyServiceAuth(t.Context(), expiring, uploadBlob); xrpcErrorName(err) != "JwtExpired" {
		t.Errorf("verifyServiceAuth(expired) = %v, want JwtExpired", err)
	}
}

func TestGetServiceAuthRules(t *testing.T) {
	t.Parallel()
	n, _ := testNode(t)
	_, base := identityTestServer(t, n, &fakeDNS{})
	alice := createTestAccount(t, base, "alice.test")
	access := alice["accessJwt"].(string)
	_, appPass, _ := getJSON(t, "POST", base+"/xrpc/com.atproto.server.createAppPassword", `{"name":"phone"}`, bearer(access))
	appAccess := login(t, base, "alice.test", appPass["password"].(string))["accessJwt"].(string)
	// in marks an expiry relative to when the subtest runs, which may be long after the
	// table is built when parallel tests queue.
	in := func(d time.Duration) string { return "rel:" + d.String() }
	const aud = "did:web:api.example.com"

	tests := []struct {
		name      string
		token     string
		q         url.Values
		wantError string // "" for success
	}{
		{"default expiry", access, url.Values{"aud": {aud}, "lxm": {uploadBlob.String()}}, ""},
		{"no lxm, a minute", access, url.Values{"aud": {aud}, "exp": {in(50 * time.Second)}}, ""},
		{"aud with a service", access, url.Values{"aud": {aud + "#bsky_appview"}, "lxm": {"app.bsky.feed.getTimeline"}}, ""},
		{"an hour with lxm", access, url.Values{"aud": {aud}, "lxm": {uploadBlob.String()}, "exp": {in(59 * time.Minute)}}, ""},
		{"expiry in the past", access, url.Values{"aud": {aud}, "lxm": {uploadBlob.String()}, "exp": {in(-time.Minute)}}, "BadExpiration"},
		{"more than an hour", access, url.Values{"aud": {aud}, "lxm": {uploadBlob.String()}, "exp": {in(2 * time.Hour)}}, "BadExpiration"},
		{"no lxm, five minutes", access, url.Values{"aud": {aud}, "exp": {in(5 * time.Minute)}}, "BadExpiration"},
		{"exp not a number", access, url.Values{"aud": {aud}, "exp": {"soon"}}, "InvalidRequest"},
		{"protected method", access, url.Values{"aud": {aud}, "lxm": {"com.atproto.identity.updateHandle"}}, "InvalidRequest"},
		{"bad lxm", access, url.Values{"aud": {aud}, "lxm": {"not-an-nsid"}}, "InvalidRequest"},
		{"bad aud", access, url.Values{"aud": {"api.example.com"}}, "InvalidRequest"},
		{"missing aud", access, url.Values{"lxm": {uploadBlob.String()}}, "InvalidRequest"},
		{"aud with an empty service", access, url.Values{"aud": {aud + "#"}}, "InvalidRequest"},
		{"app password, ordinary method", appAccess, url.Values{"aud": {aud}, "lxm": {uploadBlob.String()}}, ""},
		{"app password, chat", appAccess, url.Values{"aud": {aud}, "lxm": {"chat.bsky.convo.getLog"}}, "InvalidRequest"},
		{"app password, createAccount", appAccess, url.Values{"aud": {aud}, "lxm": {"com.atproto.server.createAccount"}}, "InvalidRequest"},
		{"app password, no method", appAccess, url.Values{"aud": {aud}}, "InvalidRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if rel, ok := strings.CutPrefix(tt.q.Get("exp"), "rel:"); ok {
				d, _ := time.ParseDuration(rel)
				tt.q = url.Values{"aud": tt.q["aud"], "lxm": tt.q["lxm"], "exp": {strconv.FormatInt(time.Now().Add(d).Unix(), 10)}}
			}
			status, body, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.server.getServiceAuth?"+tt.q.Encode(), "", bearer(tt.token))
			if tt.wantError == "" {
				if status != 200 || body["token"] == nil {
					t.Errorf("getServiceAuth(%s) = %d %v, want a token", tt.q.Encode(), status, body)
				}
				return
			}
			if status != 400 || body["error"] != tt.wantError {
				t.Errorf("getServiceAuth(%s) = %d %v, want 400 %s", tt.q.Encode(), status, body, tt.wantError)
			}
		})
	}
	status, body, _ := getJSON(t, "GET", base+"/xrpc/com.atproto.server.getServiceAuth?aud="+aud, "", nil)
	if status != 401 {
		t.Errorf("getServiceAuth without a token = %d %v, want 401", status, body)
	}
}

// FuzzParseServiceToken feeds the service-JWT parser arbitrary text: it must never panic,
// and what it accepts must have the claims it promises.
func FuzzParseServiceToken(f *testing.F) {
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	good, err := signServiceToken(key, "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "did:web:pds.example.com#atproto_pds",
		"com.atproto.repo.uploadBlob", now, now.Add(time.Minute))
	if err != nil {
		f.Fatal(err)
	}
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, seed := range []string{
		good,
		"", ".", "..", "a.b.c", "a.b", "a.b.c.d",
		enc(`{"alg":"ES256K"}`) + "." + enc(`{"iss":"did:plc:a","aud":"did:web:x","exp":1e3,"jti":"j"}`) + ".AAAA",
		enc(`{"alg":"ES256"}`) + "." + enc(`{"iss":"did:plc:a","aud":["did:web:x"],"exp":1.5,"iat":"x","jti":"j"}`) + ".AAAA",
		enc(`{"alg":"ES256K","typ":"at+jwt"}`) + "." + enc(`{}`) + ".",
		enc(`{"alg":"ES256K"}`) + "." + enc(`{"iss":1,"aud":null,"exp":-1}`) + ".",
		enc(`{"alg":"ES256K"}`) + "." + enc(`{"iss":"did:plc:a","aud":"x","exp":99999999999999999999999,"jti":"j"}`) + ".",
		enc(`{"alg":"ES256K"}{}`) + "." + enc(`[]`) + ".",
		"eyJ=.eyJ=.AA==",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := parseServiceToken(raw)
		if err != nil {
			var xe *xrpc.Error
			if !errors.As(err, &xe) || xe.Status != 401 {
				t.Fatalf("parseServiceToken(%q) error %v is not a 401 XRPC error", raw, err)
			}
			return
		}
		c := tok.claims
		if c.Iss == "" || c.Aud == "" || c.Jti == "" {
			t.Fatalf("parseServiceToken(%q) accepted claims %+v", raw, c)
		}
		if a := tok.header.Alg; a != algES256K && a != algES256 {
			t.Fatalf("parseServiceToken(%q) accepted alg %q", raw, a)
		}
	})
}
