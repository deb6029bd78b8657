package identity

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/google/go-cmp/cmp"
)

func newK256(t testing.TB) *atcrypto.PrivateKeyK256 {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatalf("GeneratePrivateKeyK256() = %v", err)
	}
	return k
}

func newP256(t testing.TB) *atcrypto.PrivateKeyP256 {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatalf("GeneratePrivateKeyP256() = %v", err)
	}
	return k
}

func pub(t testing.TB, k atcrypto.PrivateKey) atcrypto.PublicKey {
	t.Helper()
	p, err := k.PublicKey()
	if err != nil {
		t.Fatalf("PublicKey() = %v", err)
	}
	return p
}

var plcDIDPattern = regexp.MustCompile(`^did:plc:[a-z2-7]{24}$`)

func TestGenesisSignsAndHashesPerSpec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		server atcrypto.PrivateKey
		user   atcrypto.PrivateKey
	}{
		{"k256 server key", newK256(t), nil},
		{"p256 server key", newP256(t), nil},
		{"user recovery key first", newK256(t), newP256(t)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			signing := newK256(t)
			rotation := []atcrypto.PublicKey{pub(t, tt.server)}
			if tt.user != nil {
				rotation = append([]atcrypto.PublicKey{pub(t, tt.user)}, rotation...)
			}
			st := AccountState("Alice.Example.com", "https://pds.example.com", pub(t, signing), rotation...)
			op, did, err := NewGenesis(st, tt.server)
			if err != nil {
				t.Fatalf("NewGenesis() = %v", err)
			}
			if !plcDIDPattern.MatchString(did.String()) {
				t.Errorf("NewGenesis() DID = %q, want did:plc + 24 base32 chars", did)
			}
			if op.Prev != "" || op.Type != TypeOperation {
				t.Errorf("genesis op = %+v, want a plc_operation with null prev", op)
			}
			if diff := cmp.Diff([]string{"at://alice.example.com"}, op.AlsoKnownAs); diff != "" {
				t.Errorf("alsoKnownAs (-want +got):\n%s", diff)
			}

			// The DID by the spec's recipe, computed here without GenesisDID.
			signed, err := op.SignedCBOR()
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(signed)
			want := "did:plc:" + strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:24]
			if did.String() != want {
				t.Errorf("DID = %s, want %s", did, want)
			}

			// The signature verifies with indigo directly over the unsigned CBOR, which
			// decodes to the op without "sig" and with "prev": null present.
			unsigned, err := op.UnsignedCBOR()
			if err != nil {
				t.Fatal(err)
			}
			sig, err := base64.RawURLEncoding.DecodeString(op.Sig)
			if err != nil {
				t.Fatalf("sig %q is not base64url: %v", op.Sig, err)
			}
			if err := pub(t, tt.server).HashAndVerify(unsigned, sig); err != nil {
				t.Errorf("HashAndVerify(unsigned op) = %v", err)
			}
			decoded, err := atdata.UnmarshalCBOR(unsigned)
			if err != nil {
				t.Fatalf("UnmarshalCBOR(unsigned) = %v", err)
			}
			if _, hasSig := decoded["sig"]; hasSig {
				t.Error("unsigned CBOR has a sig field")
			}
			if prev, ok := decoded["prev"]; !ok || prev != nil {
				t.Errorf("unsigned CBOR prev = %v (present %t), want null", prev, ok)
			}

			idx, err := op.VerifySignature(op.RotationKeys)
			if err != nil || op.RotationKeys[idx] != pub(t, tt.server).DIDKey() {
				t.Errorf("VerifySignature() = %d, %v; want the server key", idx, err)
			}
		})
	}
}

// TestGenesisDIDVector checks our CBOR encoding and DID recipe against plc.directory's
// own: the first operation of bsky.app's audit log must hash to its DID.
func TestGenesisDIDVector(t *testing.T) {
	t.Parallel()
	entries := readAuditLog(t, filepath.Join("testdata", "plc-audit-log", "valid", "log_bskyapp.json"))
	did, err := entries[0].Operation.GenesisDID()
	if err != nil || did != "did:plc:z72i7hdynmk6r22z27h6tvur" {
		t.Errorf("GenesisDID() = %s, %v; want did:plc:z72i7hdynmk6r22z27h6tvur", did, err)
	}
	for i, e := range entries {
		if c, err := e.Operation.CID(); err != nil || c != e.CID {
			t.Errorf("op %d CID() = %s, %v; want %s", i, c, err, e.CID)
		}
	}
}

func TestUpdateAndTombstoneChain(t *testing.T) {
	t.Parallel()
	server, signing, other := newK256(t), newK256(t), newK256(t)
	st := AccountState("alice.example.com", "https://pds.example.com", pub(t, signing), pub(t, server))
	genesis, did, err := NewGenesis(st, server)
	if err != nil {
		t.Fatal(err)
	}
	st.AlsoKnownAs = []string{"at://alice.example.org"}
	st.VerificationMethods["atproto"] = pub(t, other).DIDKey()
	gcid, _ := genesis.CID()
	update, err := NewUpdate(gcid, st, server)
	if err != nil {
		t.Fatalf("NewUpdate() = %v", err)
	}
	ucid, _ := update.CID()
	tomb, err := NewTombstone(ucid, server)
	if err != nil {
		t.Fatalf("NewTombstone() = %v", err)
	}
	tcid, _ := tomb.CID()
	log := []LogEntry{
		{DID: did, Operation: genesis, CID: gcid, CreatedAt: "2026-01-01T00:00:00.000Z"},
		{DID: did, Operation: update, CID: ucid, CreatedAt: "2026-01-01T00:00:01.000Z"},
		{DID: did, Operation: tomb, CID: tcid, CreatedAt: "2026-01-01T00:00:02.000Z"},
	}
	if err := VerifyAuditLog(did, log); err != nil {
		t.Errorf("VerifyAuditLog(genesis, update, tombstone) = %v", err)
	}
	// The log survives a JSON round trip byte-for-byte in meaning.
	b, err := json.Marshal(log)
	if err != nil {
		t.Fatal(err)
	}
	var back []LogEntry
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("Unmarshal(log) = %v", err)
	}
	if err := VerifyAuditLog(did, back); err != nil {
		t.Errorf("VerifyAuditLog(round-tripped log) = %v", err)
	}

	// An update signed by the repo signing key (not a rotation key) is refused.
	bad, err := NewUpdate(gcid, st, signing)
	if err != nil {
		t.Fatal(err)
	}
	bcid, _ := bad.CID()
	badLog := []LogEntry{log[0], {DID: did, Operation: bad, CID: bcid, CreatedAt: "2026-01-01T00:00:01.000Z"}}
	if err := VerifyAuditLog(did, badLog); !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("VerifyAuditLog(update by non-rotation key) = %v, want ErrInvalidSignature", err)
	}
	// A genesis claimed for another DID is refused.
	if err := VerifyAuditLog("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", []LogEntry{{DID: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", Operation: genesis, CID: gcid, CreatedAt: "2026-01-01T00:00:00.000Z"}}); !errors.Is(err, ErrDIDMismatch) {
		t.Errorf("VerifyAuditLog(genesis under another DID) = %v, want ErrDIDMismatch", err)
	}
}

func TestParseOperationRejects(t *testing.T) {
	t.Parallel()
	const cidStr = "bafyreigp6shzy6dlcxuowwoxz7u5nemdrkad2my5zwzpwilcnhih7bw6zm"
	good := `{"type":"plc_operation","rotationKeys":[],"verificationMethods":{},"alsoKnownAs":[],"services":{},"prev":null,"sig":"x"}`
	if _, err := ParseOperation([]byte(good)); err != nil {
		t.Fatalf("ParseOperation(minimal op) = %v", err)
	}
	tests := []struct {
		name string
		in   string
	}{
		{"not json", `{`},
		{"array", `[]`},
		{"null", `null`},
		{"unknown type", `{"type":"plc_whatever","prev":null,"sig":"x"}`},
		{"unknown field", strings.Replace(good, `"sig"`, `"extra":1,"sig"`, 1)},
		{"missing prev", strings.Replace(good, `"prev":null,`, ``, 1)},
		{"missing sig", strings.Replace(good, `,"sig":"x"`, ``, 1)},
		{"prev not a CID", strings.Replace(good, `"prev":null`, `"prev":"hello"`, 1)},
		{"prev a number", strings.Replace(good, `"prev":null`, `"prev":42`, 1)},
		{"rotationKeys null", strings.Replace(good, `"rotationKeys":[]`, `"rotationKeys":null`, 1)},
		{"rotationKeys not strings", strings.Replace(good, `"rotationKeys":[]`, `"rotationKeys":[1]`, 1)},
		{"service extra field", strings.Replace(good, `"services":{}`, `"services":{"atproto_pds":{"type":"a","endpoint":"b","x":"c"}}`, 1)},
		{"service not object", strings.Replace(good, `"services":{}`, `"services":{"atproto_pds":"b"}`, 1)},
		{"type not string", `{"type":1}`},
		{"tombstone without prev", `{"type":"plc_tombstone","prev":null,"sig":"x"}`},
		{"tombstone with keys", `{"type":"plc_tombstone","prev":"` + cidStr + `","sig":"x","rotationKeys":[]}`},
		{"create with prev", `{"type":"create","signingKey":"a","recoveryKey":"b","handle":"c","service":"d","prev":"` + cidStr + `","sig":"x"}`},
		{"too large", `{"type":"plc_operation","alsoKnownAs":["` + strings.Repeat("a", maxOperationJSON) + `"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if op, err := ParseOperation([]byte(tt.in)); !errors.Is(err, ErrInvalidOperation) {
				t.Errorf("ParseOperation(%.80s) = %+v, %v; want ErrInvalidOperation", tt.in, op, err)
			}
		})
	}
}

func TestValidateLimits(t *testing.T) {
	t.Parallel()
	server, signing := newK256(t), newK256(t)
	base := AccountState("alice.example.com", "https://pds.example.com", pub(t, signing), pub(t, server))
	tests := []struct {
		name   string
		mutate func(*State)
	}{
		{"no rotation keys", func(st *State) { st.RotationKeys = nil }},
		{"six rotation keys", func(st *State) {
			for range 5 {
				st.RotationKeys = append(st.RotationKeys, st.RotationKeys[0])
			}
		}},
		{"rotation key not did:key", func(st *State) { st.RotationKeys = append(st.RotationKeys, "did:key:nope") }},
		{"verification method not did:key", func(st *State) { st.VerificationMethods["atproto"] = "zQ3s" }},
		{"service without endpoint", func(st *State) { st.Services["atproto_pds"] = Service{Type: "AtprotoPersonalDataServer"} }},
		{"too big", func(st *State) { st.AlsoKnownAs = []string{"at://" + strings.Repeat("a", MaxOperationSize)} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := base
			st.RotationKeys = append([]string(nil), base.RotationKeys...)
			st.VerificationMethods = map[string]string{"atproto": base.VerificationMethods["atproto"]}
			st.Services = map[string]Service{"atproto_pds": base.Services["atproto_pds"]}
			tt.mutate(&st)
			op, _, err := NewGenesis(st, server)
			if err != nil {
				t.Fatal(err)
			}
			if err := op.Validate(); !errors.Is(err, ErrInvalidOperation) {
				t.Errorf("Validate() = %v, want ErrInvalidOperation", err)
			}
		})
	}
}

// FuzzParseOperation feeds untrusted operation JSON through the parser and everything a
// directory then does with it: re-encoding, hashing, signature and limit checks.
func FuzzParseOperation(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "plc-audit-log", "*", "*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var entries []struct {
			Operation json.RawMessage `json:"operation"`
		}
		if err := json.Unmarshal(b, &entries); err != nil {
			f.Fatal(err)
		}
		for _, e := range entries {
			f.Add([]byte(e.Operation))
		}
	}
	f.Add([]byte(`{"type":"plc_tombstone","prev":"bafyreigp6shzy6dlcxuowwoxz7u5nemdrkad2my5zwzpwilcnhih7bw6zm","sig":"AAAA"}`))
	f.Add([]byte(`{"type":"create","signingKey":"a","recoveryKey":"b","handle":"c","service":"d","prev":null,"sig":""}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		op, err := ParseOperation(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidOperation) {
				t.Fatalf("ParseOperation error %v does not wrap ErrInvalidOperation", err)
			}
			return
		}
		out, err := json.Marshal(op)
		if err != nil {
			t.Fatalf("Marshal(parsed op) = %v", err)
		}
		again, err := ParseOperation(out)
		if err != nil {
			t.Fatalf("ParseOperation(Marshal(op)) = %v for %s", err, out)
		}
		out2, _ := json.Marshal(again)
		if string(out) != string(out2) {
			t.Fatalf("re-encoding is not stable:\n%s\n%s", out, out2)
		}
		op.VerifySignature(op.NextRotationKeys())
		op.Validate()
		if op.Sig != "" {
			if _, err := op.CID(); err != nil {
				t.Fatalf("CID() of a parsed op = %v", err)
			}
		}
		if op.Prev == "" && op.Type != TypeTombstone && op.Sig != "" {
			did, err := op.GenesisDID()
			if err != nil || !plcDIDPattern.MatchString(did.String()) {
				t.Fatalf("GenesisDID() = %q, %v", did, err)
			}
			if _, err := syntax.ParseDID(did.String()); err != nil {
				t.Fatalf("GenesisDID() is not a DID: %v", err)
			}
		}
	})
}
