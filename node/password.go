package node

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/scrypt"
)

// scrypt parameters of the reference PDS (Node's crypto.scrypt defaults, 64-byte key), so
// that password hashes move between implementations with an account.
const (
	scryptN      = 16384
	scryptR      = 8
	scryptP      = 1
	scryptKeyLen = 64
)

// maxPasswordLen bounds the work one login can ask of scrypt; the reference PDS allows 256.
const maxPasswordLen = 256

var errBadPasswordHash = errors.New("stored password hash is malformed")

// hashPassword returns "salt:key" in hex, with the salt's hex text as scrypt's salt bytes,
// exactly as the reference PDS does.
func hashPassword(password string) (string, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("generate salt: %w", err)
	}
	salt := hex.EncodeToString(raw[:])
	key, err := scrypt.Key([]byte(password), []byte(salt), scryptN, scryptR, scryptP, scryptKeyLen)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return salt + ":" + hex.EncodeToString(key), nil
}

// verifyPassword reports whether password matches a hash made by hashPassword (or by the
// reference PDS).
func verifyPassword(password, stored string) (bool, error) {
	salt, keyHex, ok := strings.Cut(stored, ":")
	want, err := hex.DecodeString(keyHex)
	if !ok || err != nil || len(want) == 0 {
		return false, errBadPasswordHash
	}
	got, err := scrypt.Key([]byte(password), []byte(salt), scryptN, scryptR, scryptP, len(want))
	if err != nil {
		return false, fmt.Errorf("hash password: %w", err)
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
