package repo

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/aerie-social/aerie/node/interop"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	indigorepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/mr-tron/base58"
)

const testDID = syntax.DID("did:plc:ewvi7nxzyoun6zhxrhs64oiz")

func testKeys(t testing.TB) map[string]atcrypto.PrivateKey {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	p, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	return map[string]atcrypto.PrivateKey{"k256": k, "p256": p}
}

func testCommit() Commit {
	return Commit{
		DID:     testDID,
		Version: CommitVersion,
		Data:    CBORCID([]byte{0xa0}),
		Rev:     syntax.TID("3kznmn7xqxl22"),
	}
}

func TestCommitMatchesIndigo(t *testing.T) {
	t.Parallel()
	for name, key := range testKeys(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pub, err := key.PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			c := testCommit()
			if err := c.Sign(key); err != nil {
				t.Fatalf("Sign = %v", err)
			}
			raw, id, err := c.Encode()
			if err != nil {
				t.Fatalf("Encode = %v", err)
			}
			if id != CBORCID(raw) {
				t.Errorf("Encode CID %s is not the hash of its bytes", id)
			}

			// indigo encodes the same fields to the same bytes, and its
			// verifier accepts our signature.
			ic := indigorepo.Commit{DID: string(c.DID), Version: c.Version, Data: c.Data, Rev: string(c.Rev), Sig: c.Sig}
			var buf bytes.Buffer
			if err := ic.MarshalCBOR(&buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), raw) {
				t.Errorf("Encode =\n%x\nindigo =\n%x", raw, buf.Bytes())
			}
			unsigned, err := c.UnsignedBytes()
			if err != nil {
				t.Fatal(err)
			}
			iu, err := ic.UnsignedBytes()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(unsigned, iu) {
				t.Errorf("UnsignedBytes =\n%x\nindigo =\n%x", unsigned, iu)
			}
			if err := ic.VerifySignature(pub); err != nil {
				t.Errorf("indigo VerifySignature = %v", err)
			}

			got, err := DecodeCommit(raw)
			if err != nil {
				t.Fatalf("DecodeCommit = %v", err)
			}
			if err := got.Verify(pub); err != nil {
				t.Errorf("Verify = %v", err)
			}
			if got.DID != c.DID || got.Rev != c.Rev || got.Data != c.Data || got.Prev != nil {
				t.Errorf("DecodeCommit = %+v, want %+v", got, c)
			}

			// A signature by another key, or over other content, fails.
			other := testCommit()
			other.Rev = "3kznmn7xqxl23"
			if err := other.Sign(key); err != nil {
				t.Fatal(err)
			}
			got.Sig = other.Sig
			if err := got.Verify(pub); !errors.Is(err, ErrBadSignature) {
				t.Errorf("Verify(signature of other commit) = %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestCommitPrevLink(t *testing.T) {
	t.Parallel()
	key := testKeys(t)["k256"]
	c := testCommit()
	prev := CBORCID([]byte("previous"))
	c.Prev = &prev
	if err := c.Sign(key); err != nil {
		t.Fatal(err)
	}
	raw, _, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ic := indigorepo.Commit{DID: string(c.DID), Version: c.Version, Data: c.Data, Rev: string(c.Rev), Sig: c.Sig, Prev: &prev}
	var buf bytes.Buffer
	if err := ic.MarshalCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), raw) {
		t.Errorf("Encode with prev =\n%x\nindigo =\n%x", raw, buf.Bytes())
	}
	got, err := DecodeCommit(raw)
	if err != nil {
		t.Fatalf("DecodeCommit = %v", err)
	}
	if got.Prev == nil || *got.Prev != prev {
		t.Errorf("DecodeCommit prev = %v, want %s", got.Prev, prev)
	}
}

func TestDecodeCommitRejects(t *testing.T) {
	t.Parallel()
	key := testKeys(t)["k256"]
	encode := func(edit func(*indigorepo.Commit)) []byte {
		c := testCommit()
		if err := c.Sign(key); err != nil {
			t.Fatal(err)
		}
		ic := indigorepo.Commit{DID: string(c.DID), Version: c.Version, Data: c.Data, Rev: string(c.Rev), Sig: c.Sig}
		edit(&ic)
		var buf bytes.Buffer
		if err := ic.MarshalCBOR(&buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	good := encode(func(*indigorepo.Commit) {})
	tests := []struct {
		name    string
		in      []byte
		wantErr error
	}{
		{"version 2", encode(func(c *indigorepo.Commit) { c.Version = 2 }), ErrInvalidCommit},
		{"bad did", encode(func(c *indigorepo.Commit) { c.DID = "plc:abc" }), ErrInvalidCommit},
		{"bad rev", encode(func(c *indigorepo.Commit) { c.Rev = "2024-01-01" }), ErrInvalidCommit},
		{"no rev", encode(func(c *indigorepo.Commit) { c.Rev = "" }), ErrInvalidCommit},
		{"short sig", encode(func(c *indigorepo.Commit) { c.Sig = c.Sig[:63] }), ErrInvalidCommit},
		{"no sig", encode(func(c *indigorepo.Commit) { c.Sig = nil }), ErrInvalidCommit},
		{"trailing byte", append(bytes.Clone(good), 0), ErrInvalidCommit},
		{"truncated", good[:len(good)-1], ErrInvalidCommit},
		{"empty", nil, ErrInvalidCommit},
		{"not a map", []byte{0x80}, ErrInvalidCommit},
		{"too large", make([]byte, maxCommitSize+1), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := DecodeCommit(tt.in); !errors.Is(err, tt.wantErr) {
				t.Errorf("DecodeCommit(%x) = %v, want %v", tt.in, err, tt.wantErr)
			}
		})
	}
}

// TestSignatureFixtures checks the verifier our commits use against the
// interop signature vectors, including high-S and DER rejection.
func TestSignatureFixtures(t *testing.T) {
	t.Parallel()
	var fx []struct {
		Comment        string `json:"comment"`
		MessageBase64  string `json:"messageBase64"`
		PublicKeyDid   string `json:"publicKeyDid"`
		SignatureB64   string `json:"signatureBase64"`
		ValidSignature bool   `json:"validSignature"`
	}
	interop.JSON(t, "crypto/signature-fixtures.json", &fx)
	for _, tt := range fx {
		t.Run(tt.Comment, func(t *testing.T) {
			t.Parallel()
			pub, err := atcrypto.ParsePublicDIDKey(tt.PublicKeyDid)
			if err != nil {
				t.Fatalf("ParsePublicDIDKey(%s) = %v", tt.PublicKeyDid, err)
			}
			msg, err := base64.RawStdEncoding.DecodeString(tt.MessageBase64)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := base64.RawStdEncoding.DecodeString(tt.SignatureB64)
			if err != nil {
				t.Fatal(err)
			}
			err = pub.HashAndVerify(msg, sig)
			if (err == nil) != tt.ValidSignature {
				t.Errorf("HashAndVerify = %v, want valid=%v", err, tt.ValidSignature)
			}
			// A commit carrying that signature verifies the same way.
			c := testCommit()
			c.Sig = sig
			if err := c.Verify(pub); err == nil {
				t.Error("Commit.Verify accepted a signature over other bytes")
			} else if !errors.Is(err, ErrBadSignature) {
				t.Errorf("Commit.Verify = %v, want ErrBadSignature", err)
			}
		})
	}
}

// TestDIDKeyFixtures signs commits with the W3C did:key vector keys and
// verifies them with the public key parsed from the vector's did:key.
func TestDIDKeyFixtures(t *testing.T) {
	t.Parallel()
	var k256 []struct {
		PrivateKeyBytesHex string `json:"privateKeyBytesHex"`
		PublicDidKey       string `json:"publicDidKey"`
	}
	var p256 []struct {
		PrivateKeyBytesBase58 string `json:"privateKeyBytesBase58"`
		PublicDidKey          string `json:"publicDidKey"`
	}
	interop.JSON(t, "crypto/w3c_didkey_K256.json", &k256)
	interop.JSON(t, "crypto/w3c_didkey_P256.json", &p256)
	type vec struct {
		name   string
		priv   func() (atcrypto.PrivateKey, error)
		didKey string
	}
	var vecs []vec
	for _, v := range k256 {
		vecs = append(vecs, vec{"k256 " + v.PublicDidKey, func() (atcrypto.PrivateKey, error) {
			b, err := hex.DecodeString(v.PrivateKeyBytesHex)
			if err != nil {
				return nil, err
			}
			return atcrypto.ParsePrivateBytesK256(b)
		}, v.PublicDidKey})
	}
	for _, v := range p256 {
		vecs = append(vecs, vec{"p256 " + v.PublicDidKey, func() (atcrypto.PrivateKey, error) {
			b, err := base58.Decode(v.PrivateKeyBytesBase58)
			if err != nil {
				return nil, err
			}
			return atcrypto.ParsePrivateBytesP256(b)
		}, v.PublicDidKey})
	}
	for _, tt := range vecs {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			priv, err := tt.priv()
			if err != nil {
				t.Fatalf("parse private key: %v", err)
			}
			pub, err := atcrypto.ParsePublicDIDKey(tt.didKey)
			if err != nil {
				t.Fatalf("ParsePublicDIDKey(%s) = %v", tt.didKey, err)
			}
			c := testCommit()
			if err := c.Sign(priv); err != nil {
				t.Fatal(err)
			}
			if err := c.Verify(pub); err != nil {
				t.Errorf("Verify with did:key public key = %v", err)
			}
		})
	}
}

func BenchmarkCommitSignEncode(b *testing.B) {
	key := testKeys(b)["k256"]
	c := testCommit()
	b.ReportAllocs()
	for b.Loop() {
		c.Sig = nil
		if err := c.Sign(key); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecodeCommit(f *testing.F) {
	key := testKeys(f)["k256"]
	c := testCommit()
	if err := c.Sign(key); err != nil {
		f.Fatal(err)
	}
	raw, _, err := c.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	prev := c.Data
	c.Prev = &prev
	if raw, _, err = c.Encode(); err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := DecodeCommit(in)
		if err != nil {
			return
		}
		again, _, err := got.Encode()
		if err != nil {
			t.Fatalf("Encode(DecodeCommit(%x)) = %v", in, err)
		}
		if !bytes.Equal(again, in) {
			t.Fatalf("DecodeCommit accepted non-canonical %x", in)
		}
	})
}
