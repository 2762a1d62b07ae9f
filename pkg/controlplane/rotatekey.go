package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"meshca/pkg/secretbox"
)

// RotateEncryptionKey re-encrypts every secret record of cfg's store with
// the key in newKeyFile (created 0600 when it does not exist), reading them
// with the current key (cfg.EncryptionKeyFile, else <data-dir>/encryption.key)
// or the new one: an interrupted rotation is finished by running it again.
// It holds the data directory's lock, so the control plane must be stopped;
// control planes sharing a PostgreSQL store rotate instead by starting with
// the new key and --previous-encryption-key-file. It returns how many
// records it re-encrypted and the new key's ID.
func RotateEncryptionKey(ctx context.Context, cfg Config, newKeyFile string, logger *slog.Logger) (int, string, error) {
	if newKeyFile == "" {
		return 0, "", errors.New("--new-encryption-key-file is required")
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if _, err := os.Stat(cfg.DataDir); err != nil {
		return 0, "", fmt.Errorf("--data-dir %q: %w", cfg.DataDir, err)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return 0, "", err
	}
	defer unlock()
	oldFile := cfg.EncryptionKeyFile
	if oldFile == "" {
		oldFile = filepath.Join(cfg.DataDir, EncryptionKeyFile)
	}
	oldKey, err := secretbox.ReadKeyFile(oldFile)
	if err != nil {
		return 0, "", fmt.Errorf("--encryption-key-file (the current key): %w", err)
	}
	var fresh []byte
	var newKey secretbox.Key
	if _, err := os.Stat(newKeyFile); errors.Is(err, fs.ErrNotExist) {
		if fresh, err = secretbox.NewRandomKey(); err != nil {
			return 0, "", err
		}
		newKey, err = secretbox.NewKey(fresh)
		if err != nil {
			return 0, "", err
		}
	} else if newKey, err = secretbox.ReadKeyFile(newKeyFile); err != nil {
		return 0, "", fmt.Errorf("--new-encryption-key-file: %w", err)
	}
	if newKey.ID() == oldKey.ID() {
		return 0, "", fmt.Errorf("--new-encryption-key-file %s holds the current key", newKeyFile)
	}
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return 0, "", err
	}
	defer st.Close()
	sealed := secretbox.WrapStore(st, secretbox.NewBox(newKey, oldKey), sealedTypes()...)
	if err := sealed.Check(ctx); err != nil {
		return 0, "", fmt.Errorf("the store holds secrets neither key opens (nothing was changed): %w", err)
	}
	if fresh != nil {
		if err := secretbox.WriteKeyFile(newKeyFile, fresh); err != nil {
			return 0, "", err
		}
	}
	n, err := sealed.Reseal(ctx)
	if err != nil {
		return n, newKey.ID(), fmt.Errorf("re-encrypt (run the command again to finish): %w", err)
	}
	return n, newKey.ID(), nil
}
