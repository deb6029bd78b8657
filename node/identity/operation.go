package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// Operation types, as the "type" field names them.
const (
	// TypeOperation is a regular PLC operation: genesis (prev null) or update.
	TypeOperation = "plc_operation"
	// TypeTombstone ends a DID: it resolves to nothing afterwards.
	TypeTombstone = "plc_tombstone"
	// TypeCreate is the legacy genesis format of 2022. We read and verify it in audit
	// logs but never accept a new one.
	TypeCreate = "create"
)

// MaxOperationSize is the largest signed operation, in DAG-CBOR bytes, that the PLC
// directory accepts (spec: 7500).
const MaxOperationSize = 7500

// maxOperationJSON bounds the JSON we decode before the CBOR size check can run; JSON
// escapes can make a valid operation's JSON longer than its CBOR, never 2x longer.
const maxOperationJSON = 2 * MaxOperationSize

// Limits plc.directory enforces on new operations: the spec allows 1-5 rotation keys,
// and at most 10 entries in each of the other collections.
const (
	maxRotationKeys = 5
	maxEntries      = 10
)

// didKeyPrefix starts every key in an operation: keys are did:key strings.
const didKeyPrefix = "did:key:"

// Service is one entry of an operation's services map, for example
// {"type": "AtprotoPersonalDataServer", "endpoint": "https://pds.example.com"}.
type Service struct {
	Type     string `json:"type"`
	Endpoint string `json:"endpoint"`
}

// LegacyCreate holds the fields of a legacy "create" genesis operation.
type LegacyCreate struct {
	SigningKey  string
	RecoveryKey string
	Handle      string
	Service     string
}

// Operation is one signed PLC operation. ParseOperation builds it from untrusted JSON and
// checks its shape; MarshalJSON writes exactly the fields the type has, so that the bytes
// that were signed can be rebuilt. The zero value is not a valid operation.
type Operation struct {
	// Type is TypeOperation, TypeTombstone or TypeCreate.
	Type string
	// RotationKeys are did:key strings in priority order (TypeOperation only).
	RotationKeys []string
	// VerificationMethods maps a name ("atproto") to a did:key (TypeOperation only).
	VerificationMethods map[string]string
	// AlsoKnownAs lists URIs, the handle as "at://<handle>" (TypeOperation only).
	AlsoKnownAs []string
	// Services maps a name ("atproto_pds") to a service (TypeOperation only).
	Services map[string]Service
	// Prev is the CID string of the previous operation; empty for a genesis operation.
	Prev string
	// Sig is the signature, base64url without padding; empty before Sign.
	Sig string
	// Legacy holds the fields of a TypeCreate operation; nil otherwise.
	Legacy *LegacyCreate
}

// State is what a DID's latest regular operation says, as /<did>/data serves it.
type State struct {
	DID                 syntax.DID         `json:"did"`
	RotationKeys        []string           `json:"rotationKeys"`
	VerificationMethods map[string]string  `json:"verificationMethods"`
	AlsoKnownAs         []string           `json:"alsoKnownAs"`
	Services            map[string]Service `json:"services"`
}

// AccountState returns the state of an atproto account: handle, PDS endpoint, repo
// signing key, and rotation keys in priority order (a user's recovery key, if any,
// before the server's). The DID field is left empty.
func AccountState(handle syntax.Handle, pdsEndpoint string, signingKey atcrypto.PublicKey, rotationKeys ...atcrypto.PublicKey) State {
	st := State{
		VerificationMethods: map[string]string{"atproto": signingKey.DIDKey()},
		AlsoKnownAs:         []string{"at://" + handle.Normalize().String()},
		Services: map[string]Service{
			"atproto_pds": {Type: "AtprotoPersonalDataServer", Endpoint: pdsEndpoint},
		},
	}
	for _, k := range rotationKeys {
		st.RotationKeys = append(st.RotationKeys, k.DIDKey())
	}
	return st
}

// NewGenesis builds a genesis operation for st, signs it with key (which should be one
// of st.RotationKeys) and returns it with the DID it creates.
func NewGenesis(st State, key atcrypto.PrivateKey) (*Operation, syntax.DID, error) {
	op := opFromState(st, "")
	if err := op.Sign(key); err != nil {
		return nil, "", err
	}
	did, err := op.GenesisDID()
	if err != nil {
		return nil, "", err
	}
	return op, did, nil
}

// NewUpdate builds an operation that replaces a DID's state with st, following the
// operation whose CID is prevCID, and signs it with key, which must be one of that
// previous operation's rotation keys.
func NewUpdate(prevCID string, st State, key atcrypto.PrivateKey) (*Operation, error) {
	if prevCID == "" {
		return nil, fmt.Errorf("%w: update needs a prev CID", ErrInvalidOperation)
	}
	op := opFromState(st, prevCID)
	if err := op.Sign(key); err != nil {
		return nil, err
	}
	return op, nil
}

// NewTombstone builds and signs a tombstone following the operation prevCID.
func NewTombstone(prevCID string, key atcrypto.PrivateKey) (*Operation, error) {
	if prevCID == "" {
		return nil, fmt.Errorf("%w: tombstone needs a prev CID", ErrInvalidOperation)
	}
	op := &Operation{Type: TypeTombstone, Prev: prevCID}
	if err := op.Sign(key); err != nil {
		return nil, err
	}
	return op, nil
}

func opFromState(st State, prev string) *Operation {
	op := &Operation{
		Type:                TypeOperation,
		RotationKeys:        slices.Clone(st.RotationKeys),
		VerificationMethods: maps.Clone(st.VerificationMethods),
		AlsoKnownAs:         slices.Clone(st.AlsoKnownAs),
		Services:            maps.Clone(st.Services),
		Prev:                prev,
	}
	return op
}

// fields returns the operation as a generic map holding exactly the keys its type
// defines: the one shape both JSON and DAG-CBOR are written from, so that what we
// serve is what was signed. Collections are never nil (an empty list must encode as
// [], not null).
func (op *Operation) fields(withSig bool) map[string]any {
	m := map[string]any{"type": op.Type}
	if op.Prev == "" {
		m["prev"] = nil
	} else {
		m["prev"] = op.Prev
	}
	switch op.Type {
	case TypeOperation:
		m["rotationKeys"] = stringList(op.RotationKeys)
		m["alsoKnownAs"] = stringList(op.AlsoKnownAs)
		vm := make(map[string]any, len(op.VerificationMethods))
		for k, v := range op.VerificationMethods {
			vm[k] = v
		}
		m["verificationMethods"] = vm
		svc := make(map[string]any, len(op.Services))
		for k, v := range op.Services {
			svc[k] = map[string]any{"type": v.Type, "endpoint": v.Endpoint}
		}
		m["services"] = svc
	case TypeCreate:
		if op.Legacy != nil {
			m["signingKey"] = op.Legacy.SigningKey
			m["recoveryKey"] = op.Legacy.RecoveryKey
			m["handle"] = op.Legacy.Handle
			m["service"] = op.Legacy.Service
		}
	}
	if withSig {
		m["sig"] = op.Sig
	}
	return m
}

func stringList(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// MarshalJSON writes the signed operation with exactly the fields of its type.
func (op *Operation) MarshalJSON() ([]byte, error) {
	return json.Marshal(op.fields(true))
}

// UnmarshalJSON parses an operation with the checks of ParseOperation.
func (op *Operation) UnmarshalJSON(b []byte) error {
	parsed, err := ParseOperation(b)
	if err != nil {
		return err
	}
	*op = *parsed
	return nil
}

// UnsignedCBOR returns the DAG-CBOR bytes that are signed: the operation without "sig".
func (op *Operation) UnsignedCBOR() ([]byte, error) {
	b, err := atdata.MarshalCBOR(op.fields(false))
	if err != nil {
		return nil, fmt.Errorf("encode PLC operation: %w", err)
	}
	return b, nil
}

// SignedCBOR returns the DAG-CBOR bytes of the signed operation, which its CID and (for
// a genesis operation) its DID hash.
func (op *Operation) SignedCBOR() ([]byte, error) {
	if op.Sig == "" {
		return nil, fmt.Errorf("%w: operation is not signed", ErrInvalidOperation)
	}
	b, err := atdata.MarshalCBOR(op.fields(true))
	if err != nil {
		return nil, fmt.Errorf("encode PLC operation: %w", err)
	}
	return b, nil
}

// CID returns the operation's CID string (CIDv1, dag-cbor, sha-256, base32), the value a
// following operation puts in prev.
func (op *Operation) CID() (string, error) {
	b, err := op.SignedCBOR()
	if err != nil {
		return "", err
	}
	c, err := cid.V1Builder{Codec: cid.DagCBOR, MhType: multihash.SHA2_256}.Sum(b)
	if err != nil {
		return "", fmt.Errorf("hash PLC operation: %w", err)
	}
	return c.String(), nil
}

// GenesisDID returns the DID a genesis operation creates: "did:plc:" and the first 24
// characters of the lower-case, unpadded base32 of SHA-256 over the signed DAG-CBOR.
func (op *Operation) GenesisDID() (syntax.DID, error) {
	if op.Prev != "" || op.Type == TypeTombstone {
		return "", fmt.Errorf("%w: not a genesis operation", ErrInvalidOperation)
	}
	b, err := op.SignedCBOR()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	id := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))
	return syntax.DID("did:plc:" + id[:24]), nil
}

// Sign sets Sig to key's low-S signature over the unsigned DAG-CBOR.
func (op *Operation) Sign(key atcrypto.PrivateKey) error {
	b, err := op.UnsignedCBOR()
	if err != nil {
		return err
	}
	sig, err := key.HashAndSign(b)
	if err != nil {
		return fmt.Errorf("sign PLC operation: %w", err)
	}
	op.Sig = base64.RawURLEncoding.EncodeToString(sig)
	return nil
}

// decodeSig decodes Sig strictly: base64url, no padding characters, no line breaks
// (which Go's decoder would otherwise skip), zero padding bits, and exactly 64 bytes
// (compact r||s, so DER is refused). Each laxity is a way to make a second valid
// encoding of the same operation, and with it a second CID.
func (op *Operation) decodeSig() ([]byte, error) {
	if strings.ContainsAny(op.Sig, "\r\n=") {
		return nil, fmt.Errorf("%w: signature is not unpadded base64url", ErrInvalidOperation)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(op.Sig)
	if err != nil {
		return nil, fmt.Errorf("%w: signature encoding: %w", ErrInvalidOperation, err)
	}
	if len(sig) != 64 {
		return nil, fmt.Errorf("%w: signature is %d bytes, want 64", ErrInvalidOperation, len(sig))
	}
	return sig, nil
}

// VerifySignature checks the signature against keys (did:key strings) in order and
// returns the index of the first key that verifies it. Keys that do not parse are
// skipped. It returns ErrInvalidSignature when none verifies, or ErrInvalidOperation when
// the signature is malformed.
func (op *Operation) VerifySignature(keys []string) (int, error) {
	sig, err := op.decodeSig()
	if err != nil {
		return -1, err
	}
	b, err := op.UnsignedCBOR()
	if err != nil {
		return -1, err
	}
	for i, k := range keys {
		pub, err := atcrypto.ParsePublicDIDKey(k)
		if err != nil {
			continue
		}
		// HashAndVerify insists on low-S for both curves, as the PLC spec does.
		if pub.HashAndVerify(b, sig) == nil {
			return i, nil
		}
	}
	return -1, ErrInvalidSignature
}

// NextRotationKeys returns the keys allowed to sign the operation after this one: the
// rotation keys of a regular operation, recovery then signing key of a legacy create,
// none after a tombstone.
func (op *Operation) NextRotationKeys() []string {
	switch op.Type {
	case TypeOperation:
		return op.RotationKeys
	case TypeCreate:
		if op.Legacy != nil {
			return []string{op.Legacy.RecoveryKey, op.Legacy.SigningKey}
		}
	}
	return nil
}

// State returns the DID state this operation sets; a legacy create is normalised the way
// the PLC directory does. ok is false for a tombstone.
func (op *Operation) State(did syntax.DID) (st State, ok bool) {
	switch op.Type {
	case TypeOperation:
		return State{
			DID:                 did,
			RotationKeys:        slices.Clone(op.RotationKeys),
			VerificationMethods: maps.Clone(op.VerificationMethods),
			AlsoKnownAs:         slices.Clone(op.AlsoKnownAs),
			Services:            maps.Clone(op.Services),
		}, true
	case TypeCreate:
		l := op.Legacy
		if l == nil {
			return State{}, false
		}
		handle := l.Handle
		if !strings.HasPrefix(handle, "at://") {
			handle = "at://" + handle
		}
		endpoint := l.Service
		if !strings.HasPrefix(endpoint, "http://") && !strings.HasPrefix(endpoint, "https://") {
			endpoint = "https://" + endpoint
		}
		return State{
			DID:                 did,
			RotationKeys:        []string{l.RecoveryKey, l.SigningKey},
			VerificationMethods: map[string]string{"atproto": l.SigningKey},
			AlsoKnownAs:         []string{handle},
			Services:            map[string]Service{"atproto_pds": {Type: "AtprotoPersonalDataServer", Endpoint: endpoint}},
		}, true
	}
	return State{}, false
}

// Validate applies the limits a directory enforces on a new operation beyond its shape:
// size, 1-5 rotation keys and verification methods that parse as did:key, at most 10
// entries per collection, and no new legacy creates.
func (op *Operation) Validate() error {
	b, err := op.SignedCBOR()
	if err != nil {
		return err
	}
	if len(b) > MaxOperationSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidOperation, len(b), MaxOperationSize)
	}
	if _, err := op.decodeSig(); err != nil {
		return err
	}
	switch op.Type {
	case TypeTombstone:
		return nil
	case TypeCreate:
		return fmt.Errorf("%w: legacy create operations are no longer accepted", ErrInvalidOperation)
	}
	if n := len(op.RotationKeys); n < 1 || n > maxRotationKeys {
		return fmt.Errorf("%w: %d rotation keys, want 1 to %d", ErrInvalidOperation, n, maxRotationKeys)
	}
	for _, k := range op.RotationKeys {
		if _, err := atcrypto.ParsePublicDIDKey(k); err != nil {
			return fmt.Errorf("%w: rotation key: %w", ErrInvalidOperation, err)
		}
	}
	if len(op.VerificationMethods) > maxEntries || len(op.AlsoKnownAs) > maxEntries || len(op.Services) > maxEntries {
		return fmt.Errorf("%w: more than %d entries in a collection", ErrInvalidOperation, maxEntries)
	}
	for name, k := range op.VerificationMethods {
		if _, err := atcrypto.ParsePublicDIDKey(k); err != nil {
			return fmt.Errorf("%w: verification method %q: %w", ErrInvalidOperation, name, err)
		}
	}
	for name, s := range op.Services {
		if s.Type == "" || s.Endpoint == "" {
			return fmt.Errorf("%w: service %q needs a type and an endpoint", ErrInvalidOperation, name)
		}
	}
	return nil
}

// opFields lists, per type, the fields an operation must have: no more, no fewer. An
// unknown field would be dropped by our typed form and so change the signed bytes;
// refusing it is clearer than a confusing signature failure.
var opFields = map[string][]string{
	TypeOperation: {"type", "rotationKeys", "verificationMethods", "alsoKnownAs", "services", "prev", "sig"},
	TypeTombstone: {"type", "prev", "sig"},
	TypeCreate:    {"type", "signingKey", "recoveryKey", "handle", "service", "prev", "sig"},
}

// ParseOperation parses one signed operation from untrusted JSON. It checks the shape
// (known type, exactly the fields of that type, string values, prev a CID or null as
// the type requires) but neither signature nor chain; errors wrap ErrInvalidOperation.
func ParseOperation(b []byte) (*Operation, error) {
	if len(b) > maxOperationJSON {
		return nil, fmt.Errorf("%w: %d bytes of JSON", ErrInvalidOperation, len(b))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOperation, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: not an object", ErrInvalidOperation)
	}
	op := &Operation{}
	if err := decodeString(raw, "type", &op.Type); err != nil {
		return nil, err
	}
	want, ok := opFields[op.Type]
	if !ok {
		return nil, fmt.Errorf("%w: unknown type %q", ErrInvalidOperation, op.Type)
	}
	for k := range raw {
		if !slices.Contains(want, k) {
			return nil, fmt.Errorf("%w: unexpected field %q for %s", ErrInvalidOperation, k, op.Type)
		}
	}
	for _, k := range want {
		if _, ok := raw[k]; !ok {
			return nil, fmt.Errorf("%w: missing field %q", ErrInvalidOperation, k)
		}
	}
	if err := decodeString(raw, "sig", &op.Sig); err != nil {
		return nil, err
	}
	if p := raw["prev"]; !bytes.Equal(bytes.TrimSpace(p), []byte("null")) {
		if err := decodeString(raw, "prev", &op.Prev); err != nil {
			return nil, err
		}
		c, err := cid.Decode(op.Prev)
		if err != nil || c.String() != op.Prev {
			return nil, fmt.Errorf("%w: prev is not a CID string", ErrInvalidOperation)
		}
	}
	switch op.Type {
	case TypeTombstone:
		if op.Prev == "" {
			return nil, fmt.Errorf("%w: tombstone without prev", ErrInvalidOperation)
		}
	case TypeCreate:
		if op.Prev != "" {
			return nil, fmt.Errorf("%w: legacy create with prev", ErrInvalidOperation)
		}
		op.Legacy = &LegacyCreate{}
		for k, dst := range map[string]*string{
			"signingKey": &op.Legacy.SigningKey, "recoveryKey": &op.Legacy.RecoveryKey,
			"handle": &op.Legacy.Handle, "service": &op.Legacy.Service,
		} {
			if err := decodeString(raw, k, dst); err != nil {
				return nil, err
			}
		}
	case TypeOperation:
		if err := decodeValue(raw, "rotationKeys", &op.RotationKeys); err != nil {
			return nil, err
		}
		if err := decodeValue(raw, "alsoKnownAs", &op.AlsoKnownAs); err != nil {
			return nil, err
		}
		if err := decodeValue(raw, "verificationMethods", &op.VerificationMethods); err != nil {
			return nil, err
		}
		var services map[string]json.RawMessage
		if err := decodeValue(raw, "services", &services); err != nil {
			return nil, err
		}
		op.Services = make(map[string]Service, len(services))
		for name, sb := range services {
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(sb, &fields); err != nil || fields == nil {
				return nil, fmt.Errorf("%w: service %q is not an object", ErrInvalidOperation, name)
			}
			if len(fields) != 2 {
				return nil, fmt.Errorf("%w: service %q must have exactly type and endpoint", ErrInvalidOperation, name)
			}
			var s Service
			if err := decodeString(fields, "type", &s.Type); err != nil {
				return nil, err
			}
			if err := decodeString(fields, "endpoint", &s.Endpoint); err != nil {
				return nil, err
			}
			op.Services[name] = s
		}
	}
	return op, nil
}

// decodeString decodes a required JSON string field.
func decodeString(raw map[string]json.RawMessage, key string, dst *string) error {
	v, ok := raw[key]
	if !ok {
		return fmt.Errorf("%w: missing field %q", ErrInvalidOperation, key)
	}
	if err := json.Unmarshal(v, dst); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return fmt.Errorf("%w: field %q must be a string", ErrInvalidOperation, key)
	}
	return nil
}

// decodeValue decodes a required, non-null JSON field into a list or map of strings.
func decodeValue(raw map[string]json.RawMessage, key string, dst any) error {
	v := raw[key]
	if bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return fmt.Errorf("%w: field %q is null", ErrInvalidOperation, key)
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("%w: field %q: %w", ErrInvalidOperation, key, err)
	}
	return nil
}
