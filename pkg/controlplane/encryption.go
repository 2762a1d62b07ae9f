package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"meshca/pkg/api"
	"meshca/pkg/identity"
	"meshca/pkg/secretbox"
	"meshca/pkg/store"
)

// EncryptionKeyFile is the key file created under the data directory when
// no --encryption-key-file is given.
const EncryptionKeyFile = "encryption.key"

// sealedTypes are the record types holding secrets: Secret and
// GlobalSecret data (CA keys, token signing keys, credentials), the data
// planes' private keys, and Meshes, whose backend conf may hold inline
// credentials (a Vault token, AWS keys).
func sealedTypes() []string {
	return []string{api.TypeSecret, api.TypeGlobalSecret, identity.TypeDataplaneIdentity, api.TypeMesh}
}

// encryptStore wraps st so that secrets are encrypted at rest. The key is
// read from cfg.EncryptionKeyFile or, when none is given, from
// <data-dir>/encryption.key, created (0600) on first start. Before anything
// is written, every sealed record must open with the key (or one of
// cfg.PreviousEncryptionKeyFiles): a wrong key is an error at start that
// changes nothing. Records written before encryption, or with a previous
// key, are then re-sealed with the current key.
func encryptStore(ctx context.Context, cfg Config, st store.Store, logger *slog.Logger) (*secretbox.Store, error) {
	path, flag := cfg.EncryptionKeyFile, "--encryption-key-file"
	var fresh []byte
	if path == "" {
		path, flag = filepath.Join(cfg.DataDir, EncryptionKeyFile), "the data directory's key file"
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			var err error
			if fresh, err = secretbox.NewRandomKey(); err != nil {
				return nil, err
			}
		}
	}
	var key secretbox.Key
	var err error
	if fresh != nil {
		key, err = secretbox.NewKey(fresh)
	} else {
		key, err = secretbox.ReadKeyFile(path)
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().Perm()&0o077 != 0 {
			logger.Warn("the encryption key file is readable by others: chmod 600 it", "file", path, "mode", fi.Mode().Perm().String())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	var previous []secretbox.Key
	for _, p := range cfg.PreviousEncryptionKeyFiles {
		k, err := secretbox.ReadKeyFile(p)
		if err != nil {
			return nil, fmt.Errorf("--previous-encryption-key-file: %w", err)
		}
		previous = append(previous, k)
	}
	types := sealedTypes()
	if cfg.kubernetes() {
		types = kubernetesSealedTypes()
	}
	sealed := secretbox.WrapStore(st, secretbox.NewBox(key, previous...), types...)
	if err := sealed.Check(ctx); err != nil {
		if errors.Is(err, secretbox.ErrWrongKey) {
			shared := ""
			if storeName(cfg) == "postgres" {
				shared = " Control planes sharing a PostgreSQL store must all be given the same --encryption-key-file."
			}
			return nil, fmt.Errorf("the encryption key %s (key ID %s) does not open this store's secrets: %w. "+
				"Start with the key they were written with (--encryption-key-file); to rotate, give the new key and the old one with --previous-encryption-key-file. Nothing was changed.%s",
				path, key.ID(), err, shared)
		}
		return nil, fmt.Errorf("check the store's encrypted records: %w", err)
	}
	if fresh != nil {
		if err := secretbox.WriteKeyFile(path, fresh); err != nil {
			return nil, err
		}
		logger.Info("created the key that encrypts secrets at rest: back it up, the secrets cannot be read without it", "file", path, "keyID", key.ID())
	}
	n, err := sealed.Reseal(ctx)
	if err != nil {
		return nil, fmt.Errorf("encrypt the store's secrets with key %s: %w", key.ID(), err)
	}
	if n > 0 {
		logger.Info("encrypted secrets at rest with the current key", "records", n, "keyID", key.ID())
	}
	logger.Info("secrets are encrypted at rest", "keyID", key.ID(), "keyFile", path)
	return sealed, nil
}
