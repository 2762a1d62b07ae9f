package secretbox

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"meshca/pkg/atomicfile"
)

// ReadKeyFile reads a key file: 32 bytes, base64 (standard encoding) on
// one line.
func ReadKeyFile(path string) (Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("encryption key file %s: %w", path, err)
	}
	material, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return Key{}, fmt.Errorf("encryption key file %s: not base64 (it must hold %d random bytes, base64-encoded, e.g. from `head -c 32 /dev/urandom | base64`)", path, KeySize)
	}
	k, err := NewKey(material)
	if err != nil {
		return Key{}, fmt.Errorf("encryption key file %s: %w", path, err)
	}
	return k, nil
}

// NewRandomKey returns new random key material.
func NewRandomKey() ([]byte, error) {
	material := make([]byte, KeySize)
	if _, err := rand.Read(material); err != nil {
		return nil, fmt.Errorf("generate encryption key: %w", err)
	}
	return material, nil
}

// WriteKeyFile writes key material to path, 0600, refusing to replace an
// existing file (a replaced key would make the data unreadable).
func WriteKeyFile(path string, material []byte) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("encryption key file %s already exists", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("encryption key file %s: %w", path, err)
	}
	if err := atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(material)+"\n"), 0o600); err != nil {
		return fmt.Errorf("encryption key file %s: %w", path, err)
	}
	return nil
}
