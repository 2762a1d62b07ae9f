package secretbox

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// KeySize is the size of a key: AES-256.
const KeySize = 32

// prefix marks a sealed value: prefix, key ID, ':', nonce, ciphertext.
var prefix = []byte("meshca-sealed-v1:")

const keyIDLen = 16 // hex characters

// ErrWrongKey is wrapped when a value was sealed with a key the Box does
// not hold.
var ErrWrongKey = errors.New("sealed with another encryption key")

// Key is one AES-256 key.
type Key struct {
	id   string
	aead cipher.AEAD
}

// NewKey returns a Key of 32 bytes of key material.
func NewKey(material []byte) (Key, error) {
	if len(material) != KeySize {
		return Key{}, fmt.Errorf("an encryption key must be %d bytes, got %d", KeySize, len(material))
	}
	block, err := aes.NewCipher(material)
	if err != nil {
		return Key{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return Key{}, err
	}
	// The ID names the key without revealing it: a hash of a derivation.
	sum := sha256.Sum256(append([]byte("meshca key id\x00"), material...))
	return Key{id: hex.EncodeToString(sum[:])[:keyIDLen], aead: aead}, nil
}

// ID names the key (safe to log).
func (k Key) ID() string { return k.id }

// Box seals with its current key and opens with any of its keys.
type Box struct {
	current Key
	keys    map[string]Key
	rand    io.Reader
}

// NewBox returns a Box sealing with current and opening with current and
// previous (keys being rotated out).
func NewBox(current Key, previous ...Key) *Box {
	b := &Box{current: current, keys: map[string]Key{current.id: current}, rand: rand.Reader}
	for _, k := range previous {
		b.keys[k.id] = k
	}
	return b
}

// CurrentID is the ID of the key new values are sealed with.
func (b *Box) CurrentID() string { return b.current.id }

// Seal encrypts plaintext, bound to aad (which must be given again to Open).
func (b *Box) Seal(plaintext, aad []byte) ([]byte, error) {
	k := b.current
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := io.ReadFull(b.rand, nonce); err != nil {
		return nil, fmt.Errorf("seal: random nonce: %w", err)
	}
	out := make([]byte, 0, len(prefix)+keyIDLen+1+len(nonce)+len(plaintext)+k.aead.Overhead())
	out = append(out, prefix...)
	out = append(out, k.id...)
	out = append(out, ':')
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, plaintext, aad), nil
}

// IsSealed reports whether v is a sealed value.
func IsSealed(v []byte) bool { return bytes.HasPrefix(v, prefix) }

// SealedWith returns the ID of the key v was sealed with ("" if v is not sealed).
func SealedWith(v []byte) string {
	if !IsSealed(v) || len(v) < len(prefix)+keyIDLen+1 {
		return ""
	}
	return string(v[len(prefix) : len(prefix)+keyIDLen])
}

// Open decrypts a sealed value. A value that is not sealed (written before
// encryption was enabled) is returned as it is.
func (b *Box) Open(v, aad []byte) ([]byte, error) {
	if !IsSealed(v) {
		return v, nil
	}
	rest := v[len(prefix):]
	if len(rest) < keyIDLen+1 || rest[keyIDLen] != ':' {
		return nil, errors.New("open: malformed sealed value")
	}
	id := string(rest[:keyIDLen])
	k, ok := b.keys[id]
	if !ok {
		return nil, fmt.Errorf("open: %w (key ID %s; the configured key is %s)", ErrWrongKey, id, b.current.id)
	}
	rest = rest[keyIDLen+1:]
	ns := k.aead.NonceSize()
	if len(rest) < ns+k.aead.Overhead() {
		return nil, errors.New("open: sealed value too short")
	}
	pt, err := k.aead.Open(nil, rest[:ns], rest[ns:], aad)
	if err != nil {
		return nil, errors.New("open: the sealed value does not authenticate (tampered, or moved from another record)")
	}
	return pt, nil
}
